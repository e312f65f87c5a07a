"""The callback's explanation of its fixed samples: the rows of maps it shows.

A part of :class:`~gradcam_callback.lightning.callback.GradCAMCallback`, split out by
concern; the maps come from :func:`gradcam_callback.engine.explain_batch`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from gradcam_callback.engine import explain_batch, get_method
from gradcam_callback.lightning.guard import (
    NonFiniteOutputError,
)
from gradcam_callback.lightning.samples import (
    FixedSamples,
)


class ExplainingMixin:
    """Explain the fixed samples: the rows of maps to show, and the logits."""

    def _explain_samples(self, trainer: Trainer, pl_module: LightningModule,
                         samples: FixedSamples) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """:meth:`_explain` on the fixed samples, on the model's device and precision.

        Raises:
            NonFiniteOutputError: the model's outputs for some samples are NaN or infinite.
        """
        inputs = trainer.precision_plugin.convert_input(samples.inputs.to(pl_module.device))
        rows, logits = self._explain(pl_module, inputs, samples.labels, samples.label_note)
        finite = torch.isfinite(logits.detach().float().flatten(1)).all(dim=1)
        if not finite.all():
            bad = [samples.indices[i] for i in (~finite).nonzero().flatten().tolist()]
            raise NonFiniteOutputError(
                f"the model's outputs for samples {bad[:8]}{'...' if len(bad) > 8 else ''} "
                "are NaN or infinite"
            )
        return rows, logits

    def _explain(self, pl_module: LightningModule, inputs: Tensor, labels: Tensor | None,
                 label_note: str | None = None) -> tuple[list[tuple[str, Tensor]], Tensor]:
        """The maps to show, each with its row title, and the logits of the forward pass."""
        common = {"method": self.method, "reshape_transform": self.reshape_transform,
                  "output_transform": self.output_transform, "batch_size": self.batch_size}
        title = get_method(self.method).title
        primary = "predicted" if self.target == "both" else self.target
        result = explain_batch(pl_module, inputs, self._layer_name,
                               self._targets(primary, labels, label_note), **common)
        if self._reading is None:
            chosen = "chosen automatically" if self.target_layer is None else "target_layer"
            rank_zero_info(f"GradCAMCallback: explaining {result.layer_name!r} ({chosen}): "
                           f"{result.reading}")
        self._layer_name, self._reading = result.layer_name, result.reading
        if self.target != "both":
            suffix = " (label)" if self.target == "label" else ""
            return [(title + suffix, result.cams)], result.logits
        by_label = explain_batch(pl_module, inputs, self._layer_name,
                                 self._targets("label", labels, label_note), **common)
        return [(f"{title} (predicted)", result.cams), (f"{title} (label)", by_label.cams)], \
            result.logits

    def _targets(self, target: Any, labels: Tensor | None, label_note: str | None = None) -> Any:
        if target == "predicted":
            return None
        if target == "label":
            if labels is None and label_note is not None:
                raise ValueError(
                    f"target={self.target!r} needs class-index labels (a 1-D integer tensor "
                    f"(N,)), but {label_note}: convert them in the dataset (e.g. "
                    "labels.argmax(1) for one-hot), or return (inputs, class indices) from "
                    "batch_to_input"
                )
            if labels is None:
                raise ValueError(
                    f"target={self.target!r} needs class-index labels, but the batch has "
                    f"none: for dict samples set label_key (now {self._reader.label_key!r}), "
                    "or return (inputs, labels) from batch_to_input; labels must be a 1-D "
                    "integer tensor (not one-hot or float)"
                )
            return labels
        return target
