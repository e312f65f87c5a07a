"""The callback's checkpointed state: the layer, the samples shown, the drift history.

Versioned (:data:`~gradcam_callback.history.STATE_VERSION`); states of older versions
load. On restore, the checkpoint's samples are shown again unless the options that
choose them (``num_samples``, ``sample_indices``, ``dataloader_idx``) changed since: then
the new options win, one warning names old and new, and the history restarts. A history
that cannot be restored is dropped with a warning, never an error.
"""

from __future__ import annotations

from typing import Any

from gradcam_callback.explainer import Explainer
from gradcam_callback.history import STATE_VERSION, History
from gradcam_callback.notices import Notices
from gradcam_callback.samples import SampleStore

__all__ = ["load_state", "save_state"]


def save_state(explainer: Explainer, samples: SampleStore, history: History) -> dict[str, Any]:
    """The state to checkpoint."""
    return {"layer_name": explainer.layer_name, "sample_indices": samples.shown_indices(),
            "sample_options": samples.reader.options.identity(), **history.state_dict()}


def load_state(state: dict[str, Any], explainer: Explainer, samples: SampleStore,
               history: History, notices: Notices) -> None:
    """Restore :func:`save_state`'s ``state`` into the collaborators (see the module)."""
    samples.forget()
    version = state.get("version", 1)
    if isinstance(version, int) and version > STATE_VERSION:
        notices.warn_once("state_version", f"GradCAMCallback: the checkpoint's state has "
                          f"version {version}, newer than this version's {STATE_VERSION}; "
                          "restoring what this version understands.")
    explainer.layer_name = state.get("layer_name", explainer.layer_name)
    try:
        history.load_state_dict(state)
    except ValueError as error:
        notices.warn_once("bad_history", f"GradCAMCallback: {error}; starting a new drift "
                          "history.")
    indices = state.get("sample_indices")
    saved = state.get("sample_options")
    current = samples.reader.options.identity()
    samples.restored_indices = list(indices) if indices is not None else None
    if saved is not None and saved != current:
        changed = ", ".join(f"{key}={saved.get(key)!r} -> {value!r}"
                            for key, value in current.items() if saved.get(key) != value)
        notices.warn_once("options_changed", f"GradCAMCallback: the sample options changed "
                          f"since the checkpoint ({changed}); the new ones win: showing "
                          f"other samples than before the resume (then: indices {indices}) "
                          "and starting a new drift history.")
        samples.restored_indices = None
        history.clear()
