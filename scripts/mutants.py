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
    origin: str = "issue 9"  # "issue 9": a survivor listed there; "layout", "issue 17": later


def edit(name: str, file: str, old: str, new: str, *tests: str, origin: str = "issue 9"
         ) -> Mutant:
    return Mutant(name, file, ((old, new),), tests, origin)


def part(name: str, file: str, old: str, new: str, *tests: str) -> Mutant:
    """A mutant of the collaborators issue 17 made."""
    return edit(name, file, old, new, *tests, origin="issue 17")


CONTENT = "tests/test_content.py::"
LAYOUT = "tests/test_layout.py::"
PARTS = "tests/test_parts.py::"
RECOMPOSED = "tests/test_recomposed.py::"
ROBUST = "tests/test_robustness.py::"
TASKS = "tests/test_tasks.py::"

MUTANTS = [
    # ----- the callback survivors of issue 9, in the parts they live in now ---------------
    Mutant("drift and drift_from_start swapped", "history.py",
           (('drift["drift"] = attention_drift(self.runs[-1]',
             'drift["drift"] = attention_drift(self.runs[0]'),
            ('drift["drift_from_start"] = attention_drift(self.runs[0]',
             'drift["drift_from_start"] = attention_drift(self.runs[-1]')),
           (CONTENT + "test_drift_is_against_the_previous_run_and_drift_from_start_against_the"
            "_first",)),
    edit("red frame drawn on correct predictions", "tasks.py",
         "label is not None and k != int(label))",
         "label is not None and k == int(label))",
         CONTENT + "test_red_frames_are_on_the_wrong_predictions_only",
         CONTENT + "test_captions_name_the_classes_with_class_names_and_indices_without"),
    edit("target='both' explains the prediction twice", "explainer.py",
         'task.target("label", task_labels, note)',
         'task.target("predicted", task_labels, note)',
         CONTENT + "test_target_both_rows_are_the_predicted_and_the_label_maps"),
    edit("mean/std ignored for display", "render/run.py",
         "to_display(samples.inputs, display.mean, display.std, joint=display.joint)",
         "to_display(samples.inputs, joint=display.joint)",
         CONTENT + "test_the_input_row_is_x_times_std_plus_mean"),
    edit("class_names ignored in the captions", "pictures.py",
         "samples.class_names, explained.explained)",
         "None, explained.explained)",
         CONTENT + "test_the_logged_captions_are_the_class_names"),
    edit("the filmstrip drops the last run", "history.py",
         "round(i * (count - 1) / (limit - 1))", "round(i * (count - 1) / limit)",
         CONTENT + "test_the_filmstrip_keeps_evenly_spaced_runs_first_and_last",
         CONTENT + "test_evenly_spaced_always_keeps_the_first_and_the_last"),
    edit("fallback files written for a TensorBoard logger", "lightning/sinks.py",
         "        return TensorBoardSink(logger, image_format)\n",
         "        pass\n",
         LAYOUT + "test_each_logger_kind_gets_its_sink"),
    edit("every_n_epochs applied in trainer.validate()", "lightning/callback.py",
         "api.fitting(trainer) and (trainer.current_epoch + 1) % every_n_epochs != 0",
         "(trainer.current_epoch + 1) % every_n_epochs != 0",
         CONTENT + "test_every_n_epochs_does_not_apply_to_trainer_validate"),
    edit("the callback-level RNG restore removed", "lightning/callback.py",
         "with preserved_rng_state(pl_module.device), self._guard.attempt(run.describe()):",
         "with self._guard.attempt(run.describe()):",
         "tests/test_callback.py::test_training_is_bit_identical_with_and_without_the_callback"),
    # ----- the engine survivors of issue 9 ---------------------------------------------------
    edit("eigencam's sign convention flipped", "engine/methods.py",
         "torch.where(agreement < 0, -1.0, 1.0)", "torch.where(agreement < 0, 1.0, -1.0)",
         "tests/test_cam.py::test_eigencam_is_high_where_the_layer_is_most_active"),
    edit("in-place-safety clone removed (eigencam)", "engine/capture.py",
         "kept = output.detach().clone()", "kept = output.detach()",
         "tests/test_cam.py::test_eigencam_reads_the_layer_output_as_it_left_the_layer"),
    edit("the model itself chosen by auto-detection", "engine/layers.py",
         "if not name or isinstance(getattr(module, _COMPILED_PREFIX, None), nn.Module):",
         "if isinstance(getattr(module, _COMPILED_PREFIX, None), nn.Module):",
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
    # ----- shared helpers ------------------------------------------------------------------
    edit("_checks: a bool passes as an int", "_checks.py",
         "if isinstance(value, bool) or not isinstance(value, numbers.Integral):\n"
         "        raise TypeError(f\"{name}={_show(value)}: must be {valid}",
         "if not isinstance(value, numbers.Integral):\n"
         "        raise TypeError(f\"{name}={_show(value)}: must be {valid}",
         LAYOUT + "test_bools_are_not_numbers_and_numpy_scalars_are", origin="layout"),
    edit("_checks: NaN and infinity pass as numbers", "_checks.py",
         "if not math.isfinite(number) or too_low", "if too_low",
         LAYOUT + "test_non_finite_numbers_are_rejected", origin="layout"),
    edit("_checks: numpy scalars rejected", "_checks.py",
         "return isinstance(value, numbers.Real) and not isinstance(value, bool)",
         "return isinstance(value, (int, float)) and not isinstance(value, bool)",
         LAYOUT + "test_bools_are_not_numbers_and_numpy_scalars_are", origin="layout"),
    edit("_checks: a string passes as a list", "_checks.py",
         "if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):",
         "if not isinstance(value, Sequence):",
         LAYOUT + "test_strings_are_not_lists", origin="layout"),
    edit("ops.min_max: a constant map becomes ones", "ops.py",
         "torch.where(span > 0, scaled, 0.0)", "torch.where(span > 0, scaled, 1.0)",
         LAYOUT + "test_min_max_scales_each_sample_on_its_own_and_constant_maps_become_zero",
         origin="layout"),
    edit("ops.min_max: one minimum for the whole batch", "ops.py",
         "low = flat.amin(dim=-1).view(shape)", "low = flat.amin().expand(shape[0]).view(shape)",
         LAYOUT + "test_min_max_scales_each_sample_on_its_own_and_constant_maps_become_zero",
         origin="layout"),
    edit("sinks: image_dir ignored", "lightning/sinks.py",
         "if image_dir is not None:\n        sinks.append(", "if False:\n        sinks.append(",
         LAYOUT + "test_each_logger_kind_gets_its_sink", origin="layout"),
    edit("sinks: other writers never get add_image", "lightning/sinks.py",
         "if not isinstance(writer, SummaryWriter):", "if False:",
         LAYOUT + "test_other_tensorboard_writers_get_add_image", origin="layout"),
    edit("samples: bool labels shown as classes", "tasks.py",
         "if labels.dtype == torch.bool or labels.dtype.is_complex:\n        return False",
         "if labels.dtype.is_complex:\n        return False",
         LAYOUT + "test_a_multiclass_task_reads_class_indices_one_hot_rows_and_nothing_else",
         origin="layout"),
    edit("samples: a soft mask's 0.5 counts as inside", "samples/reader.py",
         ".float() > MASK_THRESHOLD", ".float() >= MASK_THRESHOLD",
         LAYOUT + "test_soft_masks_count_above_one_half_and_bad_discovered_keys_are_skipped",
         origin="layout"),
    edit("history.fit_to keeps maps of fewer samples", "history.py",
         "if self.runs[0].shape[0] != count:", "if self.runs[0].shape[0] < count:",
         LAYOUT + "test_history_fit_to_resizes_a_new_image_size_and_clears_a_new_sample_count",
         origin="layout"),
    edit("engine chunking: every chunk gets the first chunk's targets", "engine/cam.py",
         "targets.dim() == 1 and len(targets) == count:\n        return targets[chunk]",
         "targets.dim() == 1 and len(targets) == count:\n"
         "        return targets[: chunk.stop - chunk.start]",
         LAYOUT + "test_explaining_in_chunks_gives_the_same_maps_and_logits", origin="layout"),
    # (the clone of class targets made under inference mode is not a mutant here: torch 2.14
    # accepts them as they are, so no test on this machine can tell; older torch raised)
    # ----- the collaborators (issue 17) -------------------------------------------------------
    part("notices: a warning said every time", "notices.py",
         "        if self.first(key):\n            self.warn(message)",
         "        if True:\n            self.warn(message)",
         PARTS + "test_notices_say_each_key_once_until_a_reset",
         RECOMPOSED + "test_2_an_empty_mask_is_named_once_by_its_dataset_index"),
    part("notices: a reset forgets nothing", "notices.py",
         "        self._said.clear()", "        pass",
         PARTS + "test_notices_say_each_key_once_until_a_reset",
         RECOMPOSED + "test_5_the_statistics_fail_under_the_one_policy_reported_in_every_fit"),
    part("guard: rank zero's decision ignored", "guard.py",
         "self.switched_off = bool(broadcast(self.switched_off))",
         "self.switched_off = bool(self.switched_off)",
         PARTS + "test_the_guard_takes_rank_zeros_decision_and_configures_between_runs"),
    part("callback: ranks keep their own on/off", "lightning/callback.py",
         "or not self._guard.agree(\n                api.rank_zero_broadcast(trainer)):",
         "or not self._guard.active:",
         ROBUST + "test_ddp_a_fault_on_rank_zero_stops_no_rank_and_an_error_does_not_hang"),
    part("guard: the statistics' out-of-memory fix names batch_size", "guard.py",
         "        if step == STATISTICS_STEP:\n            now",
         "        if False:\n            now",
         RECOMPOSED + "test_6_out_of_memory_in_the_statistics_names_metric_batch_size",
         ROBUST + "test_failure_descriptions_name_cause_and_fix"),
    part("callback: a new on_error never reaches the guard", "lightning/callback.py",
         "        self._guard.configure(options.run.on_error,",
         "        self._guard.configure(self._guard.on_error,",
         RECOMPOSED + "test_4_setting_an_option_applies_it_everywhere_or_raises_and_changes"
         "_nothing"),
    part("observer: new sample options keep the old samples", "observer.py",
         "        if options.samples != old.samples:\n            self.samples.forget()",
         "        if False:\n            self.samples.forget()",
         RECOMPOSED + "test_4_setting_an_option_applies_it_everywhere_or_raises_and_changes"
         "_nothing",
         PARTS + "test_new_options_for_the_observer_read_the_samples_again_and_restart_the"
         "_history"),
    part("store: the dataset's class names ignored", "samples/store.py",
         "                 else dataset_class_names(dataset))", "                 else None)",
         RECOMPOSED + "test_1_the_class_maps_name_classes_as_the_grid_does_from_the_datasets"
         "_classes"),
    part("store: provisional samples read again for the same data", "samples/store.py",
         "or (entry.provisional and entry.dataset is dataset)", "or False",
         PARTS + "test_the_sample_store_keeps_samples_until_the_loader_changes"),
    part("store: the checkpoint's samples not shown again", "samples/store.py",
         "            wanted = list(self.restored_indices)", "            pass",
         PARTS + "test_the_sample_store_keeps_samples_until_the_loader_changes",
         ROBUST + "test_restored_indices_are_kept_when_the_options_did_not_change"),
    part("store: the empty-mask warning names batch positions", "samples/store.py",
         "for name, empty in empty_masks(samples).items():",
         "for name, empty in {k: [samples.indices.index(i) for i in v]"
         " for k, v in empty_masks(samples).items()}.items():",
         RECOMPOSED + "test_2_an_empty_mask_is_named_once_by_its_dataset_index"),
    part("display: the check draws without the dataset's Normalize", "samples/store.py",
         "        display = choose_display(options.mean, options.std, dataset)",
         "        display = choose_display(options.mean, options.std, None)",
         RECOMPOSED + "test_3_the_check_before_a_run_draws_with_the_display_the_run_shows",
         RECOMPOSED + "test_3_the_grid_undoes_the_datasets_normalize_with_or_without_statistics"),
    part("explainer: a NaN output keeps its map", "explainer.py",
         "rows = [(name, torch.where(finite.view(-1, 1, 1), maps, 0.0)) for name, maps in rows]",
         "rows = list(rows)",
         PARTS + "test_a_sample_whose_output_is_not_finite_gets_an_empty_map_with_every_method"),
    part("statistics: samples with NaN outputs counted", "statistics/collect.py",
         "    keep = explained.finite\n", "    keep = explained.finite | True\n",
         PARTS + "test_the_statistics_leave_out_samples_whose_outputs_are_not_finite"),
    part("observer: a run with NaN outputs enters the history", "observer.py",
         "if run.extends_history and bool(explained.finite.all()):", "if run.extends_history:",
         ROBUST + "test_nan_outputs_are_named_once_left_out_and_the_run_goes_on"),
    part("observer: test runs extend the history", "observer.py",
         'return self.fitting and self.stage == "validate"', "return self.fitting",
         PARTS + "test_the_observer_shows_a_test_run_without_touching_the_history"),
    part("every_n_steps off by one", "lightning/callback.py",
         "step % every == 0 and trainer.enable_validation:",
         "step % every == 1 and trainer.enable_validation:",
         RECOMPOSED + "test_every_n_steps_logs_between_validation_runs_and_a_step_once"),
    part("a step explained twice", "lightning/callback.py",
         "if (run.extends_history and self._last_run_step == run.step) or",
         "if False or",
         RECOMPOSED + "test_every_n_steps_logs_between_validation_runs_and_a_step_once"),
    part("filmstrip titled by epoch with every_n_steps", "pictures.py",
         'titles = [f"step {history.steps[r]}" if by_step else',
         'titles = [f"epoch {history.epochs[r]}" if by_step else',
         PARTS + "test_the_filmstrip_is_titled_by_step_with_every_n_steps"),
    part("runs before the first validation read the running loop's loaders only",
         "lightning/callback.py",
         "            loaders, provisional = api.dataloaders(trainer, stage)\n            stat",
         "            loaders, provisional = api.current_dataloaders(trainer, stage), False\n"
         "            stat",
         RECOMPOSED + "test_ddp_every_n_steps_before_the_first_validation_runs_on_every_rank"),
    part("statistics: the layout always from rank zero", "statistics/accumulator.py",
         "        source = int((having > 0).nonzero()[0, 0])", "        source = 0",
         "tests/test_statistics.py::test_a_rank_zero_without_sums_takes_the_layout_of_a_rank"
         "_that_has_them"),
    part("check: the first chunk's undefined names count as unknown", "observer.py",
         "names |= {*result.scalars, *result.undefined, \"metric_samples\"}",
         "names |= {*result.scalars, \"metric_samples\"}",
         RECOMPOSED + "test_a_scalar_undefined_in_the_first_chunk_only_passes_the_check_of_its"
         "_monitors"),
    part("monitors: step runs never fill the epochs between runs", "monitors.py",
         "fills = every_n_steps is not None and every_n_steps <= steps_per_validation",
         "fills = False",
         RECOMPOSED + "test_steps_that_fill_the_epochs_between_runs_satisfy_a_strict_monitor"),
    part("a resumed fit explains its last step again", "observer.py",
         "        return self.history.steps[-1] if self.history.steps else None",
         "        return None",
         RECOMPOSED + "test_every_n_steps_with_gradient_accumulation_and_a_resume_explains_each"
         "_step_once"),
    part("every_n_steps without a validation loop", "lightning/callback.py",
         "step % every == 0 and trainer.enable_validation:", "step % every == 0:",
         RECOMPOSED + "test_every_n_steps_without_a_validation_loop_explains_nothing_and_fails"
         "_nothing"),
    part("sinks: a new image_dir keeps the old sinks", "lightning/sinks.py",
         "            self._sinks = None\n        self.options = options",
         "            pass\n        self.options = options",
         PARTS + "test_new_picture_options_take_new_sinks_from_the_next_picture"),
    part("an option read is the option itself", "lightning/callback.py",
         "return copy.copy(self._options.arguments[name])",
         "return self._options.arguments[name]",
         RECOMPOSED + "test_reading_an_option_gives_a_copy_and_new_picture_options_take_new"
         "_sinks"),
    part("statistics: the last result forgotten", "statistics/runner.py",
         "        self.last = collect_statistics(", "        return collect_statistics(",
         RECOMPOSED + "test_1_the_class_maps_name_classes_as_the_grid_does_from_the_datasets"
         "_classes"),
    # ----- issue 18: tasks --------------------------------------------------------------------
    edit("task binary: +logit for every sample (the bug the issue measured)", "engine/targets.py",
         "positive = z.detach() >= 0", "positive = torch.ones_like(z, dtype=torch.bool)",
         TASKS + "test_the_maps_are_grad_cam_of_the_documented_score",
         TASKS + "test_a_negative_prediction_is_explained_by_minus_its_logit_in_the_engine",
         origin="tasks"),
    edit("task binary: the caption's p is the positive side's", "tasks.py",
         "p = torch.sigmoid(torch.tensor(z if side else -z)).item()",
         "p = torch.sigmoid(torch.tensor(z)).item()",
         TASKS + "test_the_logged_captions_and_frames_are_the_tasks",
         TASKS + "test_a_binary_dataset_of_other_class_names_shows_negative_and_positive",
         origin="tasks"),
    edit("task multilabel: threshold ignored", "tasks.py",
         "chosen = (probabilities > self.threshold)", "chosen = (probabilities > 0.5)",
         TASKS + "test_multilabel_threshold_decides_the_predicted_set", origin="tasks"),
    edit("task multilabel: class maps by the top label only", "tasks.py",
         "by_prediction = logits.detach().float().sigmoid().cpu() > self.threshold",
         "by_prediction = F.one_hot(predicted, count).bool()",
         TASKS + "test_class_maps_group_the_samples_by_the_tasks_rule", origin="tasks"),
    edit("task multilabel: consistency partners counted over the predicted sets",
         "statistics/accumulator.py",
         "partners = self.top_counts[groups] - 1", "partners = self.prediction_counts[groups] - 1",
         TASKS + "test_consistency_compares_each_sample_with_its_own_group_only",
         origin="tasks"),
    edit("task segmentation: background not passed over", "engine/targets.py",
         "counts[:, background] = -1", "counts[:, background] = counts[:, background]",
         TASKS + "test_the_engine_targets_score_what_they_say",
         TASKS + "test_the_maps_are_grad_cam_of_the_documented_score", origin="tasks"),
    edit("task segmentation: label_region is every labelled pixel", "tasks.py",
         "region = labels.cpu() == explained.cpu().view(-1, 1, 1)",
         "region = labels.cpu() > 0",
         TASKS + "test_segmentation_lift_on_the_label_region_is_its_formula", origin="tasks"),
    edit("task multi-hot labels read as binary", "tasks.py",
         "            if labels.dim() > 2 or labels[:1].numel() != 1:",
         "            if labels.dim() > 2:",
         TASKS + "test_read_task_reads_the_output_and_the_labels", origin="tasks"),
    edit("task a one-logit output read as multiclass", "tasks.py",
         '        return "binary", f"one logit per sample {shape}"',
         '        return "multiclass", f"one logit per sample {shape}"',
         TASKS + "test_the_task_is_read_and_said_in_one_line",
         TASKS + "test_read_task_reads_the_output_and_the_labels", origin="tasks"),
    edit("task regression: target k ignored", "tasks.py",
         'return OutputTarget(None if target == "predicted" else int(target))',
         "return OutputTarget(0)",
         TASKS + "test_regression_explains_output_k_and_shows_values", origin="tasks"),
    edit("task segmentation: the layer is the logit maps", "engine/layers.py",
         "candidates = features or candidates", "candidates = candidates",
         TASKS + "test_a_segmentation_models_layer_is_its_features_not_its_logit_maps",
         origin="tasks"),
    edit("task binary: a squeezed (N,) output", "explainer.py",
         "torch.isfinite(logits.float().reshape(len(logits), -1))",
         "torch.isfinite(logits.float().flatten(1))",
         TASKS + "test_a_squeezed_binary_output_runs_like_a_one_logit_column", origin="tasks"),
    edit("task captions: long lists cut", "render/grid.py",
         "captions = [_wrap_list(lines, tile_w, font, measure) for lines in captions]",
         "captions = [list(lines) for lines in captions]",
         TASKS + "test_a_long_list_in_a_caption_wraps_after_its_commas", origin="tasks"),
    edit("task multilabel: a new threshold keeps the old task", "observer.py",
         "self.explainer.task = None  # read again, with the new threshold", "pass",
         TASKS + "test_a_new_threshold_applies_to_the_next_run_and_keeps_the_history",
         origin="tasks"),
    edit("task binary: soft labels refused when said", "tasks.py",
         "and not (self.soft_labels and _unit(labels))", "",
         TASKS + "test_soft_binary_labels_need_task_binary_said_and_then_read_by_their_side",
         origin="tasks"),
]


def pytest(python: str, tests: tuple[str, ...] | list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "--no-header",
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
