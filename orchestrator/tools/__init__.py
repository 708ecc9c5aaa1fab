"""Agent tools. Each module holds tools of one kind; `registry.py` lists them, validates arguments and
runs them. A tool's expected failures come back as a `ToolResult` with `is_error`, never as an
exception, so the model sees them and the run goes on."""
