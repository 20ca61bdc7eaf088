"""Renderers: turn a checked plan into configuration text (pure functions, no I/O)."""
