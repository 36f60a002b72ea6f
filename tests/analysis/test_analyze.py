"""`plasticity-ray analyze` on experiment directories written the way runs write them."""

import csv
import json

import pytest

from plasticity_ray.cli import main

# Valleys whose bottoms (after smoothing) are at probe 3, 4 and 6: onsets after 24, 32 and 48 tasks.
CURVES = {"5M": [3.4, 3.2, 3.0, 3.2, 3.4, 3.6, 3.8], "12M": [3.4, 3.2, 3.1, 3.0, 3.1, 3.2, 3.3],
          "27M": [3.4, 3.3, 3.2, 3.1, 3.0, 2.9, 3.0, 3.2]}
ONSETS = {"5M": 24, "12M": 32, "27M": 48}


@pytest.fixture
def experiments(tmp_path, write_run):
    first, second = tmp_path / "a", tmp_path / "b"
    write_run(first, "5M_run", "5M", "paper", CURVES["5M"], baseline=3.5)
    write_run(first, "12M_run", "12M", "paper", CURVES["12M"], baseline=3.5)
    write_run(second, "27M_run", "27M", "paper", CURVES["27M"], baseline=3.5)
    return first, second


def test_one_experiment_gets_onsets_figures_and_says_what_it_skipped(experiments, capsys):
    first, _ = experiments
    assert main(["analyze", str(first)]) == 0
    out = capsys.readouterr().out
    analysis = first / "analysis"
    with open(analysis / "onsets.csv") as f:
        rows = {r["size"]: r for r in csv.DictReader(f)}
    assert {size: int(r["onset_tasks"]) for size, r in rows.items()} == {"5M": 24, "12M": 32}
    assert rows["5M"]["status"] == "found"
    assert float(rows["5M"]["lr"]) == pytest.approx(3e-3) and float(rows["12M"]["lr"]) == pytest.approx(2.3e-3, abs=5e-6)
    for stem in ("fig2_auc_change", "fig5_correlates", "fig6_dormant_layers", "fig7_attention", "fig9_onset"):
        assert (analysis / f"{stem}.png").stat().st_size > 1000 and (analysis / f"{stem}.svg").exists()
        assert f"![{stem}]({stem}.png)" in (analysis / "report.md").read_text()
    assert not (analysis / "fig3_onset_scaling.png").exists()
    assert "skipped fig3_onset_scaling: no family (variant, learning-rate rule) has onsets of 3 model sizes" in out
    assert "skipped fig4_stationary: no stationary run with at least 2 probes" in out
    assert "skipped onset_fits.json: none, paper LR: onsets fitted for 2 model size(s); the scaling fits need 3" in out


