"""Plain domain vocabulary (enums and small value types); no I/O."""
