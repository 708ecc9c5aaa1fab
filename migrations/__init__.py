"""Alembic migrations for the BooCode store. Run them with `boocode db upgrade`."""
