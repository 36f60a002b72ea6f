"""The benchmark commands run end to end on CPU and write records with device, date and command."""

import json
from pathlib import Path

import pytest

from plasticity_ray.bench.train import bench_spec, flops_per_token
from plasticity_ray.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_mfu_flops_per_token_is_the_palm_formula():
    spec = bench_spec("5M", 2048, 524_288, "qwen3")
    assert flops_per_token(spec) == 6 * (4_932_480 + 151_680 * 320) + 12 * 4 * 320 * 2048


def test_the_main_command_bench_times_the_readmes_command_on_fresh_clones(tmp_path):
    import subprocess

    from plasticity_ray.bench.command import MAIN_COMMAND, bench_main_command

    readme = (REPO / "README.md").read_text()
    assert f"```bash\n{MAIN_COMMAND}\n```" in readme  # the benchmark times what the README says
    # The harness itself, on a small repository and a command that prints a conclusion and takes ~0.2 s.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "marker").write_text("x")
    for args in (["init", "-q"], ["add", "marker"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    command = "test -f marker && sleep 0.2 && printf 'table\\nconclusions per run group (x):\\n  L1 (2 seeds): fine\\n'"
    record = bench_main_command(["bench", "main-command"], 2, repo, command, say=lambda line: None)
    assert [r["exit_code"] for r in record["runs"]] == [0, 0]
    assert record["runs"][0]["conclusions"] == ["L1 (2 seeds): fine"]
    walls = sorted(r["wall_s"] for r in record["runs"])
    assert 0.2 <= record["wall_s"]["min"] == walls[0] <= record["wall_s"]["max"] == walls[1] < 30
    assert record["device"] and record["date"] and record["timed"] == command and len(record["commit"]) == 40


@pytest.mark.slow
def test_the_device_check_runs_at_cpu_size(ray_session, tmp_path):
    """The GPU check's own code at CPU size, from the command line: bench train (bare, in a
    TorchTrainer, and the plain reference), then the whole pipeline (2 tasks, probes and
    diagnostics, a worker crash and resume) with its checks; one record."""
    out = tmp_path / "check.json"
    argv = ["bench", "device-check", "--cpu-sized", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"] == "plasticity-ray " + " ".join(argv) and record["device"] and record["date"]
    size = record["train"]["sizes"]["L1-d64"]
    assert size["bare"]["tokens_per_s"] > 0 and size["ray_train"]["tokens_per_s"] > 0
    assert size["tokens_per_s"] == size["ray_train"]["tokens_per_s"]
    assert size["reference"]["tokens_per_s"] > 0  # the plain loop, same shapes, same process
    rounds = size["trainer_vs_reference_rounds"]  # the paired ratios of alternating rounds; the ratio is their median
    assert len(rounds) == 2 and size["trainer_vs_reference"] == pytest.approx(sum(rounds) / 2, abs=1e-3)
    pipeline = record["pipeline"]
    assert pipeline["checks"] == {name: True for name in (
        "complete", "crashed_and_resumed", "every_metric_row_once", "probe_rows", "diagnostics_rows",
        "probes_on_the_device", "diagnostics_on_the_device", "losses_finite")} and pipeline["all_ok"]
    assert len(pipeline["probe_aucs"]) == 3  # after en, after zh, and the baseline
    assert set(record["targets"]) == {"L1-d64_trainer_vs_reference", "L1-d64_ray_overhead"}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def test_the_readme_quotes_the_committed_records():
    """The README's measured figures are the committed records': the demo's conclusion and time
    (`bench main-command`) and the calibration table (`bench calibration`)."""
    from plasticity_ray.bench.calibration import format_summary

    readme = (REPO / "README.md").read_text()
    main_command = json.loads((REPO / "results" / "bench" / "main_command_cpu.json").read_text())
    assert len(main_command["commit"]) == 40 and len(main_command["runs"]) >= 2
    for run in main_command["runs"]:
        assert run["exit_code"] == 0 and run["conclusions"]
        assert all(line in readme for line in run["conclusions"])
        assert _minutes(run["wall_s"]) in readme
    calibration = json.loads((REPO / "results" / "calibration.json").read_text())
    assert format_summary(calibration) in readme
    assert calibration["groups_per_cell"] >= 2500 and len(calibration["commit"]) == 40
    # The bar, on the committed record: wherever a verdict or interval is given.
    assert calibration["summary"]["max_false_loss"] <= 0.12 and calibration["summary"]["min_coverage"] >= 0.85


def test_the_readme_quotes_the_adaptive_protocols_record_and_the_record_meets_its_bar():
    """`bench adaptive`'s table is in the README; on the committed record the onset is unchanged in
    at least 95% of groups whose paper onset lies in the probed window, and no cell stops early
    more often than the test's nominal error."""
    from plasticity_ray.bench.adaptive import format_summary

    record = json.loads((REPO / "results" / "adaptive_simulation.json").read_text())
    assert format_summary(record) in (REPO / "README.md").read_text()
    assert len(record["commit"]) == 40 and not record["uncommitted_changes"] and record["groups_per_cell"] >= 1000
    summary = record["summary"]
    assert summary["min_same_onset_inside_window"] >= 0.95
    assert summary["max_stopped_before_true_onset"] <= summary["nominal_error"]


def test_the_committed_adaptive_record_is_what_the_code_computes():
    """One cell of the record, computed again from its seed by the code as it is now."""
    import numpy as np

    from plasticity_ray.analysis.adaptive import Policy
    from plasticity_ray.bench.adaptive import CYCLES, run_cell

    record = json.loads((REPO / "results" / "adaptive_simulation.json").read_text())
    index, cell = next((i, c) for i, c in enumerate(record["cells"]) if c["seeds"] == 2 and c["onset"] == 54)
    stream = np.random.SeedSequence(record["seed"]).spawn(len(record["cells"]))[index]
    policy = record["policy"]
    again = run_cell({k: cell[k] for k in ("noise", "seeds", "onset", "sizes")}, record["groups_per_cell"],
                     policy["draws"], stream, record["probe_cost_tasks"],
                     Policy(CYCLES, policy["near_minimum_cycles"], policy["margin_cycles"], policy["level"], policy["draws"]))
    assert again == cell


def test_every_mitigation_and_model_option_is_timed_against_the_step_with_none():
    from plasticity_ray.bench.train import MITIGATION_VARIANTS, bench_spec, mitigation_costs
    from plasticity_ray.spec.schema import MITIGATION_NAMES

    costs = mitigation_costs(bench_spec("L1-d64", 32, 1024, "byte"), steps=1, warmup=1, threads=1, rounds=2,
                             say=lambda line: None)
    assert set(costs["variants"]) == set(MITIGATION_VARIANTS) == {*MITIGATION_NAMES, "fourier_features", "attention_sink"}
    for name, cost in costs["variants"].items():
        assert len(cost["vs_none_rounds"]) == 2 and cost["vs_none"] == pytest.approx(sum(cost["vs_none_rounds"]) / 2, abs=1e-3)
        assert cost["seconds_per_step"] > 0 and cost["per_task_hooks_seconds"] >= 0, name


def test_the_readme_quotes_the_committed_mitigation_costs():
    from plasticity_ray.bench.train import MITIGATION_VARIANTS, format_mitigation_costs

    record = json.loads((REPO / "results" / "bench" / "train_mitigations_cpu.json").read_text())
    assert set(record["mitigations"]["variants"]) == set(MITIGATION_VARIANTS) and len(record["commit"]) == 40
    readme = (REPO / "README.md").read_text()
    assert format_mitigation_costs(record) in readme
    assert record["command"].split(" --out ")[0] in readme.replace("\n", " ")  # the command that made it


def test_the_committed_mitigation_comparison_covers_every_variant_and_the_readme_quotes_it():
    from plasticity_ray.bench.comparison import format_comparison
    from plasticity_ray.spec import load_spec

    record = json.loads((REPO / "results" / "mitigations_demo" / "record.json").read_text())
    spec = load_spec(REPO / "experiments" / "mitigations_demo.yaml")
    assert record["command"] == "plasticity-ray bench comparison experiments/mitigations_demo.yaml --out results/mitigations_demo"
    assert len(record["commit"]) == 40 and record["date"] and record["wall_s"] > 0 and record["sizing"]
    variants = {row["variant"]: row for row in record["variants"]}
    assert set(variants) == set(spec.sweep.variants) and len(variants) == 14  # none, 13 others, the reset control
    assert record["trials"] == 42 and all(row["runs"] == 3 for row in variants.values())
    # The negative control: a model re-initialised at every task cannot lose plasticity.
    assert variants["reset_control"]["verdict"] == "not distinguishable from noise"
    assert all(row["auc_change_pm"] is not None and row["verdict"] != "no verdict" for row in variants.values())
    readme = (REPO / "README.md").read_text()
    assert format_comparison(record) in readme
    assert record["command"] in readme.replace("\n", " ")
    for name in ("report.md", "mitigations.csv", "onsets.csv", "fig_mitigations.png"):
        assert (REPO / "results" / "mitigations_demo" / name).exists(), name
