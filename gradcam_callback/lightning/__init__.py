"""The Lightning side: the only package of gradcam_callback that imports Lightning.

- :mod:`.callback`: :class:`GradCAMCallback`, the hooks and the orchestration (when to
  run, what to call).
- :mod:`.trainer_api`: what the callback asks of the trainer; the one module that reads
  Lightning's private state, each time with a fallback.
- :mod:`.sinks`: where pictures (and scalars) go, one sink per logger kind.
"""

from __future__ import annotations

from gradcam_callback.lightning.callback import GradCAMCallback

__all__ = ["GradCAMCallback"]
