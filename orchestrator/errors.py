"""The core's exception tree, in one place.

    OrchestratorError                  base of everything the core raises on purpose
    ├── ConfigurationError             settings are missing or wrong (lists every problem)
    ├── NotFoundError                  an id that does not exist or is not visible to the caller
    ├── PermissionDeniedError          visible, but the caller's role does not allow the action
    ├── ValidationError                input is malformed; nothing was changed
    ├── ConflictError                  the action does not fit the current state (e.g. cancel a finished run)
    ├── LeaseError                     the run lifecycle's fence
    │   ├── StaleLeaseError            the writer's epoch is no longer the run's epoch; write refused
    │   └── RunCancelledError          the run was cancelled while the lease holder worked
    └── ServiceError                   a service (Postgres, Redis, a child process) could not be started

The web front end maps these to HTTP statuses in exactly one place (`web/errors.py`).
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base class; `code` is the stable machine-readable name used in the error shape."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigurationError(OrchestratorError):
    code = "configuration_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        text = "Invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text, details=self.problems)


class NotFoundError(OrchestratorError):
    code = "not_found"


class PermissionDeniedError(OrchestratorError):
    code = "forbidden"


class ValidationError(OrchestratorError):
    code = "validation_failed"


class ConflictError(OrchestratorError):
    code = "conflict"


class LeaseError(OrchestratorError):
    code = "lease_error"


class StaleLeaseError(LeaseError):
    code = "stale_lease"


class RunCancelledError(LeaseError):
    code = "run_cancelled"


class ServiceError(OrchestratorError):
    code = "service_error"
