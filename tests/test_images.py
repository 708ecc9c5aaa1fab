"""Images in: uploaded as blobs (type read from the bytes), sent to vision models, refused for text-only ones."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from tests.conftest import new_session
from tests.fakes.model_server import FakeModelServer, Reply, openai_usage
from tests.support import TINY_GIF, Api, WorkerProcess


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def upload(api: Api, session_id: str, data: bytes, content_type: str = "image/png"):  # type: ignore[no-untyped-def]
    return api.request("POST", f"/api/sessions/{session_id}/attachments", content=data,
                       headers={"Content-Type": content_type})


def test_an_image_reaches_a_vision_model(make_stack, fake: FakeModelServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o", model_vision=True)
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    image = png()
    uploaded = upload(api, chat["id"], image, "application/octet-stream")  # the declared type does not matter
    assert uploaded.status_code == 201 and uploaded.json()["media_type"] == "image/png"
    digest = uploaded.json()["blob"]
    fake.script(Reply(text="A red square.", usage=openai_usage(900, 4)))
    worker = WorkerProcess(stack.settings, tmp_path, name="vision@localhost").start()
    try:
        run = api.ok("POST", f"/api/sessions/{chat['id']}/messages",
                     {"parts": [{"type": "text", "text": "what is this?"},
                                {"type": "image", "blob": digest, "media_type": "image/png"}]})["run"]
        final = api.wait_for_run(run["id"], timeout=60)
    finally:
        worker.stop()
    assert final["result"]["text"] == "A red square."
    content = fake.requests[0]["body"]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(image).decode()
    downloaded = api.get(f"/api/sessions/{chat['id']}/attachments/{digest}")
    assert downloaded.content == image and downloaded.headers["Content-Type"] == "image/png"
    other = new_session(api, tmp_path / "other")
    assert api.get(f"/api/sessions/{other['id']}/attachments/{digest}").status_code == 404


def test_a_text_only_model_gets_a_clear_error_before_any_call(make_stack, fake: FakeModelServer,  # noqa: F811
                                                              tmp_path: Path) -> None:
    stack = make_stack(model_base_url=fake.base_url, model_name="gpt-4o", model_vision=False)
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    digest = upload(api, chat["id"], png()).json()["blob"]
    worker = WorkerProcess(stack.settings, tmp_path, name="text-only@localhost").start()
    try:
        run = api.ok("POST", f"/api/sessions/{chat['id']}/messages",
                     {"parts": [{"type": "text", "text": "look"}, {"type": "image", "blob": digest,
                                                                  "media_type": "image/png"}]})["run"]
        final = api.wait_for_run(run["id"], ("failed",), timeout=60)
    finally:
        worker.stop()
    assert final["error"]["code"] == "model_cannot_see_images" and "BOOCODE_MODEL_VISION" in final["error"]["message"]
    assert fake.requests == []


def test_uploads_are_checked_by_their_bytes_and_size(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(max_image_bytes=4096)
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    fake_png = upload(api, chat["id"], b"this is text pretending to be an image", "image/png")
    assert fake_png.status_code == 415 and "read from its bytes" in fake_png.json()["error"]["message"]
    too_big = upload(api, chat["id"], png(64, 64) + b"\x00" * 8192)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    gif = upload(api, chat["id"], TINY_GIF, "image/gif")
    assert gif.status_code == 201 and gif.json()["media_type"] == "image/gif"


def test_cli_sends_images(make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack()
    api, chat = stack.api, new_session(stack.api, tmp_path / "root")
    picture = tmp_path / "screenshot.png"
    picture.write_bytes(png())
    result = subprocess.run([str(Path(sys.executable).parent / "boocode"), "session", "send", chat["id"], "see this",
                             "--image", str(picture), "--json"], capture_output=True, text=True, timeout=60,
                            env={"BOOCODE_URL": api.url, "BOOCODE_TOKEN": api.token, "PATH": "/usr/bin",
                                 "BOOCODE_DATA_DIR": str(tmp_path / "cli")})
    assert result.returncode == 0, result.stderr
    parts = json.loads(result.stdout)["message"]["parts"]
    assert parts[0] == {"type": "text", "text": "see this"} and parts[1]["type"] == "image"