def test_several_experiments_combine_into_one_scaling_fit_per_family(experiments, tmp_path, write_run, capsys):
    """The paper's family (variant none, the paper's LR) across 5M/12M/27M, beside another variant
    and another LR rule; a bound-only onset and an onset whose rise is noise are left out and counted."""
    import numpy as np

    from plasticity_ray.model.sizes import resolve_size

    first, second = experiments
    third = tmp_path / "c"
    for size, curve in (("5M", CURVES["27M"]), ("12M", CURVES["12M"]), ("27M", CURVES["5M"])):  # onsets 48, 32, 24
        write_run(third, f"sp_{size}", size, "paper", curve, baseline=3.5, label="shrink_perturb")
    write_run(third, "39M_run", "39M", "paper", [3.0, 3.1, 3.2, 3.3, 3.4], baseline=3.5)  # rises from the start
    for seed, curve in enumerate(([3.2, 3.0, 2.9, 3.0, 3.0, 3.1, 3.0], [2.9, 3.1, 3.0, 2.95, 3.1, 2.9, 3.1])):
        write_run(third, f"53M_seed{seed}", "53M", "paper", curve, baseline=3.5, seed=seed)  # a noise-sized rise
    write_run(third, "83M_fixed_lr", "83M", 1e-3, CURVES["27M"], baseline=3.5)
    out = tmp_path / "combined"
    assert main(["analyze", str(first), str(second), str(third), "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    families = json.loads((out / "onset_fits.json").read_text())["families"]
    assert [f["family"] for f in families] == ["none, paper LR", "none, lr 0.001", "shrink_perturb, paper LR"]
    paper, fixed_lr, shrink = families
    params = {s: resolve_size(s).non_embedding_params for s in ("5M", "12M", "27M")}
    assert [(p["params"], p["onset_tasks"]) for p in paper["points"]] == [(params[s], ONSETS[s]) for s in ("5M", "12M", "27M")]
    assert {x["group"]: x["why"] for x in paper["left_out"]} == {
        "39M (lr 0.0017)": "left out: only a bound (at or before the first window)",
        "53M (lr 0.0016)": "left out: its rise is not distinguishable from noise"}
    # The paper family's log-log fit is least squares on its own three points, computed here by numpy.
    slope, intercept = np.polyfit(np.log([params[s] for s in ("5M", "12M", "27M")]),
                                  np.log([ONSETS[s] for s in ("5M", "12M", "27M")]), 1)
    assert paper["fit"]["models"]["log_log"]["b"] == pytest.approx(slope)
    assert paper["fit"]["models"]["log_log"]["a"] == pytest.approx(intercept)
    shrink_slope, _ = np.polyfit(np.log([params[s] for s in ("5M", "12M", "27M")]), np.log([48, 32, 24]), 1)
    assert slope > 0 > shrink_slope and shrink["fit"]["models"]["log_log"]["b"] == pytest.approx(shrink_slope)
    assert [p["onset_tasks"] for p in shrink["points"]] == [48, 32, 24]
    assert fixed_lr["fit"] is None and "onsets fitted for 1 model size(s)" in fixed_lr["why_no_fit"]

    with open(out / "fit_points.csv") as f:
        points = list(csv.DictReader(f))
    assert len(points) == 3 + 2 + 3 + 1  # every continual group, in its family
    assert sum(p["fitted"] == "True" for p in points) == 3 + 3 + 1
    assert {p["note"] for p in points if p["group"].startswith("5M (lr 0.003)")} == {
        "fitted; no calibrated verdict of loss (one seed)"}
    assert "scaling fit of none, paper LR: best (leave-one-out RMSE)" in printed and "3 onset(s) fitted, 2 left out" in printed
    assert (out / "fig3_onset_scaling.png").exists() and (out / "fig10_fits.png").exists()
    report = (out / "report.md").read_text()
    assert "## Scaling fit (Appendix B): none, paper LR" in report and "## Scaling fit (Appendix B): shrink_perturb, paper LR" in report
    assert "left out: only a bound" in report


def test_a_directory_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 2
    assert "no runs in" in capsys.readouterr().err


def test_variants_are_compared_side_by_side(tmp_path, write_run, capsys):
    root = tmp_path / "m"
    write_run(root, "none_0", "5M", "paper", CURVES["5M"], baseline=3.5, label="none")
    write_run(root, "none_1", "5M", "paper", CURVES["12M"], baseline=3.5, label="none")
    write_run(root, "sp_0", "5M", "paper", CURVES["27M"], baseline=3.5, label="shrink_perturb", loss_offset=0.5)
    assert main(["analyze", str(root)]) == 0
    printed = capsys.readouterr().out
    with open(root / "analysis" / "mitigations.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    with open(root / "analysis" / "onsets.csv") as f:
        groups = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["none", "shrink_perturb"]
    assert rows["none"]["runs"] == "2" and rows["none"]["onsets"] == "24 32" and rows["shrink_perturb"]["onsets"] == "48"
    # Each variant's estimates are its group's, intervals and adjusted verdict included.
    for variant, row in rows.items():
        for column in ("auc_change_percent", "auc_change_pm", "onset_tasks", "onset_lo", "onset_hi", "verdict", "p_adjusted"):
            assert row[column] == groups[variant][column], (variant, column)
    assert rows["none"]["auc_change_pm"] and rows["none"]["onset_lo"] and rows["none"]["verdict"] in (
        "significant", "not distinguishable from noise")
    changes = [100 * (CURVES[size][-1] / CURVES[size][0] - 1) for size in ("5M", "12M")]
    assert float(rows["none"]["auc_change_percent"]) == pytest.approx(sum(changes) / 2)
    last_change = 100 * (CURVES["27M"][-1] / CURVES["27M"][0] - 1)
    assert float(rows["shrink_perturb"]["auc_change_percent"]) == pytest.approx(last_change)
    # The written runs' 8 metric rows are all in cycle 0: mean loss 5.0 - 0.35 = 4.65, 5.15 with the offset.
    assert float(rows["none"]["last_cycle_train_loss"]) == pytest.approx(4.65)
    assert float(rows["shrink_perturb"]["train_loss_cost_percent"]) == pytest.approx(100 * (5.15 / 4.65 - 1))
    # The written diagnostics: weight magnitude 0.1·(probe number) at each of n probes, dormant units 2% at all.
    n = len(CURVES["27M"])
    assert float(rows["shrink_perturb"]["weight_magnitude_change_percent"]) == pytest.approx(100 * (n - 1))
    assert float(rows["none"]["dormant_change_points"]) == 0.0
    assert (root / "analysis" / "fig_mitigations.png").exists()
    assert "## Mitigations" in (root / "analysis" / "report.md").read_text()
    side_by_side = printed[printed.index("variants side by side"):]
    assert f"{sum(changes) / 2:+.2f} ± {float(rows['none']['auc_change_pm']):.2f}" in side_by_side
    assert rows["none"]["verdict"] in side_by_side.splitlines()[2]


def _add_extended_probes(run_dir, aucs: dict[int, float], languages: dict[int, str]):
    """Extended-probing rows (Appendix B) next to the cycle-end rows `write_run` wrote."""
    for task, auc in aucs.items():
        row = {"status": "ok", "auc": auc, "checkpoint": f"x/{task}", "task_index": task, "cycle": task // 8,
               "language": languages[task % 8], "tokens_seen": (task + 1) * 1000}
        (run_dir / "probes" / f"task-{task:05d}.json").write_text(json.dumps(row))


def test_eq1_uses_the_cycle_1_probe_figure_2_cycle_ends_and_onsets_every_probe(tmp_path, write_run, capsys):
    from plasticity_ray.analysis import figures
    from plasticity_ray.analysis.report import language_table, onset_rows
    from plasticity_ray.analysis.runs import load_run

    root = tmp_path / "extended"
    cycle_ends = [3.0, 2.9, 2.8, 2.9, 3.1]  # after tasks 8, 16, 24, 32, 40 (ru)
    write_run(root, "run", "5M", "paper", cycle_ends, baseline=4.0)
    # zh after tasks 2, 10, 18, ... and de after tasks 6, 14, 22, ...: the de probe after 22 tasks is the
    # lowest point, and the zh probe after task 2 comes before any cycle end.
    extended = {1: 3.3, 5: 3.2, 9: 3.0, 13: 2.95, 17: 2.8, 21: 2.6, 25: 2.85, 29: 2.9, 33: 3.0, 37: 3.05}
    _add_extended_probes(root / "run", extended, {1: "zh", 5: "de"})
    run = load_run(root / "run")
    assert [run.tasks_trained(p) for p in run.probes][:4] == [2, 6, 8, 10]

    # Eq. (1): AUC₁ is the probe at the end of cycle 1 (3.0), not the first probe (zh after task 2, 3.3).
    assert run.auc_reference["task_index"] == 7
    changes = dict(zip([p["task_index"] for p in run.probes], run.auc_change(run.probes)))
    assert changes[7] == 0.0 and changes[1] == pytest.approx(10.0) and changes[39] == pytest.approx(100 * (3.1 / 3 - 1))

    # Figure 2: cycle-end probes only, one point per cycle.
    fig = figures.fig_auc_change([run], {})
    xs, ys = fig.axes[0].lines[0].get_data()
    assert list(xs) == [1, 2, 3, 4, 5]
    assert list(ys) == pytest.approx([100 * (a / 3.0 - 1) for a in cycle_ends])

    # Onsets (Appendix B): every probe, normalised by the baseline, smoothed; the valley is at 22 tasks.
    rows, onsets = onset_rows([run])
    assert onsets["run"].tasks == sorted([t + 1 for t in extended] + [8, 16, 24, 32, 40])
    assert onsets["run"].values[0] == pytest.approx(3.3 / 4.0)
    assert rows[0]["onset_tasks"] == 22 and rows[0]["status"] == "found"

    # Table III: mean AUC by the language trained just before the probe.
    table = {r["preceding_language"]: r for r in language_table([run])}
    assert set(table) == {"zh", "de", "ru"}
    assert table["zh"]["probes"] == 5 and table["zh"]["mean_auc"] == pytest.approx((3.3 + 3.0 + 2.8 + 2.85 + 3.0) / 5)
    assert table["ru"]["mean_auc"] == pytest.approx(sum(cycle_ends) / 5)

    # The tables the user reads say the same.
    assert main(["results", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trials"][0]["auc_change_percent"] == pytest.approx(100 * (3.1 / 3 - 1))  # the last cycle end
    by_task = {p["task_index"]: p for p in result["probes"]}
    assert by_task[7]["auc_change_percent"] == 0.0 and by_task[1]["auc_change_percent"] == pytest.approx(10.0)


def test_stationary_eq1_is_against_the_first_probe(tmp_path, write_run):
    from plasticity_ray.analysis.runs import load_run

    write_run(tmp_path / "s", "run", "5M", "paper", [3.0, 2.9, 3.3], baseline=4.0)
    spec_file = tmp_path / "s" / "run" / "spec.json"
    spec = json.loads(spec_file.read_text())
    spec["schedule"]["mode"] = "stationary"
    spec_file.write_text(json.dumps(spec))
    run = load_run(tmp_path / "s" / "run")
    assert run.cycle_end_probes == run.probes
    assert run.auc_change(run.probes) == pytest.approx([0.0, 100 * (2.9 / 3 - 1), 10.0])


def test_seeds_form_a_group_whose_conclusions_carry_their_uncertainty(tmp_path, write_run, capsys):
    """Two seeds × two probe replicates of a clear valley (bottom after 32 tasks) that rises well
    above the noise; a third run with one seed and one replicate says that it has no interval."""
    root = tmp_path / "g"
    valley = [3.4, 3.2, 3.0, 2.9, 3.0, 3.2, 3.4, 3.6]
    for seed, shift in ((0, 0.0), (1, 0.05)):
        reps = [[v + shift + d, v + shift - d] for v, d in zip(valley, [0.01, -0.02, 0.015, 0.01, -0.01, 0.02, 0.01, -0.015])]
        write_run(root, f"5M_seed{seed}", "5M", "paper", None, baseline=3.5, seed=seed, replicates=reps)
    write_run(root, "12M_seed0", "12M", "paper", valley, baseline=3.5)
    assert main(["analyze", str(root)]) == 0
    out = capsys.readouterr().out
    with open(root / "analysis" / "onsets.csv") as f:
        groups = {r["size"]: r for r in csv.DictReader(f)}
    five = groups["5M"]
    assert (five["seeds"], five["replicates"], five["noise"]) == ("2", "2", "seeds")
    assert int(five["onset_tasks"]) == 32 and int(five["onset_lo"]) <= 32 <= int(five["onset_hi"])
    assert five["verdict"] == "significant" and float(five["p_value"]) < 0.1
    changes = [100 * ((valley[-1] + s) / (valley[0] + s) - 1) for s in (0.0, 0.05)]
    assert float(five["auc_change_percent"]) == pytest.approx(sum(changes) / 2)
    assert float(five["auc_change_pm"]) == pytest.approx(6.3138 * abs(changes[0] - changes[1]) / 2, rel=1e-3)
    assert float(five["cycles"]) == 8  # the last cycle-end probe (after 8 cycles) against the first (Eq. 1)
    assert "5M (lr 0.003) (2 seeds × 2 probe replicates): probe AUC +" in five["message"]
    assert "loss of plasticity: significant" in five["message"] and five["message"] in out
    twelve = groups["12M"]
    assert twelve["onset_lo"] == "" and twelve["verdict"] == "no verdict"
    assert "no interval: one seed and one probe replicate measure no noise" in twelve["message"]
    assert len(list(csv.DictReader(open(root / "analysis" / "run_onsets.csv")))) == 3  # single runs stay available
    # `results --json` and groups.csv carry the same fields
    assert main(["results", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_size = {g["size"]: g for g in result["groups"]}
    assert by_size["5M"]["message"] == five["message"] and by_size["5M"]["onset_lo"] == int(five["onset_lo"])
    assert {p["auc_sd"] is not None for p in result["probes"] if p["size"] == "5M"} == {True}
    with open(root / "groups.csv") as f:
        assert {r["size"]: r["message"] for r in csv.DictReader(f)}["5M"] == five["message"]


def test_a_damaged_probe_row_is_skipped_with_one_warning(tmp_path, write_run, capsys):
    """Half a JSON document (a full disk, an interrupted copy) costs that probe, not the analysis."""
    root = tmp_path / "damaged"
    write_run(root, "run", "5M", "paper", CURVES["27M"], baseline=3.5)
    damaged = root / "run" / "probes" / "task-00007.json"
    damaged.write_text(damaged.read_text()[:20])
    assert main(["analyze", str(root)]) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "damaged" in line] == [
        f"warning: {damaged}: damaged row (not a JSON document), skipped"]
    with open(root / "analysis" / "run_onsets.csv") as f:
        assert next(csv.DictReader(f))["probes"] == str(len(CURVES["27M"]) - 1)
