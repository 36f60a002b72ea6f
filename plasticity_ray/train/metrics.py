"""Result rows of a run: a JSON-lines file in the run directory plus TensorBoard events.

Rows are appended and flushed to disk one at a time (on object storage the object is rewritten
whole); a crash can at worst cut the last line, which readers skip. A resumed run first drops the rows logged after its checkpoint (`keep_until`), since
it trains and logs those steps again: the file holds each step once.
"""

from __future__ import annotations

import json
from pathlib import Path

from plasticity_ray.rundir import METRICS_FILE, read_jsonl
from plasticity_ray.storage import append_text, is_local, uri, write_bytes_atomic


class RunLog:
    def __init__(self, run_dir: Path, filename: str = METRICS_FILE, tensorboard: bool = True,
                 keep_until: int | None = None):
        """`keep_until`: the global step of the checkpoint a run resumes from; rows after it go."""
        self.path = run_dir / filename
        if is_local(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("global_step", 0) <= keep_until]
            write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(uri(run_dir / "tensorboard"))  # tensorboardX writes s3:// too

    def write(self, row: dict, step: int | None = None, prefix: str = "train") -> None:
        append_text(self.path, json.dumps(row) + "\n")
        if self._writer is not None and step is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{prefix}/{key}", value, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
