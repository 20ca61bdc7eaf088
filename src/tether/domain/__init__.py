"""Pure domain models and rules: no I/O, no adapters (enforced by import-linter)."""
