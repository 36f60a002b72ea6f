"""Appendix B's four models of the onset T (task instances) against non-embedding parameters P.

linear        T = a + b·P        least squares
linear_log    T = a + b·ln P     least squares
exponential   T = a·e^(b·P)      nonlinear least squares in original units (Gauss–Newton covariance)
log_log       ln T = a + b·ln P  least squares in log space

Standard errors come from each fit's own residual variance (n − 2 degrees of freedom, in the space
the model is fitted in); R², in-sample RMSE and leave-one-out RMSE are computed on T in original
units for all four, so they compare. On the paper's Table IV this reproduces Table V.

Intervals at a level L (90% by default): a coefficient's is ± t(n − 2) standard errors; a
prediction's is for the onset of one new model of that size, so it holds both the fit's uncertainty
and the scatter of onsets around the line (the residual variance, which already contains the
onsets' own measurement noise): ŷ ± t·s·√(1 + x₀ᵀ(XᵀX)⁻¹x₀) in the space the model is fitted in
(log-log: on ln T, then exponentiated, so the interval is not symmetric), and the delta method
for the exponential model. `band` gives the confidence band of the fitted line itself.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit

from plasticity_ray.analysis.onset import LEVEL
from plasticity_ray.errors import UserError
from plasticity_ray.tables import read_csv

MODELS = ("linear", "linear_log", "exponential", "log_log")
FORMULAS = {"linear": "T = a + b·P", "linear_log": "T = a + b·ln P", "exponential": "T = a·exp(b·P)",
            "log_log": "ln T = a + b·ln P"}


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients, their covariance and the residual variance (NaN for an exact fit of 2 points)."""
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    if len(y) <= 2:  # an exact fit (a leave-one-out fold of three points): no residual variance
        return coef, np.full((2, 2), np.nan), float("nan")
    residual = y - design @ coef
    variance = float(residual @ residual / (len(y) - 2))
    return coef, variance * np.linalg.inv(design.T @ design), variance


def _exponential(p, a, b):
    return a * np.exp(b * p)


def predictor(name: str, a: float, b: float) -> Callable:
    """P → T for a model with coefficients a and b."""
    forms = {
        "linear": lambda p: a + b * np.asarray(p, float),
        "linear_log": lambda p: a + b * np.log(p),
        "exponential": lambda p: _exponential(np.asarray(p, float), a, b),
        "log_log": lambda p: np.exp(a + b * np.log(p)),
    }
    if name not in forms:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return forms[name]


# How each model's T is fitted: the x it is linear in, and whether y is ln T (None: the nonlinear fit).
_LINEAR_IN = {"linear": (lambda p: p, False), "linear_log": (np.log, False), "log_log": (np.log, True)}


