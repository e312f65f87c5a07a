"""Capture one layer's output for one computation, then leave no trace.

:func:`capture_layer_output` is a forward hook, alive only inside its ``with`` block, that
keeps the target layer's output *as it left the layer* and hands the rest of the network a
copy, so that ``ReLU(inplace=True)`` or ``out += identity`` downstream cannot rewrite it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LayerCapture", "capture_layer_output"]


@dataclass
class LayerCapture:
    """What :func:`capture_layer_output` saw during one forward.

    Attributes:
        activation: the layer's output from its last call, detached from everything
            upstream; with ``track_gradients`` it is a leaf that requires grad and the
            rest of the forward is built on it, so ``autograd.grad(score, activation)``
            reaches exactly this layer and no further. ``None`` if the layer never ran.
    """

    activation: Tensor | None = None


@contextmanager
def capture_layer_output(
    layer: nn.Module, layer_name: str, *, track_gradients: bool
) -> Iterator[LayerCapture]:
    """Hook ``layer`` for the duration of the ``with`` block.

    Run the forward under ``torch.no_grad()``: the hook switches gradient recording on at
    the layer, so autograd records only the part of the network between the layer and the
    scores. Upstream activations are never kept for backward (less memory, faster), and a
    frozen backbone whose output would have no graph needs no special case. The enclosing
    ``no_grad`` block restores the caller's grad mode when it exits.

    If the layer runs several times in one forward (a shared block), the last call is
    kept: the CAM explains the layer's final use.

    Args:
        layer: the module to hook.
        layer_name: its dotted name, for error messages.
        track_gradients: build the downstream graph on the captured activation.

    Raises:
        TypeError: the layer returned something other than a tensor.
    """
    capture = LayerCapture()

    def keep_output(_module: nn.Module, _args: object, output: object) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"target layer {layer_name!r} returned a {type(output).__name__}, not a "
                "tensor; choose a layer that outputs a tensor (e.g. a submodule of this one)"
            )
        # A copy, not a view: the layer's output may alias a tensor that the model later
        # modifies in place (an in-place activation, a residual `out += identity`).
        kept = output.detach().clone()
        capture.activation = kept
        if not track_gradients:
            return None
        kept.requires_grad_(True)
        torch.set_grad_enabled(True)
        # Downstream gets its own copy, so in-place ops after the layer cannot touch `kept`.
        return kept.clone()

    handle = layer.register_forward_hook(keep_output)
    try:
        yield capture
    finally:
        handle.remove()
