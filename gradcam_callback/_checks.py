"""Argument validation shared by the engine, the renderer, the callback and the CLI.

One wording everywhere: ``name=value: what is valid``, and a suggestion when a close valid
value exists. A value of the wrong *type* raises ``TypeError``; a value of the right type
outside what is valid raises ``ValueError``. Bools are never numbers here, numpy scalars
are, and NaN or infinity is never a valid number. Lists, tuples and 1-D numpy arrays or
tensors are sequences; a string never is (``"abc"`` is not three names).

Only the standard library is imported, so every layer of the package can use it.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "check_bool",
    "check_callable",
    "check_choice",
    "check_float",
    "check_int",
    "check_int_sequence",
    "check_mean_std",
    "check_str",
    "check_str_sequence",
    "is_number",
]


def _show(value: object) -> str:
    text = " ".join(repr(value).split())  # one line, also for numpy arrays
    return text if len(text) <= 80 else text[:77] + "..."


def is_number(value: object) -> bool:
    """A real number that is not a bool (numpy scalars count)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool (``"no"``, ``0`` and ``None`` are not)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={_show(value)}: must be True or False, got {type(value).__name__}")
    return value


def check_str(name: str, value: object) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name}={_show(value)}: must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name}='': must be a non-empty string")
    return value


def check_int(name: str, value: object, *, minimum: int | None = None,
              maximum: int | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` in ``[minimum, maximum]``; numpy integers are accepted."""
    if value is None and allow_none:
        return None
    valid = _range_words("an int", minimum, maximum) + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={_show(value)}: must be {valid}, got {type(value).__name__}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value}: must be {valid}")
    return value


def check_float(name: str, value: object, *, minimum: float | None = None,
                maximum: float | None = None, exclusive_minimum: bool = False,
                allow_none: bool = False) -> float | None:
    """``value`` as a finite ``float`` in range; ints and numpy scalars are accepted."""
    if value is None and allow_none:
        return None
    low = "" if minimum is None else f"{'>' if exclusive_minimum else '>='} {minimum}"
    words = "a finite number" + (f" {low}" if low else "")
    if maximum is not None:
        words += f"{' and' if low else ''} <= {maximum}"
    if allow_none:
        words += " or None"
    if not is_number(value):
        raise TypeError(f"{name}={_show(value)}: must be {words}, got {type(value).__name__}")
    number = float(value)  # type: ignore[arg-type]
    too_low = minimum is not None and (
        number <= minimum if exclusive_minimum else number < minimum
    )
    if not math.isfinite(number) or too_low or (maximum is not None and number > maximum):
        raise ValueError(f"{name}={number!r}: must be {words}")
    return number


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; else an error listing them, with a suggestion."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(
            f"{name}={_show(value)}: must be one of {', '.join(map(repr, choices))}, got "
            f"{type(value).__name__}"
        )
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name}={value!r}: valid values are {', '.join(map(repr, choices))}.{hint}")


def check_callable(name: str, value: object, *,
                   allow_none: bool = True) -> Callable[..., Any] | None:
    """``value`` if it is callable (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if callable(value) and not isinstance(value, (str, bytes)):
        return value
    raise TypeError(
        f"{name}={_show(value)}: must be a callable{' or None' if allow_none else ''}, got "
        f"{type(value).__name__} (in YAML, give the function's import path)"
    )


def _sequence(name: str, value: object, what: str) -> Sequence[Any]:
    if getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):
        items: list[Any] = value.tolist()  # numpy or torch, 1-D
        return items
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        hint = f" (did you mean [{value!r}]?)" if isinstance(value, str) else ""
        raise TypeError(
            f"{name}={_show(value)}: must be a list of {what}, got {type(value).__name__}{hint}"
        )
    return value


def check_str_sequence(name: str, value: object, *, allow_none: bool = True,
                       non_empty: bool = True) -> list[str] | None:
    """``value`` as a list of strings; a bare string is rejected (it is not a list)."""
    if value is None and allow_none:
        return None
    items = _sequence(name, value, "strings")
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name}={_show(value)}: every item must be a string, got {_show(bad[0])}")
    if non_empty and not items:
        raise ValueError(f"{name}=[]: give at least one name, or None")
    return list(items)


def check_int_sequence(name: str, value: object, *, minimum: int = 0, allow_none: bool = True,
                       unique: bool = True) -> list[int] | None:
    """``value`` as a non-empty list of ints >= ``minimum``, without repeats if ``unique``."""
    if value is None and allow_none:
        return None
    items = _sequence(name, value, "ints")
    if not items:
        raise ValueError(f"{name}=[]: give at least one index, or None")
    result = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name}={_show(value)}: every item must be an int, got {_show(item)}")
        if int(item) < minimum:
            raise ValueError(f"{name}={_show(value)}: every item must be >= {minimum}, got {item}")
        result.append(int(item))
    if unique and len(set(result)) != len(result):
        repeated = next(i for i in result if result.count(i) > 1)
        raise ValueError(f"{name}={_show(value)}: {repeated} appears more than once")
    return result


def check_mean_std(mean: object, std: object, channels: int | None = None,
                   names: tuple[str, str] = ("mean", "std")
                   ) -> tuple[list[float], list[float]] | None:
    """Validate an input normalisation: both or neither, one finite value per channel, std > 0.

    A single number stands for every channel. Returns ``None`` when neither is given.
    """
    mean_name, std_name = names
    if mean is None and std is None:
        return None
    if (mean is None) != (std is None):
        raise ValueError(
            f"{mean_name}={_show(mean)}, {std_name}={_show(std)}: pass both (one value per "
            "input channel) or neither"
        )
    means = _per_channel(mean_name, mean)
    stds = _per_channel(std_name, std)
    if len(means) == 1 and len(stds) > 1:
        means = means * len(stds)
    if len(stds) == 1 and len(means) > 1:
        stds = stds * len(means)
    if len(means) != len(stds):
        raise ValueError(
            f"{mean_name}={means}, {std_name}={stds}: need the same number of values, one per "
            "input channel"
        )
    bad = [s for s in stds if s <= 0]
    if bad:
        raise ValueError(f"{std_name}={stds}: every value must be > 0, got {bad[0]}")
    if channels is not None and len(means) not in (1, channels):
        raise ValueError(
            f"{mean_name}={means}, {std_name}={stds}: the inputs have {channels} channels; give "
            f"{channels} values each (or one for all)"
        )
    if channels is not None and len(means) == 1:
        means, stds = means * channels, stds * channels
    return means, stds


def _per_channel(name: str, value: object) -> list[float]:
    if hasattr(value, "tolist") and not is_number(value):  # a numpy array or a tensor
        value = value.tolist()
    if is_number(value):
        values = [value]
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name}={_show(value)}: must be a number or a list of numbers (one per channel), "
            f"got {type(value).__name__}"
        )
    else:
        values = list(value)
    if not values:
        raise ValueError(f"{name}=[]: give one value per input channel")
    return [check_float(name, v) for v in values]  # type: ignore[misc]


def _range_words(kind: str, minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"{kind} >= {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind
