"""The sandbox process's wire format: one JSON document per frame, a 4-byte big-endian length first.

    parent -> child   {"op": "open" | "start" | "take_calls" | "step" | "steps" | "start_nested" | "set_budget"
                              | "state" | "close", ...arguments}
    child -> parent   {"ok": value} | {"error": {"code", "message", "line"}}      (one answer per request)
    child -> parent   {"ready": pid}                                              (once, at start)

Frames go over the child's stdin and stdout (the child moves its own stdout aside first, so a stray
print cannot corrupt the stream). A frame larger than MAX_FRAME_BYTES is refused on both sides.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

MAX_FRAME_BYTES = 256 * 1024 * 1024
HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The other side went away (EOF), sent garbage, or did not answer before the deadline."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "eof" | "deadline" | "garbage"


def write_frame(fd: int, value: Any) -> None:
    data = json.dumps(value, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError("garbage", f"a frame of {len(data)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        try:
            written = os.write(fd, view)
        except (BrokenPipeError, OSError) as error:
            raise FrameError("eof", f"the other side closed the pipe ({error})") from None
        view = view[written:]


def _read_exactly(fd: int, count: int, deadline: float | None) -> bytes:
    chunks, remaining = [], count
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FrameError("deadline", "no answer before the deadline")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise FrameError("eof", "the other side closed the pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """The next frame's value; `deadline` is a time.monotonic() instant (None: wait as long as it takes)."""
    (length,) = HEADER.unpack(_read_exactly(fd, HEADER.size, deadline))
    if length > MAX_FRAME_BYTES:
        raise FrameError("garbage", f"a frame of {length} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    try:
        return json.loads(_read_exactly(fd, length, deadline))
    except ValueError as error:
        raise FrameError("garbage", f"a frame that is not JSON ({error})") from None
