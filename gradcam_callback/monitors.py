"""Lightning's monitors on the callback's scalars, checked before training.

An undefined number is never published as NaN: for a run where a scalar is undefined
(``drift`` at the first run, a spread of one sample, the lift of a mask that is empty
everywhere, a model whose outputs are all NaN) its key is left out of
``trainer.callback_metrics``, which then keeps the value of the last run that had one (as
it keeps any key Lightning logged earlier). A monitor that *raises* on a missing key would
stop the run with an error at such a run: ``EarlyStopping(strict=True)`` (Lightning's
default) and ``ModelCheckpoint(monitor=...)`` both do, once a validation has run.
:func:`check_monitors` finds the ones that would, before the first training step, and
says why and what to do. Monitors are recognised by their attributes (``monitor`` with
``strict``, or with ``save_top_k``), so nothing here imports Lightning.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping

__all__ = ["FIRST_RUN_UNDEFINED", "check_monitors", "strict_monitors"]

FIRST_RUN_UNDEFINED = ("drift", "drift_from_start")
"""Scalars that no first run has: they compare a run with earlier ones."""


def strict_monitors(callbacks: Iterable[object]) -> Iterator[tuple[str, str]]:
    """``(description, key)`` of each monitor that raises when its key is missing."""
    for callback in callbacks:
        key = getattr(callback, "monitor", None)
        if not isinstance(key, str):
            continue
        kind = type(callback).__name__
        if getattr(callback, "strict", False) is True:
            yield f"{kind}(monitor={key!r}, strict=True)", key
        elif isinstance(top_k := getattr(callback, "save_top_k", None), int) and top_k:
            yield f"{kind}(monitor={key!r})", key


def check_monitors(callbacks: Iterable[object], prefix: str, names: Collection[str],
                   undefined: Mapping[str, str], *, every_n_epochs: int = 1,
                   every_n_steps: int | None = None,
                   steps_per_validation: float = 1.0) -> None:
    """Raise before training if a strict monitor of a scalar under ``prefix`` would find
    its key missing after a validation run.

    Args:
        callbacks: ``trainer.callbacks``.
        prefix: the callback's tag prefix, ``gradcam/<layer>/``.
        names: the scalars its runs publish (by tag suffix).
        undefined: those undefined on the samples the check measured (all of the metric
            samples), with their causes.
        every_n_epochs: the callback's option (epochs without a run have no value).
        every_n_steps: the callback's option: its runs fill those epochs when there is one
            between every two validations.
        steps_per_validation: the optimizer steps from one validation to the next.

    Raises:
        ValueError: naming each such monitor, why its key would be missing, and the fix.

    Example::

        >>> class EarlyStopping:
        ...     monitor, strict = "gradcam/layer4/drift", True
        >>> check_monitors([EarlyStopping()], "gradcam/layer4/", {"drift", "lift/x"}, {})
        Traceback (most recent call last):
        ...
        ValueError: GradCAMCallback: EarlyStopping(monitor='gradcam/layer4/drift', strict=True) would stop training with an error: drift is undefined at the first run (there is no earlier run to compare with). ...
    """  # noqa: E501
    problems = []
    for who, key in strict_monitors(callbacks):
        if not key.startswith(prefix):
            continue  # not this callback's (another layer's callback, or no gradcam key)
        name = key.removeprefix(prefix)
        fills = every_n_steps is not None and every_n_steps <= steps_per_validation
        cause = _missing_cause(name, names, undefined, 1 if fills else every_n_epochs)
        if cause is not None:
            problems.append(f"{who} would stop training with an error: {cause}")
    if problems:
        raise ValueError(
            "GradCAMCallback: " + "; ".join(problems) + ". Such a monitor raises when its "
            "key is missing after a validation run, and GradCAMCallback leaves an undefined "
            "number out of callback_metrics instead of publishing NaN. Pass "
            "EarlyStopping(..., strict=False) (it then skips runs without a value), or "
            "monitor a scalar that every run has."
        )


def _missing_cause(name: str, names: Collection[str], undefined: Mapping[str, str],
                   every_n_epochs: int) -> str | None:
    if name in FIRST_RUN_UNDEFINED:
        return f"{name} is undefined at the first run (there is no earlier run to compare with)"
    if name not in names:
        close = difflib.get_close_matches(name, list(names), n=3)
        return (f"this callback publishes no scalar {name!r}"
                + (f" (did you mean {', '.join(map(repr, close))}?)" if close
                   else f" (it publishes {', '.join(sorted(names))})"))
    if name in undefined:
        return f"{name} is undefined on the metric samples before training: {undefined[name]}"
    if every_n_epochs > 1:
        return (f"with every_n_epochs={every_n_epochs} the first run is at epoch "
                f"{every_n_epochs - 1}, so the validations before it have no {name}")
    return None
