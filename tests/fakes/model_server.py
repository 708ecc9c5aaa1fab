"""A fake OpenAI-compatible chat-completions server: real HTTP on 127.0.0.1, scripted per call.

    server = FakeModelServer().start()
    server.script(Reply(text="hello", usage=openai_usage(100, 5, cached=64)))
    server.script(Reply(tool_calls=[("read_file", {"path": "a.txt"})]))
    ... point a provider's base URL at server.base_url ...
    server.requests[0]["body"]["messages"]          # what the client sent

Each POST to /v1/chat/completions takes the next scripted `Reply`; with nothing scripted, the
`responder` (a function of the request body) answers if set, which suits calls that arrive in any
order (a workflow's parallel agents); otherwise the call gets a 500 that says so, so a test fails
loudly. Replies stream as SSE when the request asks for `stream`,
with the usage chunk last when `stream_options.include_usage` is set, or come back whole. A reply can
be an error status (429/500 with `retry-after`), slow (`chunk_delay`), or hold mid-stream until the
test releases it (`hold`), which crash tests use to kill a worker during a model stream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def deepseek_usage(prompt: int, completion: int, hit: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_cache_hit_tokens": hit, "prompt_cache_miss_tokens": prompt - hit}


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments dict or raw string)
    usage: dict[str, Any] | None = None
    status: int = 200
    error_message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 8
    chunk_delay: float = 0.0
    hold: threading.Event | None = None  # stream `hold_after` chunks, then wait for this before the rest
    hold_after: int = 1
    finish_reason: str | None = None


class FakeModelServer:
    def __init__(self) -> None:
        self._replies: list[Reply] = []
        self.responder: Callable[[dict[str, Any]], Reply] | None = None  # answers when nothing is scripted
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.holding = threading.Event()  # set while a `hold` reply is waiting
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # a client gone between calls (a killed worker)
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    server.requests.append({"path": self.path, "headers": headers, "body": body})
                    reply = server._replies.pop(0) if server._replies else None
                if reply is None and server.responder is not None:
                    try:
                        reply = server.responder(body)
                    except Exception as error:  # a broken responder must fail the call loudly, not hang it
                        reply = Reply(status=500, error_message=f"fake model server responder failed: {error!r}")
                if not self.path.endswith("/chat/completions"):
                    return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                if reply is None:
                    return self._send_json(500, {"error": {"message": "fake model server: no scripted reply left"}})
                if reply.status != 200:
                    return self._send_json(reply.status, {"error": {"message": reply.error_message,
                                                                    "type": "scripted"}}, reply.headers)
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    return self._stream(reply, body.get("model", "fake"), include_usage)
                return self._send_json(200, server.whole_response(reply, body.get("model", "fake")))

            def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply, model: str, include_usage: bool) -> None:
                # chunked, on a connection that stays open for the next call, as real providers answer
                # (closing it after each stream made every call pay a new connection and server thread)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for index, chunk in enumerate(server.stream_chunks(reply, model, include_usage)):
                        self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                        if index == reply.hold_after - 1 and reply.hold is not None:
                            server.holding.set()
                            reply.hold.wait(60)
                        if reply.chunk_delay:
                            time.sleep(reply.chunk_delay)
                    self._chunk(b"data: [DONE]\n\n")
                    self._chunk(b"")  # the last chunk: the response ends, the connection stays
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeModelServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()
        self.holding.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._replies)

    @staticmethod
    def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
        calls = []
        for index, (name, arguments) in enumerate(reply.tool_calls):
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            calls.append({"index": index, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                          "function": {"name": name, "arguments": raw}})
        return calls

    def whole_response(self, reply: Reply, model: str) -> dict[str, Any]:
        calls = self._tool_calls(reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = [{key: value for key, value in call.items() if key != "index"} for call in calls]
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:10]}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": message, "finish_reason":
                                             reply.finish_reason or ("tool_calls" if calls else "stop")}],
                "usage": reply.usage}

    def stream_chunks(self, reply: Reply, model: str, include_usage: bool) -> list[dict[str, Any]]:
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:10]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        chunks = [chunk({"role": "assistant", "content": ""})]
        text = reply.text
        for start in range(0, len(text), reply.chunk_size):
            chunks.append(chunk({"content": text[start:start + reply.chunk_size]}))
        calls = self._tool_calls(reply)
        for call in calls:
            arguments = call["function"]["arguments"]
            chunks.append(chunk({"tool_calls": [{"index": call["index"], "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            for start in range(0, len(arguments), reply.chunk_size):
                chunks.append(chunk({"tool_calls": [{"index": call["index"], "function": {
                    "arguments": arguments[start:start + reply.chunk_size]}}]}))
        chunks.append(chunk({}, reply.finish_reason or ("tool_calls" if calls else "stop")))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": reply.usage})
        return chunks
