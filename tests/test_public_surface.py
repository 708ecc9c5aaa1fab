"""Pin the CLI's public surface: scripts depend on these commands (the REST surface is pinned by
the OpenAPI test). Changing this list is an API change; say so in the commit."""

from orchestrator.cli.main import cli

SURFACE = {
    "up": [], "web": [], "worker": [],
    "db": ["current", "downgrade", "upgrade"],
    "admin": ["create-user"],
    "user": ["create", "list", "password"],
    "token": ["create", "list", "revoke"],
    "project": ["add", "list", "members", "policy", "provider", "set-role", "show"],
    "approval": ["approve", "deny", "list"],
    "session": ["create", "list", "send", "show", "watch"],
    "run": ["cancel", "list", "probe", "show"],
    "trace": [],
    "workflow": ["cancel", "list", "result", "resume", "run", "status"],
    "subagent": ["cancel", "list", "result", "retry", "show"],
    "flow": ["cancel", "list", "rerun", "result", "run", "schedule", "status", "trigger", "validate"],
    "model": ["fetch", "list", "serve"],
}


def test_cli_commands_are_pinned() -> None:
    actual = {name: sorted(getattr(command, "commands", {})) for name, command in cli.commands.items()}
    assert actual == SURFACE


def test_every_listing_offers_json() -> None:
    for group in ("user", "token", "project", "session", "run", "approval", "workflow", "subagent", "flow"):
        listing = cli.commands[group].commands["list"]
        assert "as_json" in {parameter.name for parameter in listing.params}, group
