"""Message parts: the typed pieces a message is made of.

User messages may carry `text` and `image` parts; `tool_call`, `tool_result` and `diff` parts are
written by the agent runtime. Validation here is pure; the store checks that referenced blobs exist.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.domain.enums import PartType
from orchestrator.errors import ValidationError

MAX_TEXT_CHARACTERS = 200_000
MAX_PARTS = 32
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def validate_user_parts(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return normalised parts or raise `ValidationError` naming every bad part."""
    problems: list[dict[str, Any]] = []
    if not parts:
        raise ValidationError("a message needs at least one part", details=[{"path": "parts", "message": "empty"}])
    if len(parts) > MAX_PARTS:
        raise ValidationError(f"a message has at most {MAX_PARTS} parts")
    normalised: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        kind = part.get("type")
        if kind == PartType.TEXT:
            text = part.get("text")
            if not isinstance(text, str) or not text.strip():
                problems.append({"path": f"parts/{index}/text", "message": "text must be a non-empty string"})
            elif len(text) > MAX_TEXT_CHARACTERS:
                problems.append({"path": f"parts/{index}/text",
                                 "message": f"text is longer than {MAX_TEXT_CHARACTERS} characters"})
            else:
                normalised.append({"type": "text", "text": text})
        elif kind == PartType.IMAGE:
            blob = part.get("blob")
            media_type = part.get("media_type")
            if not isinstance(blob, str) or not SHA256_PATTERN.match(blob):
                problems.append({"path": f"parts/{index}/blob", "message": "blob must be a sha256 hex digest"})
            elif media_type not in IMAGE_MEDIA_TYPES:
                problems.append({"path": f"parts/{index}/media_type",
                                 "message": f"media_type must be one of {', '.join(sorted(IMAGE_MEDIA_TYPES))}"})
            else:
                normalised.append({"type": "image", "blob": blob, "media_type": media_type})
        else:
            problems.append({"path": f"parts/{index}/type", "message": "a user message part is 'text' or 'image'"})
    if problems:
        raise ValidationError("the message has invalid parts", details=problems)
    return normalised
