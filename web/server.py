"""gunicorn's side of the web front end: its own refusals answered in our error shape.

gunicorn parses the request line and headers before Flask sees a request, and refuses some itself:
a request line over `limit_request_line` (414), too many or too large header fields (431), a
malformed request line or header (400). It answers those with an HTML page. This worker is
gunicorn's threaded worker with one change: those refusals get `{error: {code, message, details}}`
as JSON, like every other error of the API. Anything else goes to gunicorn's own handling.

It also hands the GIL over sooner (SWITCH_INTERVAL_SECONDS instead of Python's 5 ms): the thread
that sends live events to every socket (web/livehub.py) does a short burst of work between sends,
and behind a CPU-bound thread (a request rendering JSON, the access re-check of 500 sockets) each
of its sends would otherwise wait up to 5 ms for the GIL; measured, the p99 delivery at 500 sockets
on 50 sessions went from about 40 ms to 2 ms with the access re-check running (bench/ws_fanout.py).

    gunicorn --worker-class web.server.ThreadWorker web.wsgi:app
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

WORKER_CLASS = "web.server.ThreadWorker"
SWITCH_INTERVAL_SECONDS = 0.0005

# (exception classes, status, reason phrase, code, message); the first match wins.
REFUSALS: list[tuple[tuple[type[Exception], ...], int, str, str, str]] = [
    ((errors.LimitRequestLine,), 414, "URI Too Long", "uri_too_long",
     "the request line (method and URL) is too long; send long input in a request body"),
    ((errors.LimitRequestHeaders,), 431, "Request Header Fields Too Large", "headers_too_large",
     "the request has too many or too large header fields; send fewer or shorter headers"),
    ((errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion, errors.InvalidHeader,
      errors.InvalidHeaderName, errors.ObsoleteFolding, errors.InvalidChunkSize, errors.ChunkMissingTerminator,
      errors.InvalidChunkExtension), 400, "Bad Request", "bad_request",
     "the request is not well-formed HTTP/1.1"),
]


def refusal_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()


class ThreadWorker(GunicornThreadWorker):
    def init_process(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # in the worker, before it loads the app
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        # responses the application produced badly are its own fault: leave them to gunicorn (500)
        own_fault = isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName))
        refusal = next((entry for entry in REFUSALS if isinstance(exc, entry[0]) and not own_fault), None)
        if refusal is None:
            super().handle_error(req, client, addr, exc)
            return
        _, status, reason, code, message = refusal
        self.log.warning("refused a request from %s with %s: %s", (addr or ("",))[0], status, exc)
        body = refusal_body(code, message)
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:  # the client may already be gone; nothing to tell it then
            self.log.debug("could not send the refusal")
