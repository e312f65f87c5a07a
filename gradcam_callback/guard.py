"""The callback's one failure policy: fail fast before training, never stop it afterwards.

Before the first training step (and before ``validate``/``test``) the callback runs its
whole pipeline once on the fixed samples and lets every error through: a wrong option
or a batch it cannot read is found in seconds, not after an epoch.

After that the callback is an observer, and an observer must not kill the run it
observes. :class:`RunGuard` wraps each of its runs, the statistics on every rank and the
pictures on rank zero alike: a failure (a full disk, a file where the image folder
should be, the model's forward raising in the CAM pass, out of memory, ...) is reported
once, with its cause and a fix, the rest of that run is skipped and the next one tries
again. After :data:`MAX_CONSECUTIVE_FAILURES` failed runs in a row the callback switches
itself off and says so; rank zero's decision reaches every rank at the start of the next
run (:meth:`RunGuard.agree`), so a switched-off callback costs no rank anything.
``on_error="raise"`` (for CI) raises instead.

Only :class:`Exception` is caught: ``KeyboardInterrupt`` and ``SystemExit`` go through.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "MAX_CONSECUTIVE_FAILURES",
    "ON_ERROR",
    "STATISTICS_STEP",
    "Attempt",
    "Failure",
    "RunGuard",
    "describe_failure",
]

ON_ERROR = ("warn", "raise")
"""Valid values of the callback's ``on_error`` option."""

MAX_CONSECUTIVE_FAILURES = 3
"""Failed runs in a row after which the callback switches itself off."""

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}
_IN_THE_WAY = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR}


STATISTICS_STEP = "computing the statistics"
"""The step name of the many-sample statistics (their out-of-memory fix names
``metric_batch_size``, the pictures' ``batch_size``)."""


@dataclass
class Attempt:
    """One guarded run in progress: what it is doing now, for the report if it fails.

    Attributes:
        step: the current step, e.g. ``"explaining"``, ``"rendering"``, ``"writing"``.
        where: where the current step writes to, if anywhere (a path, a logger).
        failed: set when the run failed (the body was left at the error).
    """

    step: str = "preparing"
    where: str = ""
    failed: bool = False


@dataclass(frozen=True)
class Failure:
    """A failed run, as reported.

    Attributes:
        run: what was run, e.g. ``"the run at epoch 3 (step 120)"``.
        step: the step that failed.
        error: the exception, as ``Type: message``.
        cause: the cause in words.
        fix: what to do about it.
    """

    run: str
    step: str
    error: str
    cause: str
    fix: str


def describe_failure(error: BaseException, step: str, where: str = "",
                     batch_size: int | None = None,
                     metric_batch_size: int | None = None) -> tuple[str, str]:
    """``(cause, fix)`` for an error raised by ``step`` of a run, in words for the user.

    Example::

        >>> describe_failure(MemoryError(), STATISTICS_STEP, batch_size=32, metric_batch_size=64)
        ('out of memory', 'lower metric_batch_size= (now 64) or metric_samples')
    """
    path = getattr(error, "filename", None) or where or "the image folder"
    code = getattr(error, "errno", None)
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        if step == STATISTICS_STEP:
            now = f" (now {metric_batch_size})" if metric_batch_size is not None else ""
            return "out of memory", f"lower metric_batch_size={now} or metric_samples"
        now = f" (now {batch_size})" if batch_size is not None else ""
        return "out of memory", f"lower batch_size={now}, num_samples or max_image_size"
    if isinstance(error, OSError) and code in _DISK_FULL:
        return (f"the disk is full writing to {path}",
                "free space on that disk, or point image_dir= to another one")
    if isinstance(error, OSError) and code in _IN_THE_WAY:
        return (f"a file or folder is in the way at {path}",
                "remove or rename it, or choose another image_dir=")
    if isinstance(error, OSError) and code in _NOT_ALLOWED:
        return (f"no permission to write to {path}",
                "make it writable, or choose another image_dir=")
    if isinstance(error, OSError) and step == "writing":
        return (f"an I/O error writing to {path}",
                "check that the folder and its disk are usable, or choose another image_dir=")
    if step in ("explaining", STATISTICS_STEP):
        return ("the model's forward or the CAM computation raised on the fixed samples",
                "run compute_cam(model, inputs, layer) on those samples to see why; "
                "on_error='raise' shows the full traceback")
    return (f"an unexpected error while {step}",
            "on_error='raise' shows the full traceback; please report it")


