"""The thin web front end: authenticates, validates, enqueues and streams. Never runs agent code."""
