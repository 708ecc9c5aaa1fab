"""Live product telemetry: event publishing now; spans and cache diagnosis build on it."""
