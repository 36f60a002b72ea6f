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
    assert spec.schedule.reset_optimizer_per_task
    assert spec.steps_per_task == 9537  # §IV-B: "Each task consisted of 9,537 training steps."
    assert (spec.probe.eval_every, spec.probe.eval_sequences) == (95, 1280)
    assert spec.diagnostics.dormant_threshold == 0.01
    assert spec.lr == pytest.approx(3e-3)  # 5M at Appendix A's rule


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


def test_shipped_experiments_include_the_required_ones():
    assert {"demo.yaml", "paper_continual.yaml", "paper_stationary.yaml", "lr_grid.yaml"} <= {p.name for p in EXPERIMENTS}


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
    assert grid_points(spec) == [{"seed": 0}, {"seed": 0, "mitigations": [{"name": "shrink_perturb"}]},
                                 {"seed": 1}, {"seed": 1, "mitigations": [{"name": "shrink_perturb"}]}]
    assert point_labels(spec) == ["seed=0, variant none", "seed=0, variant sp", "seed=1, variant none",
                                  "seed=1, variant sp"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: v\nsweep:\n  variants:\n    a: {optimizer.weight_decya: 1.0}\n"
                   "    b: {mitigations: [{name: redo, every: 0}]}\n")
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    assert err.value.problems == ["sweep.variants.a.optimizer.weight_decya: not a field of the spec",
                                  "sweep.variants.b: mitigations[0].every: must be greater than 0"]
