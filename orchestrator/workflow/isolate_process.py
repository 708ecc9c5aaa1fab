"""The sandbox process: `python -I -m orchestrator.workflow.isolate_process --data-bytes N`.

    limit the process (RLIMIT_DATA, no core dumps), move stdout aside, warm V8 up, say "ready"
    loop: read a request frame -> run it on the current ScriptSession (a workflow script) or
          Evaluator (a flow tick's short scripts) -> write the answer frame
    EOF on stdin (the parent is gone) -> exit

Started by `sandbox_pool` with a clean environment (PATH and LANG only), in a session of its own,
and reused for many scripts, one at a time. What a script can do to it — a V8 fatal error
("Fatal JavaScript out of memory", SIGTRAP), a segfault, an allocation past RLIMIT_DATA — ends this
process only; the parent sees EOF, reports `script_crashed` and starts another. Nothing here
imports the settings, the database or anything that holds a secret.

RLIMIT_DATA rather than RLIMIT_AS: V8 reserves a large virtual address range at start (its pointer
cage), so any RLIMIT_AS small enough to matter stops V8 from starting; RLIMIT_DATA counts memory
actually made writable (heap pages, ArrayBuffer backing stores), and V8 starts under ~600 MiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from typing import Any

from orchestrator.workflow.framing import FrameError, read_frame, write_frame


def limit_process(data_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


EVALUATOR_OPS = frozenset({"evaluate", "evaluate_each", "parse_each"})  # the rest are a ScriptSession's


class Server:
    """Requests in, answers out; one ScriptSession at a time."""

    def __init__(self) -> None:
        from orchestrator.workflow.isolate import Evaluator, IsolateError, ScriptSession

        self.session_type, self.error_type, self.evaluator_type = ScriptSession, IsolateError, Evaluator
        self.session: Any = None

    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "open":
            self._drop()
            self.session = self.session_type(request["body"], request.get("args_text"), float(request["timeout"]),
                                             int(request["memory"]))
            return None
        if op == "evaluator":
            self._drop()
            self.session = self.evaluator_type(float(request["timeout"]), int(request["memory"]))
            return None
        if op == "close":
            self._drop()
            return None
        if self.session is None:
            raise self.error_type("sandbox_closed", "the sandbox was closed after an earlier error")
        session = self.session
        if (op in EVALUATOR_OPS) != isinstance(session, self.evaluator_type):
            raise self.error_type("sandbox_protocol", f"{op!r} is not a request for what this sandbox holds")
        if op == "evaluate":
            return session.evaluate(request["body"], request.get("args_text"))
        if op == "evaluate_each":
            return session.evaluate_each(list(request["bodies"]), request.get("args_text"))
        if op == "parse_each":
            return session.parse_each(list(request["bodies"]))
        if op == "start":
            return session.start()
        if op == "take_calls":
            return session.take_calls()
        if op == "step":
            return session.step(request["spent"], request["key"], bool(request["ok"]), request["payload"])
        if op == "steps":
            return session.steps([tuple(result) for result in request["results"]])
        if op == "start_nested":
            return session.start_nested(request["key"], request["body"], request["name"], request.get("args"),
                                        bool(request.get("has_args")))
        if op == "set_budget":
            return session.set_budget(request["total"], request["spent"])
        if op == "state":
            return session.state()
        raise self.error_type("sandbox_protocol", f"unknown request {op!r}")

    def _drop(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"ok": self.handle(request)}
        except self.error_type as error:
            self._drop()
            return {"error": {"code": error.code, "message": error.message, "line": error.line}}
        except Exception as error:  # a bug or an unexpected V8 report: the parent fails the run, this process goes on
            self._drop()
            return {"error": {"code": "sandbox_error", "message": f"{type(error).__name__}: {error}"[:2000],
                              "line": None}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isolate_process")
    parser.add_argument("--data-bytes", type=int, required=True)
    options = parser.parse_args(argv)
    channel_in, channel_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # prints (and anything V8 writes to stdout) go to stderr, never into the frame stream
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    limit_process(options.data_bytes)
    server = Server()
    warm = server.session_type("return 0;", None, 5.0, 16 * 1024 * 1024)  # V8's platform starts once, here
    warm.close()
    write_frame(channel_out, {"ready": os.getpid()})
    while True:
        try:
            request = read_frame(channel_in)
        except FrameError:
            return 0  # the parent is gone (or talks nonsense): nothing left to do
        try:
            write_frame(channel_out, server.answer(request))
        except FrameError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
