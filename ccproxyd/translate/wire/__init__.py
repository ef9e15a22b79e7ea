"""Typed shapes of the two wire formats (documentation for readers and type checkers)."""
