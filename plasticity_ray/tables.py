"""Plain-text and CSV tables of row dicts, for every command that prints or writes one."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from plasticity_ray.errors import UserError


def read_csv(path: Path, columns: dict[str, Callable]) -> list[tuple]:
    """The rows of a CSV file as tuples of `columns` (name → conversion), rows with an empty value
    left out (other columns ignored); a missing file or column or a bad value is one UserError."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = set(columns) - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need {','.join(columns)})")
            return [tuple(convert(row[name]) for name, convert in columns.items()) for row in reader
                    if all(row[name] for name in columns)]
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise UserError(f"{path}: not a number ({err})") from None


def to_csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()



def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    """Rows as the lines of a Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
