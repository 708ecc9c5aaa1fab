"""The one place errors become HTTP responses, always `{error: {code, message, details}}`.

Core errors map by class; transport errors (bad JSON, missing token, oversize body) are
`HttpError`s raised by the web layer itself. Anything unexpected is a logged 500 whose body says
nothing about internals. Database and Redis errors never show their text (it can hold SQL and
values): a value Postgres refused is a generic 422, an unreachable service a 503, anything else the
generic 500; the details go to the log only.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DataError, InterfaceError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from orchestrator.errors import ConflictError, NotFoundError, OrchestratorError, PermissionDeniedError, ValidationError

logger = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "2"  # a dropped database connection is usually back by then

STATUS_FOR: list[tuple[type[OrchestratorError], int]] = [
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (ValidationError, 422),
    (ConflictError, 409),
]

HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 414: "uri_too_long",
              415: "unsupported_media_type", 422: "validation_failed", 429: "too_many_requests",
              431: "headers_too_large", 503: "service_unavailable"}


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: Any = None, *,
                   headers: dict[str, str] | None = None) -> ResponseReturnValue:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    response.headers.update(headers or {})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="boocode"'
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HttpError)
    def handle_http_error(error: HttpError) -> ResponseReturnValue:
        return error_response(error.status, error.code, error.message, error.details, headers=error.headers)

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

    @app.errorhandler(SQLAlchemyError)
    def handle_database_error(error: SQLAlchemyError) -> ResponseReturnValue:
        if isinstance(error, DataError):
            logger.warning("the database refused a value", exc_info=True)
            return error_response(422, "validation_failed", "a value in the request cannot be stored; "
                                  "check it for control characters and out-of-range numbers")
        if isinstance(error, (OperationalError, InterfaceError)):
            logger.warning("the database is unavailable", exc_info=True)
            return error_response(503, "service_unavailable", "the database is unavailable; try again shortly",
                                  headers={"Retry-After": RETRY_AFTER_SECONDS})
        logger.exception("database error")
        return error_response(500, "internal_error", "the server failed; the error is in its log")

    @app.errorhandler(redis.RedisError)
    def handle_redis_error(error: redis.RedisError) -> ResponseReturnValue:
        logger.warning("Redis error", exc_info=True)
        return error_response(503, "service_unavailable", "Redis is unavailable; try again shortly",
                              headers={"Retry-After": RETRY_AFTER_SECONDS})

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> ResponseReturnValue:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed; the error is in its log")
