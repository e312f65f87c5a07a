"""Exceptions of our own."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A bad input on the command line, reported as one line and exit status 2."""
