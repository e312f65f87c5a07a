"""Caption text for explained samples: true class, predicted class and its probability."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["class_name", "prediction_captions", "run_header", "sample_title"]


def class_name(index: int, class_names: Sequence[str] | None) -> str:
    """``class_names[index]`` when there is one, else the index as text."""
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)


def prediction_captions(
    logits: Tensor, labels: Tensor | None, class_names: Sequence[str] | None = None
) -> tuple[list[list[str]], list[bool]]:
    """Per sample, caption lines and whether the prediction is wrong.

    Lines: ``"true: <class>"`` when ``labels`` are given, and ``"pred: <class> <p>"`` when
    the logits are ``(N, classes)`` (``p`` the softmax probability, two decimals;
    ``"pred: output not finite"`` for NaN or infinite logits). A sample is wrong when both
    are known and differ. The multiclass task's captions; the other tasks' are
    :meth:`gradcam_callback.tasks.Task.captions`.

    Example::

        >>> import torch
        >>> prediction_captions(torch.tensor([[0.0, 2.0]]), torch.tensor([0]), ["cat", "dog"])
        ([['true: cat', 'pred: dog 0.88']], [True])
    """
    from gradcam_callback.tasks import Task  # (tasks use class_name from here)

    return Task("multiclass").captions(logits, labels, class_names)


def sample_title(index: int, label: int | str | None,
                 class_names: Sequence[str] | None = None) -> str:
    """A fixed sample's name: its dataset index and, when known, its label (a class index,
    named by ``class_names``, or the task's words for it).

    Example::

        >>> sample_title(3, 1, ["cat", "dog"])
        '#3 dog'
        >>> sample_title(3, "red, blue"), sample_title(3, None)
        ('#3 red, blue', '#3')
    """
    if label is None or label == "":
        return f"#{index}"
    text = label if isinstance(label, str) else class_name(int(label), class_names)
    return f"#{index} {text}"


def run_header(epoch: int, step: int, stage: str | None = None) -> str:
    """The header line of a logged picture: when it was taken.

    Example::

        >>> run_header(3, 120)
        'epoch 3 · step 120'
        >>> run_header(3, 120, "test")
        'test · epoch 3 · step 120'
    """
    when = f"epoch {epoch} · step {step}"
    return f"{stage} · {when}" if stage else when
