"""Per-project approval policy for tool calls.

    {"rules": [{"tool": "run_command", "match": "pytest*", "decision": "allow"},
               {"tool": "edit_file", "match": "secrets/*", "decision": "deny"},
               {"tool": "*", "decision": "allow"}]}

The first rule whose `tool` (a name or "*") and `match` (a glob over the call's subject: the command
line of run_command, the path of file tools; omitted = anything) fit decides: `allow`, `ask` (the run
waits for a person to approve or deny) or `deny`. After the project's rules come the defaults:
run_command and delete_file ask; everything else is allowed.
"""

from __future__ import annotations

import fnmatch
import shlex
from typing import Any

from orchestrator.errors import ValidationError

DECISIONS = ("allow", "ask", "deny")
DEFAULT_RULES: list[dict[str, Any]] = [
    {"tool": "run_command", "decision": "ask", "default": True},
    {"tool": "delete_file", "decision": "ask", "default": True},
]


def validate_policy(policy: Any, tool_names: list[str]) -> dict[str, Any]:
    if not isinstance(policy, dict) or set(policy) - {"rules"} or not isinstance(policy.get("rules", []), list):
        raise ValidationError('a policy is {"rules": [...]}')
    problems = []
    rules = []
    for index, rule in enumerate(policy.get("rules", [])):
        if not isinstance(rule, dict) or set(rule) - {"tool", "match", "decision"}:
            problems.append({"path": f"rules/{index}", "message": "a rule has tool, decision and optionally match"})
            continue
        if rule.get("tool") != "*" and rule.get("tool") not in tool_names:
            problems.append({"path": f"rules/{index}/tool", "message": f"tool must be '*' or one of {', '.join(tool_names)}"})
        if rule.get("decision") not in DECISIONS:
            problems.append({"path": f"rules/{index}/decision", "message": f"decision must be one of {', '.join(DECISIONS)}"})
        if "match" in rule and (not isinstance(rule["match"], str) or not rule["match"]):
            problems.append({"path": f"rules/{index}/match", "message": "match must be a non-empty glob"})
        rules.append({key: rule[key] for key in ("tool", "match", "decision") if key in rule})
    if problems:
        raise ValidationError("the policy has invalid rules", details=problems)
    return {"rules": rules}


def subject_of(tool_name: str, arguments: dict[str, Any]) -> str:
    if tool_name == "run_command":
        return shlex.join(arguments.get("argv", []))
    return str(arguments.get("path", ""))


def decide(policy: dict[str, Any] | None, tool_name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    subject = subject_of(tool_name, arguments)
    for rule in [*(policy or {}).get("rules", []), *DEFAULT_RULES]:
        if rule["tool"] not in ("*", tool_name):
            continue
        if "match" in rule and not fnmatch.fnmatchcase(subject, rule["match"]):
            continue
        return rule["decision"], rule
    return "allow", None
