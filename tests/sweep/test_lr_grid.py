"""Appendix A's learning-rate table from scored trials."""

import pytest

from plasticity_ray.sweep.lr_grid import format_lr_grid, lr_grid_table

GRID = [1e-4, 3e-4, 5e-4, 8e-4, 1e-3, 3e-3, 5e-3]  # Eq. (6)-(7)
# Table II's "Interpolation" column, η × 10³, typed from the paper.
TABLE_II_INTERPOLATED = {"5M": 3.00, "12M": 2.30, "27M": 1.88, "39M": 1.73, "53M": 1.61, "83M": 1.41,
                         "106M": 1.33, "314M": 1.00}


def _trials(best: dict[str, float]) -> list[dict]:
    """A bowl-shaped score in log LR around each size's best grid LR."""
    import math

    return [{"size": size, "lr": lr, "status": "complete", "val_score": 3.0 + (math.log(lr / b)) ** 2}
            for size, b in best.items() for lr in GRID]


def test_the_paper_endpoints_give_alpha_and_table_ii_interpolation():
    table = lr_grid_table(_trials({"5M": 3e-3, "12M": 3e-3, "27M": 1e-3, "39M": 1e-3, "53M": 1e-3, "83M": 1e-3,
                                   "106M": 1e-3, "314M": 1e-3}))
    assert table["alpha"] == pytest.approx(0.79248, abs=5e-6)
    assert table["anchors"] == {"small": "5M", "large": "314M"}
    got = {r["size"]: round(r["interpolated_lr"] * 1e3, 2) for r in table["sizes"]}
    assert got == TABLE_II_INTERPOLATED
    by_size = {r["size"]: r for r in table["sizes"]}
    assert by_size["27M"]["best_lr"] == 1e-3 and by_size["12M"]["best_lr"] == 3e-3
    # The endpoints were trained at their interpolated LR; 12M's 2.3e-3 is not in the grid.
    assert by_size["5M"]["interpolated_loss"] == by_size["5M"]["best_loss"] == 3.0
    assert by_size["12M"]["interpolated_loss"] is None
    assert "alpha = 0.79248" in format_lr_grid(table)


def test_unscored_or_unfinished_runs_do_not_count_and_one_size_is_not_enough():
    trials = _trials({"5M": 3e-3, "314M": 1e-3})
    trials.append({"size": "5M", "lr": 5e-3, "status": "incomplete", "val_score": 0.1})
    trials.append({"size": "12M", "lr": 1e-3, "status": "complete", "val_score": None})
    table = lr_grid_table(trials)
    assert [r["size"] for r in table["sizes"]] == ["5M", "314M"]
    assert table["sizes"][0]["best_lr"] == 3e-3
    with pytest.raises(ValueError, match="at least two hidden sizes"):
        lr_grid_table(_trials({"5M": 3e-3}))
