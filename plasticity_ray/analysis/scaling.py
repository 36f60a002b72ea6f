"""Which onsets are fitted together: Appendix B's scaling fits, one per family of like runs.

A family is the groups (runs that differ only in their seed) of one variant (mitigation) trained by
one learning-rate rule — the paper's per-size rule (`optimizer.lr: paper`, Table II) or one fixed
value — across model sizes, in continual mode. Pooling variants or learning rates into one fit
would mix different laws. The paper's own family is variant "none" with the paper's LR; it comes
first.

In a family, a group's onset is fitted when it is a found minimum. Left out, and counted:
- an onset "at or before" the first window (status from_start): only a bound;
- a group whose verdict is "not distinguishable from noise": its minimum is not shown to be an onset.
A group without a verdict (one seed: training noise unmeasured) is fitted and marked as such, since
the paper's protocol runs one seed per size.
"""

from __future__ import annotations

from plasticity_ray.analysis.fits import fit_onsets
from plasticity_ray.analysis.onset import LEVEL
from plasticity_ray.errors import UserError

POINT_COLUMNS = ["family", "group", "size", "params", "onset_tasks", "onset_lo", "onset_hi", "status", "verdict",
                 "fitted", "note"]


def family_name(row: dict) -> str:
    return f"{row['variant']}, {row['lr_rule']}"


def fit_point(row: dict) -> tuple[bool, str]:
    """Whether a group's onset enters its family's fit, and the note the table shows."""
    if row["onset_tasks"] is None:
        return False, f"no onset ({row['status']})"
    if row["status"] == "from_start":
        return False, "left out: only a bound (at or before the first window)"
    if row["verdict"] == "not distinguishable from noise":
        return False, "left out: its rise is not distinguishable from noise"
    if row["verdict"] == "no verdict":
        return True, "fitted; no calibrated verdict of loss (one seed)"
    return True, "fitted"


def family_fits(group_rows: list[dict], level: float = LEVEL) -> tuple[list[dict], list[dict]]:
    """(families, point rows). Each family: {family, variant, lr_rule, points, left_out, fit (or None),
    why_no_fit}; the paper's family first, then by name. Point rows: one per continual group."""
    continual = [r for r in group_rows if r["mode"] == "continual"]
    names = sorted({family_name(r) for r in continual}, key=lambda n: (n != "none, paper LR", n))
    families, points = [], []
    for name in names:
        members = sorted((r for r in continual if family_name(r) == name), key=lambda r: (r["params"], r["group"]))
        fitted, left_out = [], []
        for row in members:
            used, note = fit_point(row)
            points.append({"family": name, **{k: row[k] for k in POINT_COLUMNS if k in row}, "fitted": used,
                           "note": note})
            if used:
                fitted.append(row)
            elif row["onset_tasks"]:
                left_out.append({"group": row["group"], "why": note})
        family = {"family": name, "variant": members[0]["variant"], "lr_rule": members[0]["lr_rule"],
                  "points": [{k: r[k] for k in ("group", "size", "params", "onset_tasks", "onset_lo", "onset_hi",
                                                "verdict")} for r in fitted],
                  "left_out": left_out,
                  "fit": None, "why_no_fit": None}
        sizes = len({r["params"] for r in fitted})
        if sizes >= 3:
            try:
                family["fit"] = fit_onsets([r["params"] for r in fitted], [r["onset_tasks"] for r in fitted],
                                           level=level)
            except UserError as err:
                family["why_no_fit"] = str(err)
        else:
            family["why_no_fit"] = f"onsets fitted for {sizes} model size(s); the scaling fits need 3"
        families.append(family)
    return families, points