def _fit(name: str, params: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients [a, b], their covariance, and the residual variance in the fitted space."""
    if name in _LINEAR_IN:
        x, log_y = _LINEAR_IN[name]
        return _ols(x(params), np.log(onsets) if log_y else onsets)
    if name != "exponential":
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    start, _, _ = _ols(params, np.log(onsets))  # the log-linear fit starts the nonlinear one
    with warnings.catch_warnings():  # two points: exact, and no covariance (NaN standard errors)
        warnings.simplefilter("ignore", OptimizeWarning)
        c, cov = curve_fit(_exponential, params, onsets, p0=[math.exp(start[0]), start[1]], maxfev=100_000,
                           xtol=1e-15, ftol=1e-15)
    residual = onsets - _exponential(params, *c)
    variance = float(residual @ residual / (len(onsets) - 2)) if len(onsets) > 2 else float("nan")
    return c, cov, variance


def fit_model(name: str, params: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, Callable]:
    """(coefficients [a, b], standard errors, predict(P) → T)."""
    c, cov, _ = _fit(name, params, onsets)
    return c, np.sqrt(np.diag(cov)), predictor(name, c[0], c[1])


def band(name: str, params: list[float], onsets: list[float], at: np.ndarray, level: float = LEVEL,
         new_onset: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) at sizes `at`: the confidence band of the fitted line at `level`, or with
    `new_onset` the prediction interval for one new model's onset."""
    p, t, at = np.asarray(params, float), np.asarray(onsets, float), np.asarray(at, float)
    c, cov, variance = _fit(name, p, t)
    quantile = stats.t.ppf((1 + level) / 2, len(p) - 2)
    extra = variance if new_onset else 0.0
    if name in _LINEAR_IN:
        x, log_y = _LINEAR_IN[name]
        design = np.column_stack([np.ones_like(at), x(at)])
        centre = design @ c
        half = quantile * np.sqrt(np.einsum("ij,jk,ik->i", design, cov, design) + extra)
        low, high = centre - half, centre + half
        return (np.exp(low), np.exp(high)) if log_y else (low, high)
    growth = np.exp(c[1] * at)
    gradient = np.column_stack([growth, c[0] * at * growth])  # ∂T/∂a, ∂T/∂b
    centre = c[0] * growth
    half = quantile * np.sqrt(np.einsum("ij,jk,ik->i", gradient, cov, gradient) + extra)
    return centre - half, centre + half


def fit_onsets(params: list[float], onsets: list[float], predict: list[float] = (),
               tokens_per_task: float | None = None, level: float = LEVEL) -> dict:
    """{"models": {name: {a, b, se_a, se_b, ci_a, ci_b, r2, rmse, loo_rmse, formula}}, "best",
    "level", "predictions"}; the best model has the lowest leave-one-out RMSE; predictions use it and
    carry their prediction interval at `level`."""
    p, t = np.asarray(params, float), np.asarray(onsets, float)
    if len(p) < 3:
        raise UserError(f"{len(p)} (params, onset) point(s): the fits need at least 3")
    if (p <= 0).any() or (t <= 0).any():
        raise UserError("params and onsets must be positive (the models take logarithms)")
    models = {}
    for name in MODELS:
        coef, se, fitted = fit_model(name, p, t)
        residual = t - fitted(p)
        loo = []
        for i in range(len(p)):
            keep = np.arange(len(p)) != i
            loo.append(t[i] - float(fit_model(name, p[keep], t[keep])[2](p[i : i + 1])[0]))
        models[name] = {
            "formula": FORMULAS[name], "a": float(coef[0]), "b": float(coef[1]), "se_a": float(se[0]),
            "se_b": float(se[1]), "r2": float(1 - residual @ residual / np.sum((t - t.mean()) ** 2)),
            "rmse": float(np.sqrt(np.mean(residual**2))), "loo_rmse": float(np.sqrt(np.mean(np.square(loo)))),
        }
        quantile = stats.t.ppf((1 + level) / 2, len(p) - 2)
        for key in ("a", "b"):
            value, se = models[name][key], models[name][f"se_{key}"]
            models[name][f"ci_{key}"] = [value - quantile * se, value + quantile * se]
    best = min(MODELS, key=lambda name: models[name]["loo_rmse"])
    predict_fn = predictor(best, models[best]["a"], models[best]["b"])
    predictions = []
    for size in predict:
        tasks = float(predict_fn(np.array([float(size)]))[0])
        low, high = band(best, p, t, np.array([float(size)]), level, new_onset=True)
        row = {"params": float(size), "model": best, "onset_tasks": tasks,
               "onset_tasks_interval": [float(low[0]), float(high[0])]}
        if tokens_per_task:
            row["onset_tokens"] = tasks * tokens_per_task
            row["onset_tokens_interval"] = [float(low[0]) * tokens_per_task, float(high[0]) * tokens_per_task]
        predictions.append(row)
    return {"models": models, "best": best, "level": level, "predictions": predictions}


def read_onset_table(path: Path) -> tuple[list[float], list[float]]:
    """A CSV with columns params,onset (other columns ignored)."""
    rows = read_csv(path, {"params": float, "onset": float})
    return [p for p, _ in rows], [t for _, t in rows]


def format_fits(result: dict) -> str:
    level = f"{result['level']:.0%}"
    lines = [f"{'model':<12} {'formula':<18} {'a':>12} {'se(a)':>10} {'b':>12} {'se(b)':>10} {'R²':>7} "
             f"{'RMSE':>8} {'LOO RMSE':>9}  {level + ' CI of b':>24}"]
    for name, m in result["models"].items():
        ci = f"[{m['ci_b'][0]:.4g}, {m['ci_b'][1]:.4g}]"
        lines.append(f"{name:<12} {m['formula']:<18} {m['a']:>12.5g} {m['se_a']:>10.4g} {m['b']:>12.5g} "
                     f"{m['se_b']:>10.4g} {m['r2']:>7.4f} {m['rmse']:>8.3f} {m['loo_rmse']:>9.3f}  {ci:>24}")
    lines.append(f"best by leave-one-out RMSE: {result['best']}")
    for row in result["predictions"]:
        low, high = row["onset_tasks_interval"]
        tokens = ""
        if "onset_tokens" in row:
            t_low, t_high = row["onset_tokens_interval"]
            tokens = f" = {row['onset_tokens']:.3g} tokens [{t_low:.3g}, {t_high:.3g}]"
        lines.append(f"  P = {row['params']:.3g}: onset after {row['onset_tasks']:,.0f} task instances, {level} "
                     f"prediction interval [{low:,.0f}, {high:,.0f}]{tokens}")
    return "\n".join(lines)
