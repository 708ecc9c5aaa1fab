"""Workflow scripts (Claude Code compatible): loading and validation, the V8 sandbox, primitives."""
