"""The one place errors become HTTP responses, always `{error: {code, message, details}}`.

Core errors map by class; transport errors (bad JSON, missing token, oversize body) are
`HttpError`s raised by the web layer itself. Anything unexpected is a logged 500 whose body says
nothing about internals.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from orchestrator.errors import (ConflictError, NotFoundError, OrchestratorError, PermissionDeniedError,
                                 ValidationError)

logger = logging.getLogger(__name__)

STATUS_FOR: list[tuple[type[OrchestratorError], int]] = [
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (ValidationError, 422),
    (ConflictError, 409),
]

HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "validation_failed", 429: "too_many_requests"}


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: Any = None) -> ResponseReturnValue:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="boocode"'
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HttpError)
    def handle_http_error(error: HttpError) -> ResponseReturnValue:
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(OrchestratorError)
    def handle_core_error(error: OrchestratorError) -> ResponseReturnValue:
        for error_class, status in STATUS_FOR:
            if isinstance(error, error_class):
                return error_response(status, error.code, error.message, error.details)
        logger.exception("unmapped core error")
        return error_response(500, "internal_error", "the server failed; the error is in its log")

    @app.errorhandler(HTTPException)
    def handle_werkzeug(error: HTTPException) -> ResponseReturnValue:
        status = error.code or 500
        message = {404: "no such route", 405: "method not allowed on this route",
                   413: "the request body is too large"}.get(status, error.description or error.name)
        return error_response(status, HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> ResponseReturnValue:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed; the error is in its log")
