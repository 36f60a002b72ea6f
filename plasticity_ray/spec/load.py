"""Loading a spec file, overriding fields by dotted path, and expanding a sweep into its points:
the one expansion that `validate`, grid sweeps and Optuna sweeps all use."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from plasticity_ray.spec.problems import SpecError, problems_of, validated
from plasticity_ray.spec.schema import ExperimentSpec, is_spec_path


def _set_path(raw: dict, path: str, value: Any) -> dict:
    """A copy of `raw` with the dotted `path` set to `value`."""
    head, _, rest = path.partition(".")
    out = dict(raw)
    if rest:
        inner = out.get(head)
        out[head] = _set_path(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def _expand(spec: ExperimentSpec) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) of every sweep point: the grid's product (one empty point when there is
    neither grid nor explicit points) and the explicit points, each crossed with the variants; a
    variant's point also sets `label` to the variant's name."""
    grid = spec.sweep.grid
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not grid and spec.sweep.points:
        points = []  # only the explicit points
    points += [dict(point) for point in spec.sweep.points]
    labelled = [(", ".join(f"{k}={v}" for k, v in point.items()), point) for point in points]
    if not spec.sweep.variants:
        return [(label or "single run", point) for label, point in labelled]
    return [(", ".join(x for x in (label, f"variant {name}") if x), {**point, **overrides, "label": name})
            for label, point in labelled for name, overrides in spec.sweep.variants.items()]


def grid_points(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The sweep's points as dotted-path override dicts (see `_expand`)."""
    return [point for _, point in _expand(spec)]


def point_labels(spec: ExperimentSpec) -> list[str]:
    """A readable name for each of `grid_points`, in the same order."""
    return [label for label, _ in _expand(spec)]


def with_overrides(spec: ExperimentSpec, overrides: dict[str, Any], source: str = "overrides") -> ExperimentSpec:
    """The spec with dotted-path overrides applied and validated again."""
    raw = spec.model_dump(mode="json")
    for path, value in overrides.items():
        if not is_spec_path(path):
            raise SpecError(source, [f"{path}: not a field of the spec"])
        raw = _set_path(raw, path, value)
    return validated(raw, source)


def _override_problems(raw: dict, where: str, overrides: Any, known: list[str]) -> list[str]:
    """What a set of overrides (a sweep point or variant) adds to the base spec's `known` problems."""
    problems, changed = [], raw
    for path, value in (overrides.items() if isinstance(overrides, dict) else ()):
        if not is_spec_path(path):
            problems.append(f"{where}.{path}: not a field of the spec")
            continue
        changed = _set_path(changed, path, value)
    return problems + [f"{where}: {problem}" for problem in problems_of(changed) if problem not in known]


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read, validate and check every sweep point of a spec file; raises SpecError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(source, [f"cannot read the file: {err}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(source, [f"{where}not valid YAML ({getattr(err, 'problem', err)})"]) from None
    problems = problems_of(raw)
    grid = raw.get("sweep", {}).get("grid") if isinstance(raw, dict) and isinstance(raw.get("sweep"), dict) else None
    for path_, values in (grid.items() if isinstance(grid, dict) else ()):
        if not is_spec_path(path_):
            problems.append(f"sweep.grid.{path_}: not a field of the spec")
            continue
        for i, value in enumerate(values if isinstance(values, list) else ()):
            for problem in problems_of(_set_path(raw, path_, value)):
                if problem not in problems:  # only what this value adds to the base spec's problems
                    inner = problem[len(path_) :] if problem.startswith(path_) else f": {problem}"
                    problems.append(f"sweep.grid.{path_}[{i}]{inner}")
    sweep = raw.get("sweep") if isinstance(raw, dict) and isinstance(raw.get("sweep"), dict) else {}
    points = sweep.get("points")
    for i, overrides in enumerate(points if isinstance(points, list) else ()):
        problems += _override_problems(raw, f"sweep.points[{i}]", overrides, problems)
    variants = sweep.get("variants")
    for name, overrides in (variants.items() if isinstance(variants, dict) else ()):
        problems += _override_problems(raw, f"sweep.variants.{name}", overrides, problems)
    if problems:
        raise SpecError(source, problems)
    spec = ExperimentSpec.model_validate(raw)
    for label, point in _expand(spec):  # each value may be fine alone and clash with another
        try:
            with_overrides(spec, point)
        except SpecError as err:
            problems += [f"sweep point ({label}): {problem}" for problem in err.problems]
    if problems:
        raise SpecError(source, problems)
    return spec