class RunGuard:
    """Runs the callback's work so that a failure never stops training.

    Args:
        on_error: ``"warn"`` (report once, skip the run, go on) or ``"raise"``.
        warn: reports a message (e.g. Lightning's ``rank_zero_warn``).
        max_failures: failed runs in a row after which the guard switches off.
        batch_size: the CAM chunk size, named in out-of-memory fixes of the pictures.
        metric_batch_size: the statistics' chunk size, named in theirs.

    :meth:`configure` changes ``on_error`` and the two sizes between runs.

    Example::

        >>> messages = []
        >>> guard = RunGuard("warn", messages.append)
        >>> with guard.attempt("the run at epoch 0") as attempt:
        ...     guard.progress("writing")
        ...     raise OSError(28, "No space left on device")
        >>> attempt.failed, guard.active, len(messages)
        (True, True, 1)
    """

    def __init__(self, on_error: str, warn: Callable[[str], None],
                 max_failures: int = MAX_CONSECUTIVE_FAILURES,
                 batch_size: int | None = None, metric_batch_size: int | None = None) -> None:
        self.on_error = on_error
        self.max_failures = max_failures
        self.batch_size = batch_size
        self.metric_batch_size = metric_batch_size
        self._warn = warn
        self.failures: list[Failure] = []
        self.consecutive = 0
        self.switched_off = False
        self._reported: set[tuple[str, str]] = set()
        self._current: Attempt | None = None

    def configure(self, on_error: str, batch_size: int | None,
                  metric_batch_size: int | None) -> None:
        """New options (between runs): the policy and the sizes its fixes name."""
        self.on_error, self.batch_size, self.metric_batch_size = (on_error, batch_size,
                                                                  metric_batch_size)

    @property
    def active(self) -> bool:
        """Whether runs are still attempted (``False`` once switched off)."""
        return not self.switched_off

    def reset(self) -> None:
        """Start over (a new ``fit``): forget failures, switch back on."""
        self.failures.clear()
        self.consecutive = 0
        self.switched_off = False
        self._reported.clear()

    def agree(self, broadcast: Callable[[bool], bool]) -> bool:
        """Take rank zero's on/off decision (every rank must call it, at the same point);
        returns whether runs are attempted."""
        self.switched_off = bool(broadcast(self.switched_off))
        return self.active

    def progress(self, step: str, where: str = "") -> None:
        """Say what the run in progress is doing now (named in its report if it fails)."""
        if self._current is not None:
            self._current.step, self._current.where = step, where

    @contextmanager
    def attempt(self, run: str) -> Iterator[Attempt]:
        """Run the body; on an :class:`Exception`, report it (or raise) and go on.

        Args:
            run: what is run, for the report (``"the run at epoch 3 (step 120)"``).

        Yields:
            the :class:`Attempt`: :meth:`progress` sets its ``step`` (and ``where``) as
            the body proceeds; after the block, ``failed`` says whether the body was left
            at an error.
        """
        attempt = Attempt()
        outer, self._current = self._current, attempt
        try:
            yield attempt
        except Exception as error:
            attempt.failed = True
            if self.on_error == "raise":
                raise
            self._record(run, attempt, error)
        else:
            self.consecutive = 0
        finally:
            self._current = outer

    def _record(self, run: str, attempt: Attempt, error: Exception) -> None:
        cause, fix = describe_failure(error, attempt.step, attempt.where, self.batch_size,
                                      self.metric_batch_size)
        text = f"{type(error).__name__}: {error}"
        failure = Failure(run, attempt.step, text, cause, fix)
        self.failures.append(failure)
        self.consecutive += 1
        key = (attempt.step, text)
        if key not in self._reported:
            self._reported.add(key)
            self._warn(
                f"GradCAMCallback skipped {run}: {attempt.step} failed with {text}. "
                f"Cause: {cause}. Fix: {fix}. Training goes on and the next run tries "
                f"again; after {self.max_failures} failed runs in a row the callback "
                "switches itself off (on_error='raise' raises instead)."
            )
        if self.consecutive >= self.max_failures and not self.switched_off:
            self.switched_off = True
            self._warn(
                f"GradCAMCallback switched itself off after {self.consecutive} failed runs "
                f"in a row (the last: {attempt.step} failed with {text}; cause: {cause}). "
                "Training goes on without Grad-CAM; a new fit() tries again. "
                f"Fix: {fix}."
            )
