"""Attention statistics over many validation samples, shared across ranks.

- :mod:`.accumulator`: :class:`AttentionStatistics`, the running sums and their reduction
  over ranks; :class:`StatisticsResult`, what comes out (means, spreads, class maps).
- :mod:`.collect`: :func:`collect_statistics`, the chunk loop.
- :mod:`.alarms`: thresholds on the scalars (``alarms={"lift/x": ">2"}``).
- :mod:`.runner`: :class:`StatisticsRunner`, the statistics of a callback's run.

Nothing here imports Lightning: the collectives come in as callables.
"""

from __future__ import annotations

from gradcam_callback.statistics.accumulator import (
    CONSISTENCY,
    MAP_SIZE,
    MIN_CELLS,
    AttentionStatistics,
    RankFailed,
    StatisticsResult,
    summarise,
    summary_names,
)
from gradcam_callback.statistics.alarms import Alarm, check_alarms, parse_alarms
from gradcam_callback.statistics.collect import Collectives, collect_statistics
from gradcam_callback.statistics.runner import StatisticsRunner

__all__ = [
    "CONSISTENCY",
    "MAP_SIZE",
    "MIN_CELLS",
    "Alarm",
    "AttentionStatistics",
    "Collectives",
    "RankFailed",
    "StatisticsResult",
    "StatisticsRunner",
    "check_alarms",
    "collect_statistics",
    "parse_alarms",
    "summarise",
    "summary_names",
]
