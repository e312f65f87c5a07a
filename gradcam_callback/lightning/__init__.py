"""The Lightning side: the only package of gradcam_callback that imports Lightning.

- :mod:`.callback`: :class:`GradCAMCallback`, thin orchestration (when to run, what to call).
- :mod:`.samples`: the fixed samples (loader, indices, collate, inputs, labels, masks).
- :mod:`.history`: the maps of every logged run, drift, checkpoint state.
- :mod:`.sinks`: where pictures go, one sink per logger kind.
- :mod:`.loading`: loading a trained model for the command line.
"""

from __future__ import annotations

from gradcam_callback.lightning.callback import GradCAMCallback

__all__ = ["GradCAMCallback"]
