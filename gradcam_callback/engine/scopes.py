"""Scopes that change process or model state for one computation and put it back.

Both restore what they touched on exit, also when the body raises:

- :func:`eval_mode`: the model in eval mode, each submodule's own ``training`` flag put
  back afterwards (a BatchNorm the user froze in eval stays in eval).
- :func:`preserved_rng_state`: the torch (CPU and CUDA), Python and NumPy global RNG states
  put back afterwards, so explaining the model never shifts the user's random stream.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["eval_mode", "preserved_rng_state"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode, restoring every submodule's own ``training`` flag."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def preserved_rng_state(device: torch.device | None = None) -> Iterator[None]:
    """Restore the global RNG states (torch CPU, the CUDA ``device``, Python, NumPy)."""
    torch_state = torch.get_rng_state()
    cuda_state = None
    if device is not None and device.type == "cuda":
        cuda_state = torch.cuda.get_rng_state(device)
    python_state = random.getstate()
    # NumPy's stream can only have been drawn from if NumPy is loaded: no import here.
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_state is not None and device is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        random.setstate(python_state)
        if numpy is not None and numpy_state is not None:
            numpy.random.set_state(numpy_state)
