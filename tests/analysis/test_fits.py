"""Appendix B's scaling fits on the paper's Table IV must give Table V (numbers typed from the paper)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plasticity_ray.analysis.fits import fit_onsets, read_onset_table

TABLE_IV = Path(__file__).resolve().parents[2] / "results" / "paper" / "table_iv.csv"

# Table V: (a, se_a, b, se_b, R², in-sample RMSE, LOO RMSE) as printed.
TABLE_V = {
    "linear": (12.9086, 6.3401, 3.5937e-7, 5.12e-8, 0.8914, 11.827, 31.113),
    "linear_log": (-431.4626, 88.0119, 26.9574, 5.0018, 0.8288, 14.852, 24.615),
    "exponential": (24.459, 6.830, 5.0992e-9, 1.07e-9, 0.7844, 16.668, 588.914),
    "log_log": (-11.2501, 1.8077, 0.8269, 0.1027, 0.8969, 11.524, 17.864),
}


def _digits(printed: str) -> float:
    mantissa, _, exponent = printed.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10 ** ((int(exponent) if exponent else 0) - decimals)


@pytest.fixture(scope="module")
def result():
    params, onsets = read_onset_table(TABLE_IV)
    return fit_onsets(params, onsets, predict=[1e9, 7e9], tokens_per_task=5e9)


@pytest.mark.parametrize("name", list(TABLE_V))
def test_table_v_is_reproduced(result, name):
    m = result["models"][name]
    printed = dict(zip(["a", "se_a", "b", "se_b", "r2", "rmse", "loo_rmse"], TABLE_V[name]))
    for key, value in printed.items():
        if name == "exponential" and key in ("se_a", "loo_rmse"):
            # The nonlinear fit: the paper's LOO folds and covariance are not reproducible to the last
            # printed digit by any converged least-squares fit we tried (scipy lm/trf, tolerances, scalings):
            # ours are 6.8255 and 588.94, within 0.1%.
            assert m[key] == pytest.approx(value, rel=1e-3), key
        else:
            tolerance = _digits(repr(value) if "e" in repr(value) else f"{value}")
            assert abs(m[key] - value) <= tolerance * 1.0001, (key, m[key], value)


def test_log_log_is_best_and_predicts_the_papers_onsets(result):
    assert result["best"] == "log_log"
    one_b, seven_b = result["predictions"]
    assert round(one_b["onset_tasks"]) == 360 and one_b["onset_tokens"] == pytest.approx(1.8e12, rel=0.01)
    assert round(seven_b["onset_tasks"], -2) == 1800 and seven_b["onset_tokens"] == pytest.approx(9e12, rel=0.01)


def test_the_cli_prints_the_json_the_issue_names():
    out = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "fit-onset", str(TABLE_IV), "--json",
                          "--predict", "1e9", "7e9", "--tokens-per-task", "5e9"], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    assert set(result["models"]) == {"linear", "linear_log", "exponential", "log_log"}
    assert all({"a", "b", "se_a", "se_b", "r2", "rmse", "loo_rmse"} <= set(m) for m in result["models"].values())
    assert result["best"] == "log_log" and len(result["predictions"]) == 2


def test_bad_tables_are_clear_errors(tmp_path):
    two = tmp_path / "two.csv"
    two.write_text("params,onset\n1e6,3\n2e6,5\n")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("size,t\n1,2\n")
    for path, message in ((two, "the fits need at least 3"), (wrong, "missing column(s) onset, params")):
        out = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "fit-onset", str(path)],
                             capture_output=True, text=True)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_every_coefficient_has_a_t_interval_and_predictions_a_prediction_interval(result):
    from scipy import stats

    t = stats.t.ppf(0.95, 8 - 2)  # eight sizes in Table IV, two coefficients
    for m in result["models"].values():
        for key in ("a", "b"):
            assert m[f"ci_{key}"] == pytest.approx([m[key] - t * m[f"se_{key}"], m[key] + t * m[f"se_{key}"]])
    # The log-log prediction for 1e9 parameters by hand: ŷ ± t·s·√(1 + x₀ᵀ(XᵀX)⁻¹x₀) on ln T.
    params, onsets = read_onset_table(TABLE_IV)
    x, y = np.log(params), np.log(onsets)
    design = np.column_stack([np.ones_like(x), x])
    coef = np.linalg.solve(design.T @ design, design.T @ y)
    s2 = np.sum((y - design @ coef) ** 2) / (len(y) - 2)
    x0 = np.array([1.0, np.log(1e9)])
    half = t * np.sqrt(s2 * (1 + x0 @ np.linalg.inv(design.T @ design) @ x0))
    one_b = result["predictions"][0]
    assert one_b["onset_tasks_interval"] == pytest.approx([np.exp(x0 @ coef - half), np.exp(x0 @ coef + half)])
    low, high = one_b["onset_tasks_interval"]
    assert 100 < low < 360 < high < 1000  # 360 task instances, but anywhere from ~140 to ~940 at 90%
    assert one_b["onset_tokens_interval"] == pytest.approx([low * 5e9, high * 5e9])


def test_prediction_intervals_cover_new_onsets_at_their_level():
    from plasticity_ray.analysis.fits import band

    rng = np.random.default_rng(11)
    params = np.array([5e6, 12e6, 27e6, 39e6, 53e6, 83e6, 106e6, 314e6])
    covered = 0
    for _ in range(400):
        onsets = np.exp(-11.25 + 0.83 * np.log(params) + rng.normal(0, 0.4, len(params)))
        new = np.exp(-11.25 + 0.83 * np.log(1e9) + rng.normal(0, 0.4))
        low, high = band("log_log", params, onsets, np.array([1e9]), 0.9, new_onset=True)
        covered += low[0] <= new <= high[0]
    assert 0.86 <= covered / 400 <= 0.94


def test_fit_onset_prints_the_intervals():
    out = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "fit-onset", str(TABLE_IV), "--predict", "1e9"],
                         capture_output=True, text=True, check=True).stdout
    assert "onset after 360 task instances, 90% prediction interval [" in out
    assert "90% CI of b" in out
