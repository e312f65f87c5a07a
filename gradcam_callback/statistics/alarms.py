"""Alarms: thresholds on the attention scalars, written as short strings.

``alarms={"lift/watermark_mask": ">2", "border_lift": "<= 0.5"}``: keys are tag suffixes
after ``gradcam/<layer>/`` (a full ``gradcam/...`` tag is cut there), values a comparison
and a number, as a string (YAML-friendly). At each run, an alarm whose scalar crosses its
threshold is said once, naming the metric, its value and the epoch; with
``alarm_action="stop"`` training also stops (on every rank alike: the scalars are the
same on every rank). An undefined scalar never fires.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from gradcam_callback.notices import Notices

__all__ = ["Alarm", "check_alarms", "parse_alarms"]

_COMPARISONS = (">=", "<=", ">", "<")


@dataclass(frozen=True)
class Alarm:
    """One threshold on a scalar: ``metric`` (tag suffix, e.g. ``"lift/watermark_mask"``),
    ``op`` (one of ``>``, ``>=``, ``<``, ``<=``) and ``threshold``."""

    metric: str
    op: str
    threshold: float

    def fires(self, value: float) -> bool:
        """Whether ``value`` crosses the threshold (NaN never does)."""
        if math.isnan(value):
            return False
        return {">": value > self.threshold, ">=": value >= self.threshold,
                "<": value < self.threshold, "<=": value <= self.threshold}[self.op]

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_alarms(alarms: object) -> list[Alarm]:
    """``{"lift/watermark_mask": ">2", "border_lift": "<= 0.5"}`` as :class:`Alarm` s.

    Raises:
        TypeError: ``alarms`` is not a mapping of strings.
        ValueError: a condition that is not ``<op><number>``.

    Example::

        >>> parse_alarms({"gradcam/layer4/border_lift": "<= 0.5"})
        [Alarm(metric='border_lift', op='<=', threshold=0.5)]
    """
    if alarms is None:
        return []
    if not isinstance(alarms, Mapping):
        raise TypeError(f"alarms={alarms!r}: must be a mapping metric -> condition, e.g. "
                        "{'lift/watermark_mask': '>2'}")
    parsed = []
    for metric, condition in alarms.items():
        if not isinstance(metric, str) or not isinstance(condition, str):
            raise TypeError(f"alarms={alarms!r}: keys and conditions must be strings, e.g. "
                            "{'lift/watermark_mask': '>2'}")
        text = condition.strip()
        op = next((o for o in _COMPARISONS if text.startswith(o)), None)
        try:
            threshold = float(text[len(op):]) if op is not None else math.nan
        except ValueError:
            threshold = math.nan
        if op is None or not math.isfinite(threshold):
            raise ValueError(f"alarms[{metric!r}]={condition!r}: a condition is one of "
                             f"{', '.join(_COMPARISONS)} followed by a number, e.g. '>2'")
        parsed.append(Alarm(_short_name(metric), op, threshold))
    return parsed


def check_alarms(alarms: tuple[Alarm, ...] | list[Alarm], scalars: Mapping[str, float],
                 notices: Notices, *, epoch: int, step: int, stop: bool,
                 undefined: Collection[str] = ()) -> bool:
    """Say each alarm that fires (once), and each alarm on a scalar that does not exist.

    Args:
        alarms: the parsed alarms.
        scalars: this run's scalars by tag suffix (undefined ones absent).
        notices: where the warnings go.
        epoch: the run's epoch, for the message.
        step: the run's global step, for the message.
        stop: whether a firing alarm stops training (``alarm_action="stop"``).
        undefined: names of scalars that exist but are undefined this run (no alarm).

    Returns:
        Whether training should stop.
    """
    should_stop = False
    for alarm in alarms:
        value = scalars.get(alarm.metric)
        if value is None:
            if alarm.metric in undefined:
                continue  # a known scalar, undefined this time: nothing to compare
            close = difflib.get_close_matches(alarm.metric, list(scalars), n=3)
            notices.warn_once(
                f"alarm_unknown_{alarm.metric}",
                f"GradCAMCallback: alarms[{alarm.metric!r}]: there is no such scalar"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else
                   f"; the scalars are {', '.join(sorted(scalars))}"))
        elif alarm.fires(value):
            notices.warn_once(
                f"alarm_{alarm.metric}",
                f"GradCAMCallback alarm: {alarm.metric} = {value:.4g} at epoch {epoch} "
                f"(step {step}) crosses {alarm.describe()}"
                + ("; stopping training." if stop else "."))
            should_stop = should_stop or stop
    return should_stop


def _short_name(metric: str) -> str:
    """``gradcam/<layer>/lift/x`` -> ``lift/x``; a suffix stays as it is."""
    if metric.startswith("gradcam/"):
        parts = metric.split("/")
        return "/".join(parts[2:]) if len(parts) > 2 else metric
    return metric
