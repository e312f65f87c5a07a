"""Load a trained model for the command line: a LightningModule checkpoint or a plain module.

A plain ``nn.Module`` without ``--weights`` keeps the weights its class or factory gives it
(random, or built in), with a warning. A checkpoint or state_dict that does not fit says
why on one line: the missing and unexpected keys and the shape mismatches, not just
"Error(s) in loading state_dict".
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn

from gradcam_callback.errors import UsageError as CliError

__all__ = ["load_model"]


def load_model(spec: str, model_args: list[str], checkpoint: Path | None,
               weights: Path | None) -> nn.Module:
    """The model named by ``spec`` (``module:Class``), built and loaded, in eval mode.

    A LightningModule needs ``checkpoint``; a plain module takes ``weights`` (or
    ``checkpoint``) as a state_dict, and without either keeps its initial weights (a
    warning on stderr says so).

    Raises:
        UsageError: anything the user can fix (the message says what).
    """
    target = _import(spec)
    kwargs = _model_kwargs(model_args)
    is_lightning = inspect.isclass(target) and issubclass(target, LightningModule)
    if is_lightning:
        if checkpoint is None:
            raise CliError(f"--model {spec} is a LightningModule: pass --checkpoint")
        if not checkpoint.is_file():
            raise CliError(f"--checkpoint: no such file: {checkpoint}")
        try:
            model = target.load_from_checkpoint(checkpoint, map_location="cpu", **kwargs)
        except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
            raise CliError(f"--checkpoint {checkpoint} does not fit {spec}: "
                           f"{_one_line(error)}") from None
        loaded: nn.Module = model.eval()
        return loaded

    if not callable(target):
        raise CliError(f"--model {spec} is not a class or factory")
    try:
        model = target(**kwargs)
    except TypeError as error:
        raise CliError(f"--model {spec}: {error}") from None
    if not isinstance(model, nn.Module):
        raise CliError(f"--model {spec} made a {type(model).__name__}, not an nn.Module")
    weights = weights or checkpoint
    if weights is None:
        print(f"gradcam-callback: warning: no --weights for {spec}: it runs with the weights "
              "it was built with (random unless the factory loads its own)", file=sys.stderr)
        return model.eval()
    if not weights.is_file():
        raise CliError(f"--weights: no such file: {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, AttributeError) as error:
        raise CliError(f"--weights {weights} does not fit {spec}: "
                       f"{_one_line(error)}") from None
    return model.eval()


def _import(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        # `python -m` imports from the working directory; the console script should too,
        # so a project's own, uninstalled package is found.
        sys.path.insert(0, str(Path.cwd()))
    if not module_name or not attribute:
        raise CliError(f"--model must be MODULE:CLASS (e.g. mypkg.models:LitNet), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CliError(f"--model: cannot import module {module_name!r} ({error})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise CliError(f"--model: module {module_name!r} has no {attribute!r}") from None


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"--model-arg must be KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value  # a plain string
    return kwargs


def _one_line(error: Exception, keys_shown: int = 5) -> str:
    """The whole error message on one line, long key lists shortened.

    ``load_state_dict`` puts its detail (missing keys, unexpected keys, size mismatches)
    on the lines after "Error(s) in loading state_dict for X:"; all of it is kept.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return " ".join(_shorten_keys(line, keys_shown) for line in lines)


def _shorten_keys(line: str, keys_shown: int) -> str:
    keys = re.findall(r'"[^"]*"', line)
    if len(keys) <= keys_shown:
        return line
    start = line.index(keys[0])
    end = line.rindex(keys[-1]) + len(keys[-1])
    listed = ", ".join(keys[:keys_shown]) + f", ... ({len(keys) - keys_shown} more)"
    return line[:start] + listed + line[end:]
