"""Which model a run uses: the project's own provider when it has one, else the server's.

A project provider is stored on the project as
    {"name", "base_url", "model", "context_window", "vision", "cache_lifetime_seconds",
     "prices": {model: {input, output, cache_read?, cache_write?}}, "api_key_encrypted"?}
The API key is accepted once, encrypted with BOOCODE_SECRET_KEY, and never shown again.
"""

from __future__ import annotations

from typing import Any

from orchestrator.llm.prices import Price
from orchestrator.llm.provider import Provider
from orchestrator.secrets import decrypt, encrypt
from orchestrator.settings import Settings

PRICE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "input": {"type": "number", "minimum": 0}, "output": {"type": "number", "minimum": 0},
    "cache_read": {"type": "number", "minimum": 0}, "cache_write": {"type": "number", "minimum": 0}},
    "required": ["input", "output"], "additionalProperties": False}

PROVIDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "base_url": {"type": "string", "pattern": "^https?://", "maxLength": 2000},
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "api_key": {"type": "string", "minLength": 1, "maxLength": 4000, "writeOnly": True},
        "context_window": {"type": "integer", "minimum": 1024},
        "vision": {"type": "boolean"},
        "cache_lifetime_seconds": {"type": "number", "exclusiveMinimum": 0},
        "prices": {"type": "object", "additionalProperties": PRICE_SCHEMA, "maxProperties": 50},
    },
    "required": ["base_url", "model"],
    "additionalProperties": False,
}


def server_provider(settings: Settings) -> Provider | None:
    """The server's default provider, from BOOCODE_MODEL_* settings."""
    if not (settings.model_base_url and settings.model_name):
        return None
    return Provider(name="server", base_url=settings.model_base_url, model=settings.model_name,
                    api_key=settings.model_api_key or "", context_window=settings.model_context_window,
                    vision=settings.model_vision, cache_lifetime_seconds=settings.model_cache_lifetime_seconds,
                    tool_mode=settings.model_tool_mode, require_tool_first=settings.model_require_tool_first,
                    temperature=settings.model_temperature, retry_on_timeout=settings.model_retry_on_timeout)


def store_config(body: dict[str, Any], secret_key: str | None, previous: dict[str, Any] | None) -> dict[str, Any]:
    """What goes into the database: the body without the plain key; the key encrypted (or kept from before)."""
    config = {key: value for key, value in body.items() if key != "api_key"}
    config["base_url"] = config["base_url"].rstrip("/")
    if "api_key" in body:
        config["api_key_encrypted"] = encrypt(secret_key, body["api_key"])
    elif previous and previous.get("api_key_encrypted") and previous.get("base_url") == config["base_url"]:
        config["api_key_encrypted"] = previous["api_key_encrypted"]  # same endpoint: keep the key
    return config


def public_view(config: dict[str, Any] | None, server_default: Provider | None) -> dict[str, Any]:
    if config:
        shown = {key: value for key, value in config.items() if key != "api_key_encrypted"}
        return {"source": "project", "provider": {**shown, "api_key_set": "api_key_encrypted" in config}}
    if server_default is not None:
        return {"source": "server", "provider": {"name": server_default.name, "base_url": server_default.base_url,
                                                 "model": server_default.model, "vision": server_default.vision,
                                                 "context_window": server_default.context_window,
                                                 "api_key_set": bool(server_default.api_key)}}
    return {"source": "none", "provider": None}


def resolve_provider(config: dict[str, Any] | None, server_default: Provider | None,
                     secret_key: str | None) -> Provider | None:
    if not config:
        return server_default
    api_key = decrypt(secret_key, config["api_key_encrypted"]) if config.get("api_key_encrypted") else ""
    prices = {model: Price.from_dict(price) for model, price in (config.get("prices") or {}).items()}
    return Provider(name=config.get("name", "project"), base_url=config["base_url"], model=config["model"],
                    api_key=api_key, context_window=config.get("context_window", 128_000),
                    vision=config.get("vision", False), prices=prices or None,
                    cache_lifetime_seconds=config.get("cache_lifetime_seconds", 300.0))
