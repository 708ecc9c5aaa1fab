"""The agent runtime: one Celery task per turn (model call, then its tool calls), journaled."""
