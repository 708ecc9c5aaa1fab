"""BooCode Orchestrator: the domain core.

Owns the store, run lifecycle (leases and journal), events and settings. It imports neither the web
front end nor the worker (import-linter enforces this), so every rule about durability lives here
once and both sides call it.
"""

__version__ = "0.1.0"
