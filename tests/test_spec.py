"""Experiment specs: the paper's defaults, the shipped files, and readable errors for bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from plasticity_ray.cli import main
from plasticity_ray.spec import ExperimentSpec, SpecError, grid_points, load_spec, parse_count, with_overrides

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


def test_defaults_are_the_papers_recipe():
    spec = ExperimentSpec(name="x")
    assert spec.data.languages == ["en", "zh", "fr", "ja", "es", "de", "pt", "ru"]
    assert spec.data.probe_language == "vi"
    assert spec.data.tokenizer == "qwen3"
    assert spec.data.seq_len == 2048
    assert spec.batch.global_tokens == 256 * 2048
    assert spec.optimizer.betas == (0.9, 0.95)
    assert spec.optimizer.weight_decay == 0.1
    assert spec.schedule.warmup_fraction == 0.05
    assert spec.schedule.tokens_per_task == 5_000_000_000
    assert spec.resets_optimizer and spec.restarts_warmup  # §IV-B: reset and restarted warm-up per task
    assert spec.steps_per_task == 9537  # §IV-B: "Each task consisted of 9,537 training steps."
    assert spec.warmup_steps == 477  # 5% of them
    assert (spec.probe.eval_every, spec.probe.eval_sequences) == (95, 1280)
    assert not spec.probe.same_data_order  # §IV-A: each probe "randomly subsampled" from the pool
    assert not spec.probe.auc_includes_step0  # the AUC measures learning during probing
    assert spec.probe.replicates == 1  # the paper probes each checkpoint once
    assert spec.probe.extended is None and spec.probe.every_cycles == 1  # §V-A: a probe at every cycle end
    assert spec.schedule.stop is None and spec.onset_stop is None  # §V-A: every task of every cycle is trained
    assert spec.diagnostics.dormant_threshold == 0.01
    assert spec.lr == pytest.approx(3e-3)  # 5M at Appendix A's rule


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


def test_shipped_experiments_include_the_required_ones():
    assert {"demo.yaml", "paper_continual.yaml", "paper_continual_adaptive.yaml", "paper_stationary.yaml",
            "lr_grid.yaml"} <= {p.name for p in EXPERIMENTS}


def _validate_output(name, capsys) -> str:
    assert main(["validate", str(Path(__file__).parent.parent / "experiments" / name)]) == 0
    return capsys.readouterr().out


def test_validate_says_the_stationary_protocol_in_words(capsys):
    out = _validate_output("paper_stationary.yaml", capsys)
    assert "warm-up of 477 steps once at the start of the run, then a constant LR; AdamW never reset" in out
    assert "a probe every 5B training tokens" in out
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "paper_stationary.yaml")
    assert (spec.resets_optimizer, spec.restarts_warmup, spec.warmup_steps, spec.tasks_per_probe) == (False, False, 477, 1)
    # The mode's protocol is the default, and an explicit value still wins.
    bare = ExperimentSpec(name="s", schedule={"mode": "stationary"})
    assert not bare.resets_optimizer and not bare.restarts_warmup
    asked = ExperimentSpec(name="s", schedule={"mode": "stationary", "reset_optimizer_per_task": True,
                                                "restart_warmup_per_task": True})
    assert asked.resets_optimizer and asked.restarts_warmup
    assert ExperimentSpec(name="s", schedule={"mode": "stationary"}, probe={"every_tokens": "15B"}).tasks_per_probe == 3


def test_validate_says_the_continual_probes_in_words(capsys):
    out = _validate_output("paper_continual.yaml", capsys)
    assert "warm-up of 477 steps restarted at every task, then a constant LR; a fresh AdamW at every task" in out
    assert "probes at cycle ends (after ru) and after zh, de;" in out
    assert "a fresh random subsample for each probe" in out
    assert "AUC over the evaluations during training (from step 95)" in out


def test_the_adaptive_paper_spec_is_the_paper_spec_with_both_policies_and_seeds(capsys):
    out = _validate_output("paper_continual_adaptive.yaml", capsys)
    assert ("and after zh, de only in the 2 cycle(s) each side of the cycle-end minimum (kept, then probed or released "
            "as the group's curve decides)") in out
    assert "stops: each group of seeds 2 cycle(s) after its onset is confirmed" in out
    experiments = Path(__file__).parent.parent / "experiments"
    paper = load_spec(experiments / "paper_continual.yaml").model_dump(mode="json")
    adaptive = load_spec(experiments / "paper_continual_adaptive.yaml").model_dump(mode="json")
    assert adaptive["probe"]["extended"].pop("near_minimum") == {"cycles": 2}
    assert adaptive["schedule"].pop("stop") == {"onset_confirmed": {"margin_cycles": 2, "level": 0.9}}
    assert adaptive["sweep"]["grid"].pop("seed") == [0, 1, 2]
    paper["schedule"].pop("stop")
    paper["probe"]["extended"].pop("near_minimum")
    assert {**adaptive, "name": "paper_continual"} == paper  # everything else is the paper's


def test_the_paper_specs_state_the_papers_pools():
    for name in ("paper_continual.yaml", "paper_stationary.yaml"):
        data = load_spec(Path(__file__).parent.parent / "experiments" / name).data
        assert [data.pool_tokens(lang, "train") for lang in data.languages] == [100_000_000_000] * 8, name
        assert data.pool_tokens("vi", "train") == 20_000_000_000  # §IV-A: 20B Vietnamese training tokens
        assert {data.pool_tokens(lang, "validation") for lang in (*data.languages, "vi")} == {1_000_000_000}
    assert ExperimentSpec(name="x").data.pool_tokens("en", "train") is None  # default: all the source has


def test_explicit_points_run_besides_the_grid():
    from plasticity_ray.spec import point_labels

    spec = ExperimentSpec(name="x", sweep={"grid": {"model.size": ["5M", "314M"], "optimizer.lr": [1e-3, 3e-3]},
                                           "points": [{"model.size": "39M", "optimizer.lr": "paper"}]})
    assert grid_points(spec)[-1] == {"model.size": "39M", "optimizer.lr": "paper"}
    assert len(grid_points(spec)) == 5 and point_labels(spec)[-1] == "model.size=39M, optimizer.lr=paper"
    only = ExperimentSpec(name="x", sweep={"points": [{"seed": 1}, {"seed": 2}]})
    assert grid_points(only) == [{"seed": 1}, {"seed": 2}]  # no extra base run
    with pytest.raises(ValueError, match="sweep.points: cannot be combined with sweep.search"):
        ExperimentSpec(name="x", sweep={"points": [{"seed": 1}], "search": {"low": 1e-4, "high": 1e-2}})


def test_lr_grid_trains_every_intermediate_size_at_its_interpolated_lr():
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "lr_grid.yaml")
    runs = [with_overrides(spec, point) for point in grid_points(spec)]
    table_ii = {"5M": 3.00, "12M": 2.30, "27M": 1.88, "39M": 1.73, "53M": 1.61, "83M": 1.41, "106M": 1.33,
                "314M": 1.00}  # Table II's interpolation column, η × 10³, typed from the paper
    for size, lr in table_ii.items():
        assert any(r.model.size == size and round(r.lr * 1e3, 2) == lr for r in runs), size
    assert len(runs) == 6 * 7 + 6


def test_paper_continual_sweeps_the_eight_sizes_at_the_paper_lr():
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "paper_continual.yaml")
    runs = [with_overrides(spec, point) for point in grid_points(spec)]
    assert [r.model.size for r in runs] == ["5M", "12M", "27M", "39M", "53M", "83M", "106M", "314M"]
    assert [round(r.lr * 1e3, 2) for r in runs] == [3.00, 2.30, 1.88, 1.73, 1.61, 1.41, 1.33, 1.00]


@pytest.mark.parametrize(
    "value,expected",
    [(5_000_000_000, 5_000_000_000), (5e9, 5_000_000_000), ("5e9", 5_000_000_000), ("5B", 5_000_000_000),
     ("64K", 64_000), ("524_288", 524_288), ("0.5M", 500_000)],
)
def test_counts_accept_readable_forms(value, expected):
    assert parse_count(value) == expected


@pytest.mark.parametrize("value", ["lots", "1.5", 2.5, True])
def test_counts_reject_non_counts(value):
    with pytest.raises(ValueError):
        parse_count(value)


BAD_SPECS = {
    "unknown size": ("model: {size: 7M}", "model.size: unknown size '7M'"),
    "zero token budget": ("schedule: {tokens_per_task: 0}", "schedule.tokens_per_task: must be greater than 0"),
    "negative token budget": ("schedule: {tokens_per_task: -5e9}", "schedule.tokens_per_task: must be greater than 0"),
    "unknown language": ("data: {languages: [en, xx]}", "data.languages[1]: must be 'en'"),
    "misspelled key": ("schedule: {tokens_per_tsk: 5}", "schedule.tokens_per_tsk: unknown field (did you mean 'tokens_per_task'?)"),
    "probe language trained on": ("data: {languages: [en, vi]}", "probe_language 'vi' must not be one of the training languages"),
    "batch not whole sequences": ("batch: {global_tokens: 1000}", "batch.global_tokens: 1000 is not a multiple of data.seq_len 2048"),
    "bad grid value": ("sweep: {grid: {model.size: [5M, 9M]}}", "sweep.grid.model.size[1]: unknown size '9M'"),
    "bad grid path": ("sweep: {grid: {optimizer.lrr: [1]}}", "sweep.grid.optimizer.lrr: not a field of the spec"),
    "not yaml": ("model: [", "not valid YAML"),
    "unknown tokenizer": ("data: {tokenizer: gpt2}", "data.tokenizer: must be 'qwen3' or 'byte'"),
    "renamed probe field": ("probe: {after_languages: [zh]}", "probe.after_languages: now probe.extended: {languages"),
    "extended language not trained": ("data: {languages: [en, ru]}\nprobe: {extended: {languages: [de]}}",
                                      "probe.extended.languages: de not in data.languages"),
    "extended cycles reversed": ("probe: {extended: {languages: [zh], cycles: [5, 2]}}",
                                 "probe.extended.cycles: from 5 is after to 2"),
    "extended cycles past the end": ("schedule: {cycles: 4}\nprobe: {extended: {languages: [zh], cycles: [6, 8]}}",
                                     "probe.extended.cycles: starts after the last cycle (4)"),
    "probe interval not whole chunks": ("schedule: {mode: stationary}\nprobe: {every_tokens: 7.5e9}",
                                        "probe.every_tokens: 7500000000 is not a multiple of schedule.tokens_per_task"),
    "pool mapping misses a language": ("data: {languages: [en, zh], train_tokens: {en: 1e9, zh: 1e9}}",
                                       "data.train_tokens: no entry for vi"),
    "bad explicit point": ("sweep: {points: [{model.size: 9M}]}", "sweep.points[0]: model.size: unknown size '9M'"),
    "unknown storage": ("storage_path: hdfs://namenode/runs", "storage_path: 'hdfs://namenode/runs': use a local or "
                        "mounted directory, s3://bucket/prefix or gs://bucket/prefix"),
    "grid and variant clash": ("sweep: {grid: {data.seq_len: [2048, 4096]}, variants: {big: {batch.global_tokens: 6144}}}",
                               "sweep point (data.seq_len=4096, variant big): batch.global_tokens: 6144 is not a multiple "
                               "of data.seq_len 4096"),
    "replicates of one draw": ("probe: {replicates: 2, same_data_order: true}",
                               "probe.replicates: 2 replicates with probe.same_data_order would all train on the same rows"),
    "explicit point path": ("sweep: {points: [{optimizer.lrr: 1}]}", "sweep.points[0].optimizer.lrr: not a field"),
    "near minimum and fixed cycles": ("probe: {extended: {languages: [zh], cycles: [2, 4], near_minimum: {cycles: 1}}}",
                                      "probe.extended.cycles: near_minimum chooses the cycles itself"),
    "stop without every cycle end": ("schedule: {stop: {onset_confirmed: {margin_cycles: 1}}}\nprobe: {every_cycles: 2}",
                                     "schedule.stop.onset_confirmed: needs continual mode with a probe at every cycle end"),
    "near minimum and weight distance": ("probe: {extended: {languages: [zh], near_minimum: {}}}\n"
                                         "diagnostics: {enabled: [weight_distance]}",
                                         "diagnostics.enabled: weight_distance compares each probe point with the one"),
    "near minimum in stationary mode": ("schedule: {mode: stationary}\nprobe: {extended: {languages: [zh], "
                                        "near_minimum: {}}}", "probe.extended.near_minimum: needs continual mode"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_specs_name_the_field(case, tmp_path, capsys):
    body, expected = BAD_SPECS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\n{body}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_each_problem_is_one_line_and_the_cli_exits_nonzero_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmodel: {size: 7M}\nschedule: {tokens_per_task: 0, tokens_per_tsk: 5}\ndata: {languages: [en, xx]}\n")
    proc = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"{path}: 4 problem(s)"
    assert sorted(line.strip().split(":")[0] for line in lines[1:]) == [
        "data.languages[1]", "model.size", "schedule.tokens_per_task", "schedule.tokens_per_tsk"]
    assert "Traceback" not in proc.stderr


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(tmp_path / "nope.yaml")


def test_overrides_apply_and_revalidate():
    spec = ExperimentSpec(name="x")
    small = with_overrides(spec, {"model.size": "L2-d128", "optimizer.lr": 1e-3, "seed": 3})
    assert (small.model.resolved.layers, small.lr, small.seed) == (2, 1e-3, 3)
    with pytest.raises(SpecError, match="must be greater than 0"):
        with_overrides(spec, {"schedule.tokens_per_task": 0})
    with pytest.raises(SpecError, match="not a field"):
        with_overrides(spec, {"model.width": 3})


def test_grid_points_are_the_cartesian_product():
    spec = ExperimentSpec(name="x", sweep={"grid": {"model.size": ["5M", "12M"], "seed": [0, 1, 2]}})
    points = grid_points(spec)
    assert len(points) == 6
    assert {"model.size": "12M", "seed": 2} in points
    assert grid_points(ExperimentSpec(name="x")) == [{}]


def test_variants_cross_the_grid_and_bad_variants_name_their_field(tmp_path):
    from plasticity_ray.spec import point_labels

    good = tmp_path / "good.yaml"
    good.write_text("name: v\nsweep:\n  grid: {seed: [0, 1]}\n  variants:\n    none: {}\n"
                    "    sp: {mitigations: [{name: shrink_perturb}]}\n")
    spec = load_spec(good)
    assert grid_points(spec) == [{"seed": 0, "label": "none"},
                                 {"seed": 0, "mitigations": [{"name": "shrink_perturb"}], "label": "sp"},
                                 {"seed": 1, "label": "none"},
                                 {"seed": 1, "mitigations": [{"name": "shrink_perturb"}], "label": "sp"}]
    assert point_labels(spec) == ["seed=0, variant none", "seed=0, variant sp", "seed=1, variant none",
                                  "seed=1, variant sp"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: v\nsweep:\n  variants:\n    a: {optimizer.weight_decya: 1.0}\n"
                   "    b: {mitigations: [{name: redo, every: 0}]}\n")
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    assert err.value.problems == ["sweep.variants.a.optimizer.weight_decya: not a field of the spec",
                                  "sweep.variants.b: mitigations[0].every: must be greater than 0"]


def test_run_identity_is_declared_per_field():
    from plasticity_ray.trial import run_id

    base = ExperimentSpec(name="x", model={"size": "5M"})
    same = {  # how it runs, not what it trains
        "batch.micro_batch": 4, "train.compile": True, "train.log_every": 5, "train.checkpoint_every": 7,
        "resources.workers": 4, "probe.same_data_order": True, "diagnostics.enabled": [], "name": "other",
        "storage_path": "/elsewhere", "label": "a name", "alarms.enabled": False,
        "optimizer.lr": 3e-3,  # the paper's rule for 5M, written as its number
        "schedule.reset_optimizer_per_task": True,  # the continual default, written out
        # The adaptive protocol changes what is probed and where a run ends, not what it trains up to there.
        "schedule.stop": {"onset_confirmed": {"margin_cycles": 1}},
        "probe.extended": {"languages": ["zh"], "near_minimum": {"cycles": 2}},
    }
    for path, value in same.items():
        assert run_id(with_overrides(base, {path: value})) == run_id(base), path
    different = {"train.precision": "bf16", "batch.global_tokens": 262144, "seed": 1, "optimizer.eps": 1e-6,
                 "schedule.restart_warmup_per_task": False, "data.seq_len": 1024,
                 "mitigations": [{"name": "weight_clipping"}], "model.attention_sink": True}
    for path, value in different.items():
        assert run_id(with_overrides(base, {path: value})) != run_id(base), path


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`plasticity-ray validate SPEC | head -1`: the pipe closes before the output is written."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    done = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "validate", str(EXPERIMENTS[0])],
                          stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert done.stderr == "" and done.returncode == 1
