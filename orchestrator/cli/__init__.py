"""The `boocode` command: a thin client over the REST/WebSocket API plus a few local admin commands.

Modules (one per command group, all in one style):
    main.py       the root group (`--url`, `--token`, `--version`) and `main`, which turns errors into exit codes
    context.py    `Context` (settings loaded on first use, `api()`), `pass_context`, `json_option`
    client.py     `ApiClient` (HTTP + the event WebSocket), `CliError`, the credentials `boocode up` saves
    output.py     `emit(value, as_json, printer)`, tables, records, messages and events for people
    processes.py  `up`, `web`, `worker`; up.py is the supervisor behind `up`
    db.py         `db upgrade|downgrade|current`, and `local_database` for the local commands
    admin.py      `admin create-user` (the database directly, before any token exists)
    users.py      `user list|create|password`          tokens.py     `token create|list|revoke`
    projects.py   `project add|list|show|members|set-role|provider|policy`
    sessions.py   `session list|create|show|send|watch` runs.py       `run list|show|cancel|probe`
    approvals.py  `approval list|approve|deny`          trace.py      `trace RUN|SESSION`
    workflows.py  `workflow list|run|status|result|cancel|resume`
    subagents.py  `subagent list|show|result|cancel|retry`
    flows.py      `flow list|validate|run|status|result|cancel|rerun`
    model.py      `model list|fetch|serve` (the embedded local model)

The style every command follows:
    - the server only through `context.api()` (from `@pass_context`), never a client of its own;
    - with `--json` (`json_option`), end in `output.emit(value, as_json, printer)`: the JSON is the value;
    - a failure raises `CliError(message, EXIT_…)` (or `click.UsageError` for bad flags); `main` prints
      `error: <message>` on stderr and exits with the code;
    - a command that reports an outcome (`run probe --wait`, `workflow result`, `subagent result`)
      prints the report, then exits with `sys.exit(EXIT_…)`: named codes only, never a bare number.

Exit codes (scripts may rely on them):
    0    success
    1    the server failed (5xx), an unexpected error, or the run waited for did not complete
    2    usage error (bad flags or arguments)
    3    not authenticated or not allowed (401/403)
    4    not found (404)
    5    rejected input or conflicting state (400/409/413/415/422)
    6    cannot reach the server or a service
    75   not finished yet, try again later (`subagent result`; sysexits' EX_TEMPFAIL)
    130  interrupted (Ctrl-C)
"""

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_REJECTED = 5
EXIT_UNREACHABLE = 6
EXIT_NOT_FINISHED = 75
EXIT_INTERRUPTED = 130
