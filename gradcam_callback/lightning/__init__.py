"""The Lightning side: the only package of gradcam_callback that imports Lightning.

- :mod:`.callback`: :class:`GradCAMCallback`, the hooks and the orchestration (when to
  run, what to call).
- :mod:`.trainer_api`: what the callback asks of the trainer; the one module that reads
  Lightning's private state, each time with a fallback.
- :mod:`.sinks`: where pictures (and scalars) go, one sink per logger kind.
"""

from __future__ import annotations

import importlib
import sys

from gradcam_callback.lightning.callback import GradCAMCallback

__all__ = ["GradCAMCallback"]

# Modules that never imported Lightning moved to where their concept lives; their old paths
# (``gradcam_callback.lightning.history`` and so on) still import, until 0.3.
_MOVED = {"history": "gradcam_callback.history", "guard": "gradcam_callback.guard",
          "samples": "gradcam_callback.samples", "display": "gradcam_callback.samples.display",
          "options": "gradcam_callback.options", "statistics": "gradcam_callback.statistics",
          "loading": "gradcam_callback.cli.loading"}
for _old, _new in _MOVED.items():
    sys.modules.setdefault(f"{__name__}.{_old}", importlib.import_module(_new))
