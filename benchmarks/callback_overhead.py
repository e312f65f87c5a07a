"""What the callback costs a training run (issue goal 3).

The demo's workload (examples/shortcut_learning.py: a small CNN on 1536 generated 64x64
images, 256 validation images), fit for a few epochs without ``GradCAMCallback``, with it
at its defaults (the many-sample statistics explain ``metric_samples=256`` validation
images per run) and with ``metric_samples=0`` (the 8 shown samples only), alternating;
then one run with timers around each step of an invocation.

    python benchmarks/callback_overhead.py [--device cuda] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

from _common import machine, parse_args, table, verdict
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from gradcam_callback import GradCAMCallback
from gradcam_callback.history import History
from gradcam_callback.observer import Observer
from gradcam_callback.pictures import Pictures
from gradcam_callback.render.run import Renderer
from gradcam_callback.samples import SampleStore
from gradcam_callback.statistics import runner as statistics_runner
from gradcam_callback.synthetic import ShortcutShapes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shortcut_learning.py"
EPOCHS = 3
TIMED = {
    "log_cams": (GradCAMCallback, "log_cams"),
    "log_filmstrip": (GradCAMCallback, "log_filmstrip"),
    "samples": (SampleStore, "get"),
    "statistics": (Observer, "measure"),
    "explain": (Observer, "_explain"),
    "grid": (Renderer, "grid_pages"),
    "class_maps": (Pictures, "send_class_maps"),
    "send_grid": (Pictures, "send_grid"),
    "remember": (History, "add"),
    "faithfulness": (statistics_runner, "faithfulness_values"),
    "sanity": (GradCAMCallback, "sanity_check"),
}
"""Key -> (class, method) timed in the breakdown (tests/test_benchmarks.py checks they exist)."""


def load_model_class():
    spec = importlib.util.spec_from_file_location("shortcut_learning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SmallCNN


def fit_seconds(model_class, callbacks, log_dir: str, device: str, epochs: int = EPOCHS
                ) -> float:
    seed_everything(0, verbose=False)
    train = DataLoader(ShortcutShapes(1536, seed=1), batch_size=64, shuffle=True)
    val = DataLoader(ShortcutShapes(256, seed=2, shortcut_prob=0.0), batch_size=128)
    trainer = Trainer(max_epochs=epochs, callbacks=callbacks, logger=TensorBoardLogger(log_dir),
                      accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, num_sanity_val_steps=0, log_every_n_steps=10)
    start = time.perf_counter()
    trainer.fit(model_class(), train, val)
    return time.perf_counter() - start


def timed(spent: dict[str, list[float]], key: str, method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[key].append(time.perf_counter() - start)

    return wrapper


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=5)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    model_class = load_model_class()
    print(f"Machine: {machine(args)}")
    print(f"Workload: the demo's, {EPOCHS} epochs; median of {args.rounds} alternating rounds\n")

    with TemporaryDirectory() as tmp:
        fit_seconds(model_class, [], tmp, args.device)  # warm-up: imports, allocator, threads
        runs: dict[str, list[float]] = {"without": [], "defaults": [], "shown only": []}
        for _ in range(args.rounds):
            runs["without"].append(fit_seconds(model_class, [], tmp, args.device))
            runs["defaults"].append(fit_seconds(model_class, [GradCAMCallback("features")],
                                                tmp, args.device))
            runs["shown only"].append(fit_seconds(
                model_class, [GradCAMCallback("features", metric_samples=0)], tmp, args.device))
        median = {name: statistics.median(times) for name, times in runs.items()}

        spent: dict[str, list[float]] = defaultdict(list)
        originals = {key: getattr(owner, name) for key, (owner, name) in TIMED.items()}
        for key, (owner, name) in TIMED.items():
            setattr(owner, name, timed(spent, key, originals[key]))
        try:  # more epochs: more invocations for the breakdown
            fit_seconds(model_class, [GradCAMCallback("features")], tmp, args.device, epochs=8)
        finally:
            for key, (owner, name) in TIMED.items():
                setattr(owner, name, originals[key])

    def ms(key: str) -> float:
        return 1e3 * statistics.median(spent[key]) if spent[key] else 0.0

    # The callback's own time in a fit of EPOCHS epochs, against the fit without it: the
    # fit-time ratios above are the honest end-to-end numbers but only as exact as the
    # run-to-run noise allows; these isolate what the callback adds.
    own = EPOCHS * ms("log_cams") / 1e3 + (ms("log_filmstrip") + ms("sanity")) / 1e3
    own_shown = own - EPOCHS * ms("statistics") / 1e3
    without = median["without"]
    spread = (max(runs["without"]) - min(runs["without"])) / without
    rows = []
    for name, seconds in (("defaults", own), ("shown only", own_shown)):
        setting = "at its defaults" if name == "defaults" else "metric_samples=0"
        ratio, own_ratio = median[name] / without, 1 + seconds / without
        rows += [(f"fit with callback ({setting}) / without", f"{ratio:.3f}", "<= 1.03",
                  verdict(ratio, 1.03), f"{median[name]:.2f} s / {without:.2f} s "
                  f"(run-to-run spread {spread:.0%})"),
                 (f"1 + callback's own time ({setting}) / fit without", f"{own_ratio:.3f}",
                  "<= 1.03", verdict(own_ratio, 1.03),
                  f"{seconds * 1e3:.0f} ms in {EPOCHS} epochs")]
    print(table(rows, ("measure", "value", "goal", "", "times")))
    parts = {
        "fixed-batch fetch (first run only)": ms("samples"),
        "many-sample statistics (256 samples, every rank)": ms("statistics"),
        "CAM of the shown samples (forward + autograd.grad)": ms("explain"),
        "drift history": ms("remember"),
        "rendering (annotated grid)": ms("grid"),
        "class maps picture (drawn and logged)": ms("class_maps"),
        "logging the grid": ms("send_grid"),
    }
    rest = ms("log_cams") - sum(parts.values()) + parts["fixed-batch fetch (first run only)"]
    print(f"\nOne invocation (median of {len(spent['log_cams'])}), 8 samples shown at 64x64:")
    breakdown = [(name, f"{value:.1f} ms") for name, value in parts.items()]
    # faithfulness runs once per statistics chunk (the first chunk holds its samples), and
    # in the check before training too: its total over the runs and the check
    runs_and_check = len(spent["log_cams"]) + 1
    faithful = 1e3 * sum(spent["faithfulness"]) / runs_and_check
    breakdown += [("other (scalars, captions, RNG, device moves)", f"{max(rest, 0):.1f} ms"),
                  ("total per invocation", f"{ms('log_cams'):.1f} ms"),
                  ("  of which faithfulness (24 samples, in the statistics)",
                   f"{faithful:.1f} ms"),
                  ("filmstrip at the end of fit (once)", f"{ms('log_filmstrip'):.1f} ms"),
                  ("sanity check at the end of fit (once)", f"{ms('sanity'):.1f} ms")]
    print(table(breakdown, ("step", "time")))


if __name__ == "__main__":
    main()
