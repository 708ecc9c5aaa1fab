"""Encrypting secrets at rest (per-project API keys) with Fernet from `cryptography`.

The key is `BOOCODE_SECRET_KEY` (a Fernet key: 32 random bytes, URL-safe base64); `boocode up`
creates one in the data directory on first start. Losing the key makes stored secrets unreadable,
so it belongs in the deployment's secret store and backups. Plain secrets are never logged, traced,
returned by the API or passed to tools.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from orchestrator.errors import ConfigurationError, ValidationError


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(key: str | None) -> Fernet:
    if not key:
        raise ValidationError("this server cannot store secrets: set BOOCODE_SECRET_KEY (a Fernet key, e.g. from "
                              "`python -c 'from cryptography.fernet import Fernet; "
                              "print(Fernet.generate_key().decode())'`)",
                              details={"field": "api_key", "setting": "BOOCODE_SECRET_KEY"})
    try:
        return Fernet(key.encode())
    except ValueError:
        raise ConfigurationError(["BOOCODE_SECRET_KEY is not a valid Fernet key (32 bytes, URL-safe base64)"]) from None


def encrypt(key: str | None, plain: str) -> str:
    return _fernet(key).encrypt(plain.encode()).decode()


def decrypt(key: str | None, token: str) -> str:
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ConfigurationError(["a stored secret cannot be decrypted with BOOCODE_SECRET_KEY: the key changed "
                                  "since it was stored; set the provider's API key again"]) from None
