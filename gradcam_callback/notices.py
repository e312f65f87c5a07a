"""What the callback tells its user: each warning or note once per run, on rank zero.

The callback's collaborators report through one :class:`Notices` held by the callback, so
that a message has one key, one wording and one "once": a warning said in the check
before training is not said again at the first validation run, and a new ``fit`` (or
``validate``/``test``) starts a fresh set. The two outputs come in as callables
(Lightning's ``rank_zero_warn`` and ``rank_zero_info`` in the callback), so nothing here
imports Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Notices"]


def _ignore(_message: str) -> None:
    return None


@dataclass
class Notices:
    """Warnings and notes, each said once until :meth:`reset`.

    Attributes:
        warn: says a warning (e.g. ``rank_zero_warn``).
        info: says a note (e.g. ``rank_zero_info``).

    Example::

        >>> said = []
        >>> notices = Notices(said.append)
        >>> notices.warn_once("few", "only 3 samples"); notices.warn_once("few", "again")
        >>> said
        ['only 3 samples']
    """

    warn: Callable[[str], None] = _ignore
    info: Callable[[str], None] = _ignore
    _said: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        """Say ``message`` as a warning unless ``key`` was said since the last reset."""
        if self.first(key):
            self.warn(message)

    def info_once(self, key: str, message: str) -> None:
        """Say ``message`` as a note unless ``key`` was said since the last reset."""
        if self.first(key):
            self.info(message)

    def said(self, key: str) -> bool:
        """Whether ``key`` was said since the last reset."""
        return key in self._said

    def reset(self) -> None:
        """Forget what was said (a new fit, validate or test)."""
        self._said.clear()

    def first(self, key: str) -> bool:
        """Whether ``key`` comes up for the first time since the last reset (it is then
        marked said): for work done once, whatever it then says."""
        if key in self._said:
            return False
        self._said.add(key)
        return True
