"""The callback's work on one run, without Lightning: check, measure, show, remember.

:class:`Observer` holds the collaborators (the fixed samples, the explainer, the
statistics, the pictures, the history) and does, when the callback says so:

- :meth:`~Observer.check`: the whole pipeline once on the fixed samples, nothing logged
  (the check before training);
- :meth:`~Observer.measure`: the many-sample statistics, this rank's share, added up
  over ranks, with the alarms;
- :meth:`~Observer.show`: explain the fixed samples, draw and send the pictures, extend
  the history, and return the scalars to log;
- :meth:`~Observer.filmstrip`: the filmstrip of the runs so far;
- :meth:`~Observer.sanity`: the sanity check at the end of fit (:mod:`.sanity`).

What it needs of the trainer comes in as plain values (a :class:`Run`, the dataloaders,
the collectives), so every part runs and is tested without a ``Trainer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from gradcam_callback.checkpoint import load_state, save_state
from gradcam_callback.engine.targets import TargetSpec
from gradcam_callback.explainer import Explained, Explainer
from gradcam_callback.guard import STATISTICS_STEP
from gradcam_callback.history import History
from gradcam_callback.metrics import attention_scalars
from gradcam_callback.monitors import FIRST_RUN_UNDEFINED, check_monitors
from gradcam_callback.notices import Notices
from gradcam_callback.options import CallbackOptions
from gradcam_callback.pictures import Pictures, Sinks
from gradcam_callback.render import run_header
from gradcam_callback.render.run import Renderer
from gradcam_callback.samples import FixedSamples, SampleReader, SampleStore
from gradcam_callback.sanity import SanityResult, sanity_check
from gradcam_callback.statistics import Collectives, StatisticsResult, StatisticsRunner
from gradcam_callback.statistics.accumulator import no_value_cause
from gradcam_callback.tasks import Task

__all__ = ["Observer", "Run"]

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class Run:
    """One run of the callback, as the trainer describes it.

    Attributes:
        stage: ``"validate"`` or ``"test"``: whose samples are explained.
        epoch: ``trainer.current_epoch``.
        step: ``trainer.global_step`` (pictures and scalars are logged at it).
        fitting: whether ``trainer.fit()`` runs (validation runs then extend the history).
        prepare: CPU inputs -> model inputs (the model's device and precision).
    """

    stage: str
    epoch: int
    step: int
    fitting: bool
    prepare: Callable[[Tensor], Tensor]

    @property
    def extends_history(self) -> bool:
        return self.fitting and self.stage == "validate"

    def describe(self) -> str:
        """The run in words, for reports: ``"the run at epoch 3 (step 120)"``."""
        if self.fitting:
            return f"the run at epoch {self.epoch} (step {self.step})"
        return f"the {self.stage} run (step {self.step})"


class Observer:
    """The callback's collaborators, and what it does with them on each run.

    Args:
        options: the validated options.
        notices: where every warning and note goes.
        sinks: where the pictures go.
        progress: told what is being done (the failure policy's report names it).
    """

    def __init__(self, options: CallbackOptions, notices: Notices, sinks: Sinks,
                 progress: Progress) -> None:
        self.options = options
        self.notices = notices
        self.progress = progress
        self.samples = SampleStore(SampleReader(options.samples), notices)
        self.explainer = Explainer(options.explaining, notices)
        self.statistics = StatisticsRunner(options.statistics, notices)
        self.pictures = Pictures(Renderer(options.pictures), sinks, notices, progress)
        self.history = History()
        self.last_metrics: dict[str, float] = {}

    def configure(self, options: CallbackOptions) -> None:
        """New options, for every collaborator at once; samples or maps that the change
        makes incomparable are read again and start a new history."""
        old, self.options = self.options, options
        self.samples.reader = SampleReader(options.samples)
        self.explainer.options = options.explaining
        self.statistics.options = options.statistics
        self.pictures.renderer = Renderer(options.pictures)
        if options.samples != old.samples:
            self.samples.forget()
        # the chunk size and the multi-label threshold change no map
        same_maps = (replace(options.explaining, batch_size=0, threshold=0.5)
                     == replace(old.explaining, batch_size=0, threshold=0.5))
        if not same_maps:
            self.explainer.forget()
        elif options.explaining.threshold != old.explaining.threshold:
            self.explainer.task = None  # read again, with the new threshold
        if not same_maps or options.samples.identity() != old.samples.identity():
            self.history.clear()

    def new_fit(self, restored: bool) -> int | None:
        """A fit starts; without a restored checkpoint, with a new history. Returns the
        last step the history has (explained already: a resumed fit does not repeat it)."""
        if not restored:
            self.history.clear()
            self.samples.restored_indices = None
        return self.history.steps[-1] if self.history.steps else None

    def prefix(self, stage: str) -> str:
        """``gradcam/<layer>/`` (``gradcam/<layer>/test/`` for the test stage)."""
        return f"gradcam/{self.explainer.layer_name}/" + ("" if stage == "validate"
                                                         else f"{stage}/")

    def check(self, model: nn.Module, loaders: Any, run: Run, *, provisional: bool,
              monitors: Iterable[object] = (), steps_per_validation: float = 1.0) -> None:
        """Fail fast: read, explain, draw, encode and measure the fixed samples once, and
        the statistics on their first chunk; nothing is logged or kept but the samples.
        In a fit, a strict monitor of a scalar that a run would leave out fails too
        (:func:`~gradcam_callback.monitors.check_monitors`; ``steps_per_validation``:
        the optimizer steps between two validations, against ``every_n_steps``).

        Raises:
            Exception: whatever would fail at the first run, with its own message.
        """
        samples = self.samples.get(run.stage, loaders, provisional=provisional)
        explained = self._explain(model, samples, run)
        self.pictures.check(samples, explained, filmstrip=run.fitting)
        published, undefined = _scalars(explained, samples, None)
        names = {*published, *undefined}  # a run without statistics publishes these
        if self.statistics.enabled:
            result, complete = self.statistics.check(
                model, self.explainer, self.samples,
                self.samples.loader_for(run.stage, loaders), run.stage, run.prepare)
            if result is not None:  # a run with statistics publishes these (and names)
                names |= {*result.scalars, *result.undefined, "metric_samples"}
                undefined = _undefined_before_training(result, names) if complete else {}
        if run.fitting:
            check_monitors(monitors, self.prefix(run.stage), names | set(FIRST_RUN_UNDEFINED),
                           undefined, every_n_epochs=self.options.run.every_n_epochs,
                           every_n_steps=self.options.run.every_n_steps,
                           steps_per_validation=steps_per_validation)

    def measure(self, model: nn.Module, loaders: Any, run: Run, *,
                collectives: Collectives | None) -> tuple[StatisticsResult | None, bool]:
        """This rank's share of the statistics, added up over all ranks (every rank calls
        it); returns them (``None`` with ``metric_samples=0``) and whether an alarm asks
        training to stop (the same answer on every rank)."""
        if not self.statistics.enabled:
            return None, False
        self.progress(STATISTICS_STEP, "")
        result = self.statistics.run(model, self.explainer, self.samples, loaders, run.stage,
                                     run.prepare, collectives=collectives)
        self.statistics.report_undefined(result.undefined, self.prefix(run.stage),
                                         epoch=run.epoch)
        return result, self.statistics.sound_alarms(result, epoch=run.epoch, step=run.step)

    def show(self, model: nn.Module, loaders: Any, run: Run,
             statistics: StatisticsResult | None, *, provisional: bool = False
             ) -> dict[str, float]:
        """Rank zero's part of a run: explain the fixed samples, draw the grid, extend the
        history, log the scalars, send the class maps and the grid; returns the scalars
        logged (by tag)."""
        prefix = self.prefix(run.stage)
        self.progress("reading the samples", "")
        samples = self.samples.get(run.stage, loaders, provisional=provisional)
        explained = self._explain(model, samples, run)
        grid = self.pictures.draw_grid(samples, explained, header=run_header(
            run.epoch, run.step, None if run.stage == "validate" else run.stage))
        self.pictures.keep(grid)
        self.progress("measuring", "")
        metrics, undefined = _scalars(explained, samples, statistics)
        self.statistics.report_undefined(undefined, prefix, epoch=run.epoch)
        if run.extends_history and bool(explained.finite.all()):
            metrics.update(self.history.add(explained.maps, run.epoch, run.step))
        self.last_metrics = {prefix + name: value for name, value in metrics.items()}
        self.progress("logging scalars", "")
        # epoch in the same call, as Lightning logs it: CSV rows then carry their epoch
        self.pictures.sinks.log_scalars({**self.last_metrics, "epoch": run.epoch}, run.step)
        # pictures last: a sink that fails (a full disk) costs neither the scalars nor the
        # drift history; then the advice, tried once (a probe that fails costs one run)
        if statistics is not None and statistics.count:
            self.pictures.send_class_maps(statistics, samples, prefix + "class_maps", run.step,
                                          explained.task)
        self.pictures.send_grid(grid, prefix + "overlay", run.step)
        if statistics is not None and statistics.count:
            self.statistics.advise_on_coarse_maps(model, statistics, samples,
                                                  self.explainer.layer_name, run.prepare)
        return self.last_metrics

    def filmstrip(self, loaders: Any, step: int) -> Tensor | None:
        """The filmstrip of the validation runs so far, sent at ``step``; ``None`` before
        any run."""
        if not len(self.history):
            return None
        self.progress("reading the samples", "")
        samples = self.samples.get("validate", loaders)
        layer = self.explainer.layer_name
        task = self.explainer.task or Task()
        return self.pictures.send_filmstrip(
            samples, self.history, tag=f"gradcam/{layer}/filmstrip", step=step,
            by_step=self.options.run.every_n_steps is not None, gif_prefix=str(layer),
            sample_labels=task.sample_labels(samples.labels, len(samples.indices),
                                             samples.class_names))

    def sanity(self, model: nn.Module, loaders: Any, run: Run) -> SanityResult | None:
        """The sanity check on the fixed validation samples: their maps, for the targets
        the trained model explains, against those of the model with its head
        re-initialised (and restored); the scalars logged at ``run.step``, a warning when
        the maps barely change. ``None`` with ``sanity_layers=0`` or before any run."""
        layers = self.options.statistics.sanity_layers
        if not layers or self.explainer.task is None:
            return None
        self.progress("the sanity check", "")
        samples = self.samples.get("validate", loaders)
        inputs = run.prepare(samples.inputs)
        explained = self._explain(model, samples, run)
        options, task = self.explainer.options, self.explainer.task
        targets: TargetSpec = explained.explained  # what the trained model explains
        if targets is None and callable(options.target) and not isinstance(options.target,
                                                                              str):
            targets = options.target  # the user's own score
        elif task.name == "regression":  # one output for every sample
            targets = options.target if isinstance(options.target, int) else None

        def explain(net: nn.Module, x: Tensor) -> Tensor:
            return self.explainer.layer_maps(net, x, targets, task.name).cams

        result = sanity_check(model, inputs, explain, layers=layers)
        scalars = {self.prefix("validate") + k: v for k, v in result.scalars().items()}
        if scalars:
            self.pictures.sinks.log_scalars(scalars, run.step)
        self.last_metrics = {**self.last_metrics, **scalars}
        warning = result.warning()
        if warning is not None:
            self.notices.warn_once("sanity", f"GradCAMCallback: {warning}.")
        return result

    def state_dict(self) -> dict[str, Any]:
        return save_state(self.explainer, self.samples, self.history)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state(state, self.explainer, self.samples, self.history, self.notices)

    def _explain(self, model: nn.Module, samples: FixedSamples, run: Run) -> Explained:
        self.progress("explaining", "")
        return self.explainer.explain(model, run.prepare(samples.inputs), samples.labels,
                                      label_note=samples.label_note, indices=samples.indices)


def _undefined_before_training(result: StatisticsResult, names: set[str]) -> dict[str, str]:
    """What the check's statistics (all of the metric samples) leave undefined; every name
    when no sample had a finite output."""
    if result.count:
        return dict(result.undefined)
    cause = "every output was NaN or infinite"
    return {name: cause for name in names if name != "metric_samples"}


def _scalars(explained: Explained, samples: FixedSamples,
             statistics: StatisticsResult | None) -> tuple[dict[str, float], dict[str, str]]:
    """The run's scalars, and the undefined ones with their causes: the statistics', else
    means over the shown samples with finite outputs (undefined values left out)."""
    if statistics is not None:
        return {**statistics.scalars, "metric_samples": float(statistics.count)}, {}
    keep = explained.finite
    masks = {name: mask[keep] for name, mask in {**samples.masks, **explained.regions}.items()}
    scalars, undefined = {}, {}
    for name, values in attention_scalars(explained.maps[keep], masks).items():
        defined = values[~values.isnan()]
        if len(defined):
            scalars[name] = defined.float().mean().item()
        else:
            undefined[name] = no_value_cause(name)
    return scalars, undefined
