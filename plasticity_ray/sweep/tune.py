"""Sweeps on Ray Tune: one trial per point of the spec's grid (or per Optuna sample at each grid
point); each trial is a whole run with its own TorchTrainer, probes and diagnostics.

A trial is a Tune *function trainable* (Ray 2.60's Train V2: a trainable builds and fits one
TorchTrainer). Every Train report reaches Tune through `TuneReportCallback`, extended here with the
run's trial row read from storage, so probe AUCs show in Tune's tables as they land; once training
and the run's probes are done the trial reports its final row. Everything a trial learns lives in
its run directory: a retried or resumed trial continues from its newest checkpoint, a finished run
is never trained again, and the result tables are read from storage, not from Tune.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from plasticity_ray.spec import ExperimentSpec, grid_points, point_labels, with_overrides
from plasticity_ray.spec.protocol import max_concurrent_trials
from plasticity_ray.rundir import SPEC_FILE
from plasticity_ray.storage import as_path, uri
from plasticity_ray.analysis.runs import load_run
from plasticity_ray.analysis.tables import trial
from plasticity_ray.tracking import track_group_verdicts
from plasticity_ray.trial import experiment_dir, open_storage, run_dir, run_training

TUNE_DIR = "tune"  # <experiment dir>/tune: Tune's own state, result tables and TensorBoard files
POINT = "point"  # the trial config key naming one of the sweep's points by its label (Tune's tables show it)


class _TrialReport(TuneReportCallback):
    """Tune's report callback, each report extended with the run's trial row (probes so far)."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def after_report(self, run_context, metrics, checkpoint):
        row = _tune_row(as_path(self.directory))
        super().after_report(run_context, [{**metrics[0], **row}, *metrics[1:]], checkpoint)


def _tune_row(directory: Path) -> dict:
    row, _ = trial(load_run(directory)) if (directory / SPEC_FILE).exists() else ({}, [])
    row = {k: v for k, v in row.items() if k != "trial_id"}  # Tune has its own trial_id
    return {**row, "run_id": directory.name}


def sweep_points(spec: ExperimentSpec) -> dict[str, dict[str, Any]]:
    """The sweep's points (dotted-path overrides, see `grid_points`) by their readable labels."""
    return dict(zip(point_labels(spec), grid_points(spec)))


def run_trial(config: dict, base: dict) -> None:
    """One trial: the base spec with the trial's point (and, in an Optuna search, the sampled
    value) applied, trained to the end."""
    base_spec = ExperimentSpec.model_validate(base)
    overrides = {**sweep_points(base_spec)[config[POINT]], **{k: v for k, v in config.items() if k != POINT}}
    spec = with_overrides(base_spec, overrides, source="sweep point")
    directory = run_dir(spec)
    summary = run_training(spec, say=print, callbacks=[_TrialReport(uri(directory))])
    if not summary.complete:
        raise RuntimeError(f"{directory}: the run stopped before its last task")
    tune.report(_tune_row(directory))


def search_space(spec: ExperimentSpec) -> dict[str, Any]:
    """One Tune grid search over the sweep's points (the grid's product, the explicit points and the
    variants, expanded once in the spec)."""
    return {POINT: tune.grid_search(list(sweep_points(spec)))}


def point_label(point: dict[str, Any]) -> str:
    text = "_".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in point.items()) or "all"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text)


@dataclass(frozen=True)
class SweepSummary:
    experiment_dir: Path
    trials: int
    errors: list[str]  # one line per trial that failed for good
    unfinished: int  # trials stopped before the end (the sweep was interrupted): `--resume` continues


def _prepare_data(spec: ExperimentSpec, say: Callable[[str], None]) -> None:
    """Prepare every distinct data set of the sweep once, here, before trials race to do it."""
    from plasticity_ray.data.prepare import prepare, prepared_root

    done = set()
    for point in grid_points(spec):
        point_spec = with_overrides(spec, point)
        root = prepared_root(point_spec)
        if root not in done:
            prepare(point_spec, say=say)
            done.add(root)


