"""Appendix A's learning-rate table from an LR-grid experiment (Table II's layout).

Each size is scored at each learning rate by the mean of its run's last 10 validation losses
(`val_score`). The best LRs of the smallest and the largest size set the exponent of the power law
η(d) = η_small · (d_small / d)^α, α = log(η_large / η_small) / log(d_small / d_large); the paper's
3e-3 (d = 320) and 1e-3 (d = 1280) give α = log(1/3) / log(1/4) ≈ 0.79248. Every size then gets
its interpolated LR, and the loss at it when the experiment holds a run at that LR.
"""

from __future__ import annotations

import math
from pathlib import Path

from plasticity_ray.errors import UserError
from plasticity_ray.model.sizes import resolve_size
from plasticity_ray.storage import write_json_atomic
from plasticity_ray.sweep.results import experiment_tables

SAME_LR = 0.01  # relative tolerance for "a run at the interpolated LR"


def lr_grid_table(trials: list[dict]) -> dict:
    """{"alpha", "anchors", "sizes": [...]} from trial rows with size, lr and val_score; sizes
    without a scored run are left out. Raises ValueError with fewer than two scored hidden sizes."""
    scores: dict[str, dict[float, float]] = {}
    for t in trials:
        if t.get("val_score") is not None and t.get("status", "complete") == "complete":
            scores.setdefault(t["size"], {})[float(t["lr"])] = float(t["val_score"])
    sizes = sorted(scores, key=lambda name: (resolve_size(name).hidden, resolve_size(name).non_embedding_params))
    if len({resolve_size(s).hidden for s in sizes}) < 2:
        raise ValueError("an LR table needs scored runs (train.eval_every > 0) of at least two hidden sizes")
    best = {s: min(scores[s].items(), key=lambda item: item[1]) for s in sizes}
    small, large = sizes[0], sizes[-1]
    d_small, d_large = resolve_size(small).hidden, resolve_size(large).hidden
    alpha = math.log(best[large][0] / best[small][0]) / math.log(d_small / d_large)
    rows = []
    for s in sizes:
        size = resolve_size(s)
        interpolated = best[small][0] * (d_small / size.hidden) ** alpha
        at = [loss for lr, loss in scores[s].items() if abs(lr / interpolated - 1) <= SAME_LR]
        rows.append({
            "size": s, "hidden": size.hidden, "non_embedding_params": size.non_embedding_params,
            "interpolated_lr": interpolated, "interpolated_loss": at[0] if at else None,
            "best_lr": best[s][0], "best_loss": best[s][1],
            "grid": {f"{lr:g}": loss for lr, loss in sorted(scores[s].items())},
        })
    return {"alpha": alpha, "anchors": {"small": small, "large": large}, "sizes": rows}


def format_lr_grid(table: dict) -> str:
    lines = [f"{'model':>8} {'d':>5} {'interp. lr':>11} {'loss':>8} {'best lr':>9} {'loss':>8}   loss at each lr"]
    for r in table["sizes"]:
        loss = f"{r['interpolated_loss']:.4f}" if r["interpolated_loss"] is not None else "-"
        grid = "  ".join(f"{lr}: {v:.4f}" for lr, v in r["grid"].items())
        lines.append(f"{r['size']:>8} {r['hidden']:>5} {r['interpolated_lr']:>11.3g} {loss:>8} "
                     f"{r['best_lr']:>9.3g} {r['best_loss']:>8.4f}   {grid}")
    a = table["anchors"]
    lines.append(f"alpha = {table['alpha']:.5f}  (from the best LRs of {a['small']} and {a['large']}; "
                 "interp. lr = lr_small · (d_small/d)^alpha; its loss is shown when a run at that LR exists)")
    return "\n".join(lines)


def write_lr_grid(experiment_dir: Path) -> tuple[dict, Path]:
    """Table II of an LR-grid experiment, also written to its lr_grid.json (and where)."""
    result, _ = experiment_tables(experiment_dir)
    try:
        table = lr_grid_table(result["trials"])
    except ValueError as err:
        raise UserError(f"{experiment_dir}: {err}") from None
    path = experiment_dir / "lr_grid.json"
    write_json_atomic(path, table)
    return table, path
