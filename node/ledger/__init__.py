"""The pure ledger core: deterministic, no clock, no I/O, no threads.

Imports only the standard library and its siblings (an import-linter contract
in pyproject.toml keeps it so). The entry point is :func:`node.ledger.apply.apply_block`.
"""
