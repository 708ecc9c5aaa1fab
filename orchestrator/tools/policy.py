"""Per-project approval policy for tool calls.

    {"rules": [{"tool": "run_command", "match": "pytest*", "decision": "allow"},
               {"tool": "edit_file", "match": "secrets/*", "decision": "deny"},
               {"tool": "*", "decision": "allow"}]}

The first rule whose `tool` (a name or "*") and `match` (a glob over the call's subject: the command
line of run_command, the path of file tools; omitted = anything) fit decides: `allow`, `ask` (the run
waits for a person to approve or deny) or `deny`. After the project's rules come the defaults:
run_command and delete_file ask; everything else is allowed.

A path is matched the way the tool will use it, not as the model spelled it: relative to the root,
normalised (`./secrets/x`, `sub/../secrets/x` and `/abs/root/secrets/x` are all `secrets/x`), and
also as the file it resolves to through symlinks. When the spellings decide differently, the
strictest decision wins (deny over ask over allow).

`"path": [".venv/bin", "node_modules/.bin"]` puts directories of the project first on the PATH of its
commands (tools/environments.py; `.venv/bin` and `venv/bin` are found without it).

`"network": true` asks for the network in the project's commands; it takes effect only where the
server allows it (BOOCODE_SANDBOX_ALLOW_NETWORK), since a shared network reaches the server's own
loopback services.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from pathlib import Path
from typing import Any

from orchestrator.errors import ValidationError
from orchestrator.tools.environments import validate_path_entries

DECISIONS = ("allow", "ask", "deny")
STRICTNESS = {"allow": 0, "ask": 1, "deny": 2}
DEFAULT_RULES: list[dict[str, Any]] = [
    {"tool": "run_command", "decision": "ask", "default": True},
    {"tool": "delete_file", "decision": "ask", "default": True},
]


def validate_policy(policy: Any, tool_names: list[str]) -> dict[str, Any]:
    if not isinstance(policy, dict) or set(policy) - {"rules", "network", "path"} or \
            not isinstance(policy.get("rules", []), list):
        raise ValidationError('a policy is {"rules": [...]} with optional "network": true and "path": [...]')
    if "path" in policy:
        try:
            validate_path_entries(policy["path"])
        except ValueError as error:
            raise ValidationError(str(error), details=[{"path": "path", "message": str(error)}]) from None
    if not isinstance(policy.get("network", False), bool):
        raise ValidationError("the policy's network must be true or false",
                              details=[{"path": "network", "message": "not a boolean"}])
    problems = []
    rules = []
    for index, rule in enumerate(policy.get("rules", [])):
        if not isinstance(rule, dict) or set(rule) - {"tool", "match", "decision"}:
            problems.append({"path": f"rules/{index}", "message": "a rule has tool, decision and optionally match"})
            continue
        if rule.get("tool") != "*" and rule.get("tool") not in tool_names:
            problems.append({"path": f"rules/{index}/tool",
                             "message": f"tool must be '*' or one of {', '.join(tool_names)}"})
        if rule.get("decision") not in DECISIONS:
            problems.append({"path": f"rules/{index}/decision",
                             "message": f"decision must be one of {', '.join(DECISIONS)}"})
        if "match" in rule and (not isinstance(rule["match"], str) or not rule["match"]):
            problems.append({"path": f"rules/{index}/match", "message": "match must be a non-empty glob"})
        rules.append({key: rule[key] for key in ("tool", "match", "decision") if key in rule})
    if problems:
        raise ValidationError("the policy has invalid rules", details=problems)
    return {"rules": rules, **({"network": True} if policy.get("network") else {}),
            **({"path": policy["path"]} if policy.get("path") else {})}


def subjects_of(tool_name: str, arguments: dict[str, Any], root: Path | None) -> list[str]:
    """Every spelling of what the call acts on that a rule must see (see the module docstring)."""
    if tool_name == "run_command":
        return [shlex.join(arguments.get("argv", []))]
    raw = str(arguments.get("path", ""))
    if root is None or "\x00" in raw:  # a NUL: the tool itself refuses the path
        return [raw]
    root = Path(os.path.realpath(root))
    joined = Path(raw) if raw.startswith("/") else root / raw
    found = []
    for candidate in (Path(os.path.normpath(joined)), Path(os.path.realpath(joined))):
        if candidate == root or root in candidate.parents:
            found.append("." if candidate == root else str(candidate.relative_to(root)))
    return found or [raw]


def _decide_one(rules: list[dict[str, Any]], tool_name: str, subject: str) -> tuple[str, dict[str, Any] | None]:
    for rule in rules:
        if rule["tool"] not in ("*", tool_name):
            continue
        if "match" in rule and not fnmatch.fnmatchcase(subject, rule["match"]):
            continue
        return rule["decision"], rule
    return "allow", None


def decide(policy: dict[str, Any] | None, tool_name: str, arguments: dict[str, Any],
           root: Path | None = None) -> tuple[str, dict[str, Any] | None]:
    rules = [*(policy or {}).get("rules", []), *DEFAULT_RULES]
    decisions = [_decide_one(rules, tool_name, subject) for subject in subjects_of(tool_name, arguments, root)]
    return max(decisions, key=lambda pair: STRICTNESS[pair[0]])


def wants_network(policy: dict[str, Any] | None) -> bool:
    return bool((policy or {}).get("network"))
