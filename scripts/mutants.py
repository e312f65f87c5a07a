"""Apply hand-made mutants of the package one at a time and check that the tests catch each.

A mutant is a plausible one-line bug: a file, the exact text to replace (it must occur
once), the replacement, and the tests that should fail. For each mutant this script
edits the file, runs those tests with pytest, records whether they failed ("caught"),
and puts the file back, also when pytest crashes or the run is interrupted.

    python scripts/mutants.py            # all mutants, a table at the end
    python scripts/mutants.py --list     # names only
    python scripts/mutants.py eigencam   # the mutants whose name contains "eigencam"

Exit status: 0 when every mutant run was caught, 1 otherwise, 2 when the tests fail
without any mutant.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gradcam_callback"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (old text, new text); each old text occurs once
    tests: tuple[str, ...]
    origin: str = "issue 9"  # "issue 9": a survivor listed in the issue; "new": added here


def edit(name: str, file: str, old: str, new: str, *tests: str, origin: str = "issue 9"
         ) -> Mutant:
    return Mutant(name, file, ((old, new),), tests, origin)


CONTENT = "tests/test_content.py::"
LAYOUT = "tests/test_layout.py::"

MUTANTS = [
    # ----- the nine callback survivors of issue 9 ------------------------------------------
    Mutant("drift and drift_from_start swapped", "lightning/history.py",
           (('drift["drift"] = attention_drift(self.runs[-1]',
             'drift["drift"] = attention_drift(self.runs[0]'),
            ('drift["drift_from_start"] = attention_drift(self.runs[0]',
             'drift["drift_from_start"] = attention_drift(self.runs[-1]')),
           (CONTENT + "test_drift_is_against_the_previous_run_and_drift_from_start_against_the"
            "_first",)),
    edit("red frame drawn on correct predictions", "render/captions.py",
         "wrong[i] = int(predicted[i]) != int(labels[i])",
         "wrong[i] = int(predicted[i]) == int(labels[i])",
         CONTENT + "test_red_frames_are_on_the_wrong_predictions_only",
         CONTENT + "test_captions_name_the_classes_with_class_names_and_indices_without"),
    edit("target='both' explains the prediction twice", "lightning/callback.py",
         'self._targets("label", labels), **common)',
         'self._targets("predicted", labels), **common)',
         CONTENT + "test_target_both_rows_are_the_predicted_and_the_label_maps"),
    edit("mean/std ignored for display", "lightning/callback.py",
         "to_display(samples.inputs, self.mean, self.std)", "to_display(samples.inputs)",
         CONTENT + "test_the_input_row_is_x_times_std_plus_mean"),
    edit("class_names ignored", "lightning/callback.py",
         "samples.labels,\n                                                  self.class_names)",
         "samples.labels,\n                                                  None)",
         CONTENT + "test_the_logged_captions_are_the_class_names"),
    edit("the filmstrip drops the last run", "lightning/history.py",
         "round(i * (count - 1) / (limit - 1))", "round(i * (count - 1) / limit)",
         CONTENT + "test_the_filmstrip_keeps_evenly_spaced_runs_first_and_last",
         CONTENT + "test_evenly_spaced_always_keeps_the_first_and_the_last"),
    edit("fallback files written with TensorBoard present", "lightning/sinks.py",
         "elif _run_directory(logger) is not None:", "if _run_directory(logger) is not None:",
         LAYOUT + "test_each_logger_kind_gets_its_sink",
         CONTENT + "test_with_lightnings_defaults_only_tensorboard_and_checkpoint_files_appear"),
    edit("every_n_epochs applied in trainer.validate()", "lightning/callback.py",
         "return fitting and (trainer.current_epoch + 1)", "return (trainer.current_epoch + 1)",
         CONTENT + "test_every_n_epochs_does_not_apply_to_trainer_validate"),
    edit("the callback-level RNG restore removed", "lightning/callback.py",
         "with preserved_rng_state(pl_module.device):", "if True:",
         "tests/test_callback.py::test_training_is_bit_identical_with_and_without_the_callback"),
    # ----- the seven engine survivors of issue 9 -------------------------------------------
    edit("eigencam's sign convention flipped", "engine/methods.py",
         "torch.where(agreement < 0, -1.0, 1.0)", "torch.where(agreement < 0, 1.0, -1.0)",
         "tests/test_cam.py::test_eigencam_is_high_where_the_layer_is_most_active"),
    edit("in-place-safety clone removed (eigencam)", "engine/capture.py",
         "kept = output.detach().clone()", "kept = output.detach()",
         "tests/test_cam.py::test_eigencam_reads_the_layer_output_as_it_left_the_layer"),
    edit("the model itself chosen by auto-detection", "engine/layers.py",
         "            if name:\n                handles.append(",
         "            if True:\n                handles.append(",
         "tests/test_cam.py::test_auto_detection_never_picks_the_model_itself"),
    edit("bool tensors accepted as class targets", "engine/targets.py",
         "dtype.is_complex or dtype == torch.bool:", "dtype.is_complex:",
         "tests/test_cam.py::test_bools_are_not_class_targets"),
    edit("border_mask loses its 1-px minimum", "metrics.py",
         "max(1, round(height * fraction)), max(1, round(width * fraction))",
         "round(height * fraction), round(width * fraction)",
         "tests/test_metrics.py::test_the_border_is_at_least_one_pixel_wide"),
    edit("colormap LUT truncates instead of rounding", "render/colormap.py",
         "* 255).round().long()", "* 255).long()",
         "tests/test_render.py::test_heatmap_rounds_to_the_nearest_colour_table_entry"),
    edit("display min-max over the batch, not per image", "render/overlay.py",
         "min_max(images, start_dim=0 if joint else 1)", "min_max(images, start_dim=0)",
         "tests/test_render.py::test_to_display_scales_each_image_on_its_own_unless_joint"),
    # ----- new parts of the layout -----------------------------------------------------------
    edit("_checks: a bool passes as an int", "_checks.py",
         "if isinstance(value, bool) or not isinstance(value, numbers.Integral):\n"
         "        raise TypeError(f\"{name}={_show(value)}: must be {valid}",
         "if not isinstance(value, numbers.Integral):\n"
         "        raise TypeError(f\"{name}={_show(value)}: must be {valid}",
         LAYOUT + "test_bools_are_not_numbers_and_numpy_scalars_are", origin="new"),
    edit("_checks: NaN and infinity pass as numbers", "_checks.py",
         "if not math.isfinite(number) or too_low", "if too_low",
         LAYOUT + "test_non_finite_numbers_are_rejected", origin="new"),
    edit("_checks: numpy scalars rejected", "_checks.py",
         "return isinstance(value, numbers.Real) and not isinstance(value, bool)",
         "return isinstance(value, (int, float)) and not isinstance(value, bool)",
         LAYOUT + "test_bools_are_not_numbers_and_numpy_scalars_are", origin="new"),
    edit("_checks: a string passes as a list", "_checks.py",
         "if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):",
         "if not isinstance(value, Sequence):",
         LAYOUT + "test_strings_are_not_lists", origin="new"),
    edit("ops.min_max: a constant map becomes ones", "ops.py",
         "torch.where(span > 0, scaled, 0.0)", "torch.where(span > 0, scaled, 1.0)",
         LAYOUT + "test_min_max_scales_each_sample_on_its_own_and_constant_maps_become_zero",
         origin="new"),
    edit("ops.min_max: one minimum for the whole batch", "ops.py",
         "low = flat.amin(dim=-1).view(shape)", "low = flat.amin().expand(shape[0]).view(shape)",
         LAYOUT + "test_min_max_scales_each_sample_on_its_own_and_constant_maps_become_zero",
         origin="new"),
    edit("sinks: image_dir ignored", "lightning/sinks.py",
         "if image_dir is not None:\n        sinks.append(", "if False:\n        sinks.append(",
         LAYOUT + "test_each_logger_kind_gets_its_sink", origin="new"),
    edit("sinks: other writers never get add_image", "lightning/sinks.py",
         "if not isinstance(writer, SummaryWriter):", "if False:",
         LAYOUT + "test_other_tensorboard_writers_get_add_image", origin="new"),
    edit("samples: bool labels shown as classes", "lightning/samples.py",
         "and not labels.dtype.is_floating_point and labels.dtype != torch.bool):",
         "and not labels.dtype.is_floating_point):",
         LAYOUT + "test_only_1d_integer_labels_are_shown_as_classes", origin="new"),
    edit("samples: a soft mask's 0.5 counts as inside", "lightning/samples.py",
         ".float() > MASK_THRESHOLD", ".float() >= MASK_THRESHOLD",
         LAYOUT + "test_soft_masks_count_above_one_half_and_bad_discovered_keys_are_skipped",
         origin="new"),
    edit("history.fit_to keeps maps of fewer samples", "lightning/history.py",
         "if self.runs[0].shape[0] != count:", "if self.runs[0].shape[0] < count:",
         LAYOUT + "test_history_fit_to_resizes_a_new_image_size_and_clears_a_new_sample_count",
         origin="new"),
    edit("engine chunking: every chunk gets the first chunk's targets", "engine/cam.py",
         "targets.dim() == 1 and len(targets) == count:\n        return targets[chunk]",
         "targets.dim() == 1 and len(targets) == count:\n"
         "        return targets[: chunk.stop - chunk.start]",
         LAYOUT + "test_explaining_in_chunks_gives_the_same_maps_and_logits", origin="new"),
    edit("engine: targets made under inference mode used as they are", "engine/targets.py",
         "return classes.clone() if classes.is_inference() else classes", "return classes",
         "tests/test_cam.py::test_targets_made_under_inference_mode_work", origin="new"),
]


def pytest(python: str, tests: tuple[str, ...] | list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
         "-o", "addopts=", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else result.stderr.strip()[-200:]


def run_mutant(mutant: Mutant, python: str) -> tuple[str, float, str]:
    """Apply, test, restore. Returns (verdict, seconds, the last line pytest printed).

    The verdict is "caught" when a test failed (pytest's exit status 1), "survived" when
    all passed, and "error" for anything else (a test id that does not exist, say): an
    error never counts as caught.
    """
    path = ROOT / PACKAGE / mutant.file
    original = path.read_bytes()
    text = original.decode()
    for old, new in mutant.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"{mutant.name}: {old!r} occurs {count} times in {path}; the "
                             "mutant no longer fits the code, update it")
        text = text.replace(old, new)
    start = time.perf_counter()
    try:
        path.write_text(text)
        result = pytest(python, mutant.tests)
    finally:
        path.write_bytes(original)
    verdict = {0: "survived", 1: "caught"}.get(result.returncode, "error")
    return verdict, time.perf_counter() - start, last_line(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("match", nargs="?", default="", help="run mutants whose name has this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--python", default=sys.executable, help="the interpreter for pytest")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.match.lower() in m.name.lower()]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.origin:8}  {mutant.name}  ({mutant.file})")
        return 0
    # the tests must pass on the unmutated package, or a failure says nothing
    baseline = pytest(args.python, sorted({t for m in chosen for t in m.tests}))
    if baseline.returncode != 0:
        print(f"the tests fail without any mutant: {last_line(baseline)}\n{baseline.stdout}")
        return 2
    print(f"baseline: {last_line(baseline)}", flush=True)
    rows = []
    for mutant in chosen:
        verdict, seconds, summary = run_mutant(mutant, args.python)
        tests = ", ".join(t.split("::")[-1] for t in mutant.tests)
        rows.append((mutant, verdict, tests))
        print(f"{verdict.upper():8} {seconds:5.0f}s  {mutant.name}  [{summary}]", flush=True)
    print("\n| mutant | origin | file | verdict | tests |\n|---|---|---|---|---|")
    for mutant, verdict, tests in rows:
        shown = verdict if verdict == "caught" else f"**{verdict}**"
        print(f"| {mutant.name} | {mutant.origin} | `{mutant.file}` | {shown} | {tests} |")
    caught = sum(verdict == "caught" for _, verdict, _ in rows)
    print(f"\n{caught} of {len(rows)} caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