def _tuner(spec: ExperimentSpec, name: str, resume: bool, say: Callable[[str], None], param_space: dict,
           tune_config: tune.TuneConfig) -> tune.Tuner:
    # The trial itself only drives a TorchTrainer whose workers ask for their own resources; Tune needs
    # a non-empty request, and a CPU share would starve the probes on small machines: one byte of memory.
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=spec.model_dump(mode="json")), {"memory": 1})
    path = experiment_dir(spec) / name
    if resume and tune.Tuner.can_restore(uri(path)):
        say(f"resuming the sweep saved in {path}")
        return tune.Tuner.restore(uri(path), trainable, resume_errored=True)
    if resume:
        say(f"nothing to resume in {path}: starting the sweep (finished runs are not trained again)")
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name, storage_path=uri(experiment_dir(spec)),
            failure_config=tune.FailureConfig(max_failures=spec.sweep.max_failures),
            verbose=1,
        ),
    )


def _errors(results) -> list[str]:
    return [f"{r.path}: {type(r.error).__name__}: {str(r.error).strip().splitlines()[-1]}"
            for r in results if r.error is not None]


def _unfinished(results, expected: int) -> int:
    """Trials neither complete nor failed for good (an interrupted sweep has not even created some)."""
    complete = sum(r.error is None and (r.metrics or {}).get("status") == "complete" for r in results)
    return expected - complete - len(_errors(results))


def run_sweep(spec: ExperimentSpec, resume: bool = False, say: Callable[[str], None] = print) -> SweepSummary:
    """Run every trial of the spec's sweep on the current Ray (or continue a stopped sweep)."""
    from plasticity_ray.probe.service import close_service

    spec = open_storage(spec)
    _prepare_data(spec, say)
    concurrent = max_concurrent_trials(spec, ray.cluster_resources())
    points = sweep_points(spec)  # a point listed twice is one trial: it would be the same run
    errors: list[str] = []
    unfinished = 0
    if spec.sweep.search is None:
        say(f"sweep {spec.name}: {len(points)} trial(s), up to {concurrent} at once → {experiment_dir(spec)}")
        tuners = [_tuner(spec, TUNE_DIR, resume, say, search_space(spec), tune.TuneConfig(max_concurrent_trials=concurrent))]
        per_tuner = len(points)  # one tuner for the whole grid
    else:  # OptunaSearch cannot mix with grid_search: one search per grid point
        tuners = (_optuna_tuner(spec, label, point, concurrent, resume, say) for label, point in points.items())
        per_tuner = spec.sweep.search.samples
    trials = per_tuner * (len(points) if spec.sweep.search else 1)
    for tuner in tuners:
        results = tuner.fit()
        errors += _errors(results)
        unfinished += _unfinished(results, per_tuner)
        if unfinished:
            break  # interrupted (Ctrl-C): the probe service keeps the jobs it has, for --resume
    if not unfinished:
        close_service(spec)
        if spec.tracking.mlflow or spec.tracking.wandb:
            track_group_verdicts(experiment_dir(spec), say)
    return SweepSummary(experiment_dir(spec), trials, errors, unfinished)


def _optuna_tuner(spec: ExperimentSpec, label: str, point: dict, concurrent: int, resume: bool,
                  say: Callable[[str], None]) -> tune.Tuner:
    from ray.tune.search.optuna import OptunaSearch

    search = spec.sweep.search
    sample = tune.loguniform if search.log else tune.uniform
    say(f"sweep {spec.name}: Optuna over {search.parameter} in [{search.low:g}, {search.high:g}] at "
        f"{label}: {search.samples} trial(s), up to {concurrent} at once")
    return _tuner(
        spec, f"{TUNE_DIR}-{point_label(point)}", resume, say,
        {POINT: label, search.parameter: sample(search.low, search.high)},
        tune.TuneConfig(search_alg=OptunaSearch(metric=search.metric, mode="min", seed=spec.seed),
                        num_samples=search.samples, max_concurrent_trials=concurrent),
    )
