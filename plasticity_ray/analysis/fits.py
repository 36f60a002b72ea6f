"""Appendix B's four models of the onset T (task instances) against non-embedding parameters P.

linear        T = a + b·P        least squares
linear_log    T = a + b·ln P     least squares
exponential   T = a·e^(b·P)      nonlinear least squares in original units (Gauss–Newton covariance)
log_log       ln T = a + b·ln P  least squares in log space

Standard errors come from each fit's own residual variance (n − 2 degrees of freedom, in the space
the model is fitted in); R², in-sample RMSE and leave-one-out RMSE are computed on T in original
units for all four, so they compare. On the paper's Table IV this reproduces Table V.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from plasticity_ray.errors import UserError

MODELS = ("linear", "linear_log", "exponential", "log_log")
FORMULAS = {"linear": "T = a + b·P", "linear_log": "T = a + b·ln P", "exponential": "T = a·exp(b·P)",
            "log_log": "ln T = a + b·ln P"}


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    if len(y) <= 2:  # an exact fit (a leave-one-out fold of three points): no residual variance
        return coef, np.full(2, np.nan)
    residual = y - design @ coef
    variance = residual @ residual / (len(y) - 2)
    return coef, np.sqrt(np.diag(variance * np.linalg.inv(design.T @ design)))


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


def fit_model(name: str, params: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, Callable]:
    """(coefficients [a, b], standard errors, predict(P) → T)."""
    if name == "linear":
        c, se = _ols(params, onsets)
    elif name == "linear_log":
        c, se = _ols(np.log(params), onsets)
    elif name == "log_log":
        c, se = _ols(np.log(params), np.log(onsets))
    elif name == "exponential":
        start, _ = _ols(params, np.log(onsets))  # the log-linear fit starts the nonlinear one
        with warnings.catch_warnings():  # two points: exact, and no covariance (NaN standard errors)
            warnings.simplefilter("ignore", OptimizeWarning)
            c, cov = curve_fit(_exponential, params, onsets, p0=[math.exp(start[0]), start[1]], maxfev=100_000,
                               xtol=1e-15, ftol=1e-15)
        se = np.sqrt(np.diag(cov))
    else:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return c, se, predictor(name, c[0], c[1])


def fit_onsets(params: list[float], onsets: list[float], predict: list[float] = (),
               tokens_per_task: float | None = None) -> dict:
    """{"models": {name: {a, b, se_a, se_b, r2, rmse, loo_rmse, formula}}, "best", "predictions"};
    the best model has the lowest leave-one-out RMSE; predictions use it."""
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
    best = min(MODELS, key=lambda name: models[name]["loo_rmse"])
    predict_fn = predictor(best, models[best]["a"], models[best]["b"])
    predictions = []
    for size in predict:
        tasks = float(predict_fn(np.array([float(size)]))[0])
        row = {"params": float(size), "model": best, "onset_tasks": tasks}
        if tokens_per_task:
            row["onset_tokens"] = tasks * tokens_per_task
        predictions.append(row)
    return {"models": models, "best": best, "predictions": predictions}


def read_onset_table(path: Path) -> tuple[list[float], list[float]]:
    """A CSV with columns params,onset (other columns ignored)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"params", "onset"} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need params,onset)")
            rows = [(float(r["params"]), float(r["onset"])) for r in reader if r["params"] and r["onset"]]
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise UserError(f"{path}: not a number ({err})") from None
    return [p for p, _ in rows], [t for _, t in rows]


def format_fits(result: dict) -> str:
    lines = [f"{'model':<12} {'formula':<18} {'a':>12} {'se(a)':>10} {'b':>12} {'se(b)':>10} {'R²':>7} "
             f"{'RMSE':>8} {'LOO RMSE':>9}"]
    for name, m in result["models"].items():
        lines.append(f"{name:<12} {m['formula']:<18} {m['a']:>12.5g} {m['se_a']:>10.4g} {m['b']:>12.5g} "
                     f"{m['se_b']:>10.4g} {m['r2']:>7.4f} {m['rmse']:>8.3f} {m['loo_rmse']:>9.3f}")
    lines.append(f"best by leave-one-out RMSE: {result['best']}")
    for row in result["predictions"]:
        tokens = f" = {row['onset_tokens']:.3g} tokens" if "onset_tokens" in row else ""
        lines.append(f"  P = {row['params']:.3g}: onset after {row['onset_tasks']:,.0f} task instances{tokens}")
    return "\n".join(lines)
