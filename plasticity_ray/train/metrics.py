"""Result rows of a run: a JSON-lines file in the run directory plus TensorBoard events.

Rows are appended and flushed to disk one at a time (on object storage the object is rewritten
whole); a crash can at worst cut the last line, which readers skip. A resumed run first drops the
rows logged after its checkpoint (`keep_until`), since it trains and logs those steps again: the
file holds each step once. TensorBoard gets the same: each log writes its own folder
(`tensorboard/train`, `tensorboard/signals`; two writers in one folder opened in the same second
would write one file name and corrupt it), and a resumed writer purges the steps after the
checkpoint (`purge_step`), so TensorBoard's reader sees each step once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import directory_check
from tensorboardX.summary import scalar

from plasticity_ray.rundir import METRICS_FILE, read_jsonl
from plasticity_ray.storage import append_text, is_local, patiently, uri, write_bytes_atomic


class EventFile:
    """One TensorBoard event file, written synchronously: `add` returns once its record is flushed,
    so a crash loses nothing that was added (tensorboardX's SummaryWriter hands records to a thread
    and flushes what that thread has taken, which lost a run's first signals to a crash). The file
    name carries `suffix`, so writers in one folder never share a name."""

    def __init__(self, folder: str, suffix: str = "", purge_step: int | None = None):
        directory_check(folder)
        self._folder, self._remote = folder, not is_local(folder)
        self._writer = EventsWriter(f"{folder}/events", suffix)
        if purge_step is not None:  # TensorBoard hides what an earlier attempt logged at this step and later
            self._write(purge_step, session_log=SessionLog(status=SessionLog.START))

    def _write(self, step: int, **fields) -> None:
        self._writer.write_event(Event(wall_time=time.time(), step=step, **fields))
        if self._remote:  # the whole object is uploaded again: safe to retry while the store does not answer
            patiently(self._writer.flush, self._folder)
        else:
            self._writer.flush()

    def add(self, scalars: dict[str, float], step: int) -> None:
        values = [value for tag, number in scalars.items() for value in scalar(tag, number).value]
        self._write(step, summary=Summary(value=values))

    def close(self) -> None:
        self._writer.close()


class RunLog:
    def __init__(self, run_dir: Path, filename: str = METRICS_FILE, tensorboard: str | None = "train",
                 keep_until: int | None = None):
        """`tensorboard`: the folder under `tensorboard/` for this log's events (None: no events).
        `keep_until`: the global step of the checkpoint a run resumes from; rows after it go."""
        self.path = run_dir / filename
        if is_local(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until is not None and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("global_step", 0) <= keep_until]
            write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._events = None
        if tensorboard:
            self._events = EventFile(uri(run_dir / "tensorboard" / tensorboard), suffix=f".{os.getpid()}",
                                     purge_step=keep_until + 1 if keep_until else None)

    def write(self, row: dict, step: int | None = None, prefix: str = "train") -> None:
        append_text(self.path, json.dumps(row) + "\n")
        if self._events is not None and step is not None:
            self._events.add({f"{prefix}/{key}": value for key, value in row.items()
                              if isinstance(value, (int, float)) and not isinstance(value, bool)}, step)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
