"""Result rows of a run: a JSON-lines file in the run directory plus TensorBoard events.

Rows are appended and flushed to disk one at a time; a crash can at worst cut the last line, which
readers skip. After a resume the steps since the last checkpoint are trained and logged again;
readers keep the last row for each (task, step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, filename: str = "metrics.jsonl", tensorboard: bool = True):
        self.path = run_dir / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict, step: int | None = None, prefix: str = "train") -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._writer is not None and step is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_rows(path: Path, key: tuple[str, ...] = ("task", "step")) -> list[dict]:
    """The rows of a JSON-lines file, skipping a torn last line, the last row per `key` kept."""
    if not path.exists():
        return []
    rows: dict = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            rows[tuple(row.get(k) for k in key)] = row
    return sorted(rows.values(), key=lambda r: tuple(r.get(k) for k in key))
