"""Celery workers: thin tasks that load a run by id, call the core, commit, publish."""
