"""The Ray Train worker loop: a plain PyTorch loop over the task schedule.

Ray appears only at the edges: the worker's rank and device come from the trial's Ray Train entry
point (`plasticity_ray.trial.train_worker`), the data from the per-task Ray Data stream, and
`ray.train.report` passes metrics up at a steady cadence on every rank. Checkpoints are written by
rank 0 into the run directory; a restarted worker group (or a re-run of the same command) resumes
from the newest one at the exact (task, step).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist

from plasticity_ray.data.prepare import load_prepared
from plasticity_ray.data.schedule import task_stream, validation_sample
from plasticity_ray.rundir import (COMPLETE_FILE, METRICS_FILE, STOP_FILE, CompleteRecord, MetricRow, ProbePoint, StopRecord,
                                   read_jsonl)
from plasticity_ray.spec import ExperimentSpec
from plasticity_ray.storage import read_text, write_json_atomic
from plasticity_ray.train import checkpoint
from plasticity_ray.train.alarms import AlarmBook, near_zero_fraction
from plasticity_ray.spec.protocol import Task, is_deferred, is_probe_point, task_info
from plasticity_ray.train.hooks import Gradients, Hooks, StepEnd, TaskEnd, TaskStart
from plasticity_ray.train.metrics import RunLog
from plasticity_ray.train.recipe import build, evaluate, make_optimizer, scheduled_lr, train_step


class _Prefetch:
    """Batches of one task's stream pulled by a background thread into a short queue, so the next
    task's stream starts (Ray Data start-up, first reads) while the current task trains."""

    _END = object()

    def __init__(self, dataset, batch_size: int, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._pull, args=(dataset, batch_size), daemon=True)
        self._thread.start()

    def _pull(self, dataset, batch_size: int) -> None:
        try:
            for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
                self._queue.put(batch["ids"])
            self._queue.put(self._END)
        except BaseException as err:  # handed to the training thread, which raises it
            self._queue.put(err)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Trainer:
    def __init__(self, spec: ExperimentSpec, run_dir: Path, rank: int, world_size: int, device: torch.device,
                 hooks: Hooks):
        self.spec, self.run_dir, self.rank, self.world_size, self.device = spec, run_dir, rank, world_size, device
        self.hooks = hooks
        self.prepared = load_prepared(spec, list(spec.data.languages))
        self.share = spec.global_sequences // world_size
        self.stateful = [h for h in hooks.training() if hasattr(h, "state_dict")]
        self.with_tensors = [h for h in self.stateful if hasattr(h, "tensors")]
        engine = build(spec, device, rows=self.share, attach=hooks.attachable(), gpu_share=spec.resources.gpus_per_worker)
        self.model, self.cfg, self.precision, self.micro_batch = engine.model, engine.cfg, engine.precision, engine.micro_batch
        self.optimizer = make_optimizer(self.model, spec, device)
        self.position = checkpoint.Position(0, 0)
        self.counters: dict[str, int] = {}  # running totals that hooks return, e.g. redo_recycled
        latest = checkpoint.checkpoints(run_dir)
        if latest:
            state = checkpoint.load(latest[-1], self.model, self.cfg, self.optimizer)
            self.position = checkpoint.Position(**state["position"])
            self.counters = dict(state.get("counters", {}))
            for hook, hook_state in zip(self.stateful, state.get("hooks", [])):
                hook.load_state_dict(hook_state, device)
            if self.with_tensors:
                for hook, tensors in zip(self.with_tensors, checkpoint.load_hook_tensors(latest[-1], device)):
                    hook.load_tensors(tensors)
            torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch_rng"])), dtype=torch.uint8))
        self.train_model: torch.nn.Module = self.model
        if world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        resumed_at = self.position.task * spec.steps_per_task + self.position.step
        self.log = RunLog(run_dir, keep_until=resumed_at) if rank == 0 else None
        self.alarm_book = AlarmBook(spec.alarms, run_dir, resumed_at) if rank == 0 and spec.alarms.enabled else None
        self.task_rows: list[dict] = []  # this task's metric rows, for the alarm signals
        self.last_rows: torch.Tensor | None = None
        self.last_row: dict = {}
        self._validation: dict[str, torch.Tensor] = {}

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        spec = self.spec
        upcoming = self._stream(self.position.task, self.position.step)
        stopped = None
        for index in range(self.position.task, spec.tasks):
            task = task_info(spec, index)
            start = self.position.step if index == self.position.task else 0
            if start == 0 and task.position == 0 and (stopped := self._group_stop(task)) is not None:
                break  # at a cycle's start: every cycle trained ends with its probe (a resumed task is finished)
            if start == 0 and spec.resets_optimizer:
                self.optimizer = make_optimizer(self.model, spec, self.device)
            if start == 0:
                for hook in self.hooks.task_start:
                    self._count(hook(TaskStart(self.model, self.optimizer, task, index * spec.steps_per_task)))
            batches, upcoming = upcoming, (self._stream(index + 1, 0) if index + 1 < spec.tasks else None)
            self._run_task(task, start, batches)
            self._end_task(task)
            time.sleep(spec.debug.task_pause_s)
        digests = self._replica_digests()
        if self.rank == 0:
            record: CompleteRecord = {"tasks": spec.tasks, "time": time.time(), "replica_digests": digests}
            if stopped is not None:
                record.update(tasks=index, stopped={"after_tasks": index, "reason": stopped["reason"]})
            write_json_atomic(self.run_dir / COMPLETE_FILE, record)
            self.log.close()
            if self.alarm_book is not None:
                self.alarm_book.close()

    def _group_stop(self, task: Task) -> StopRecord | None:
        """The group's stop decision (schedule.stop), if it ends the run before `task` (the first of
        a cycle); every rank gets rank 0's reading, so all stop at the same task."""
        if self.spec.onset_stop is None or task.index == 0:
            return None
        decision = None
        if self.rank == 0 and (self.run_dir / STOP_FILE).exists():
            decision = json.loads(read_text(self.run_dir / STOP_FILE))
        if self.world_size > 1:
            shared = [decision]
            dist.broadcast_object_list(shared, src=0)
            decision = shared[0]
        return decision if decision is not None and task.cycle > decision["stop_after_cycle"] else None

    def _replica_digests(self) -> list[int]:
        """A checksum of every rank's final weights: DDP replicas (and every mitigation's in-place
        change) must leave them identical."""
        digest = 0
        for param in self.model.parameters():
            digest = zlib.crc32(param.detach().cpu().contiguous().numpy().tobytes(), digest)
        if self.world_size == 1:
            return [digest]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, digest)
        return gathered

    def _stream(self, index: int, start: int) -> _Prefetch:
        stream = task_stream(self.spec, self.prepared, index, start, self.rank, self.world_size)
        return _Prefetch(stream, self.share)

    def _run_task(self, task: Task, start: int, batches: _Prefetch) -> None:
        spec = self.spec
        steps = spec.steps_per_task
        interval_loss = torch.zeros((), device=self.device)
        interval_steps, digest, started = 0, 0, time.perf_counter()
        self.task_rows = [r for r in read_jsonl(self.run_dir / METRICS_FILE)
                          if r["task"] == task.index and r["step"] <= start] if start and self.rank == 0 else []
        for step, ids in zip(range(start, steps), batches):
            rows = self.last_rows = torch.from_numpy(ids.astype(np.int64)).to(self.device, non_blocking=True)
            lr = scheduled_lr(spec, task.index, step)
            global_step = task.index * steps + step
            micro_batches = list(rows.split(self.micro_batch))
            penalties = self.hooks.penalties(Gradients(self.model, task, step, global_step, micro_batches, self.precision))
            loss, grad_norm = train_step(self.train_model, self.optimizer, micro_batches, lr, spec.optimizer.grad_clip,
                                         self.precision, penalties)
            interval_loss += loss
            interval_steps += 1
            # A digest of exactly which tokens each step saw, to compare runs (e.g. across a resume).
            digest = (digest * 1_000_003 + zlib.crc32(ids.tobytes())) % (2**31 - 1)
            self._maybe_fail(global_step)
            for hook in self.hooks.step_end:
                self._count(hook(StepEnd(self.model, self.optimizer, task, step, global_step, rows)))
            done = step + 1
            if done % spec.train.log_every == 0 or done == steps:
                self.last_row = self._log_row(task, done, global_step, lr, interval_loss, interval_steps, grad_norm, digest,
                                              started)
                self.task_rows.append(self.last_row)
                interval_loss.zero_()
                interval_steps, digest, started = 0, 0, time.perf_counter()
            if (global_step + 1) % spec.train.report_every == 0 or global_step + 1 == spec.tasks * steps:
                ray.train.report({k: v for k, v in self.last_row.items() if k != "language"})
            if (global_step + 1) % spec.train.checkpoint_every == 0 and done < steps:
                self._checkpoint(global_step + 1, checkpoint.Position(task.index, done))

    def _log_row(self, task: Task, done: int, global_step: int, lr: float, loss_sum: torch.Tensor, n: int,
                 grad_norm: torch.Tensor, digest: int, started: float) -> MetricRow:
        """The metrics of the steps since the last row, averaged over ranks (every rank gets it)."""
        totals = torch.stack([loss_sum.float(), torch.tensor(float(n), device=self.device)])
        digests = torch.tensor([digest], dtype=torch.int64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(totals)
            dist.all_reduce(digests)
        seconds = time.perf_counter() - started
        tokens = n * self.spec.batch.global_tokens
        row: MetricRow = {
            "task": task.index, "cycle": task.cycle, "language": task.language or "mixture", "step": done,
            "global_step": global_step + 1, "loss": totals[0].item() / totals[1].item(), "lr": lr,
            "grad_norm": grad_norm.item(), "tokens_per_s": tokens / seconds,
            "tokens_seen": (global_step + 1) * self.spec.batch.global_tokens,
            "batch_digest": int(digests.item()), "time": time.time(), **self.counters,
        }
        every = self.spec.train.eval_every
        if self.rank == 0 and every and done % every == 0:
            row["val_loss"] = self._validation_loss(task)
        if self.log:
            self.log.write(row, step=global_step + 1)
        return row

    def _validation_loss(self, task: Task) -> float:
        """Loss on a seeded sample of `train.eval_sequences` validation rows of the task's language
        (the mean over the languages for a stationary mixture); rank 0 only, on the unwrapped model."""
        languages = [task.language] if task.language else list(self.spec.data.languages)
        losses = []
        for language in languages:
            if language not in self._validation:
                ids = validation_sample(self.spec, self.prepared, language, self.spec.train.eval_sequences)
                self._validation[language] = torch.from_numpy(ids.astype(np.int64)).to(self.device)
            losses.append(evaluate(self.model, self._validation[language], self.micro_batch, self.precision))
        return sum(losses) / len(losses)

    def _end_task(self, task: Task) -> None:
        global_step = (task.index + 1) * self.spec.steps_per_task
        alarms = self.spec.alarms
        if alarms.enabled:  # measured on the task's last batch, before task-end mitigations change the model
            near_zero = near_zero_fraction(self.model, self.last_rows[: self.micro_batch], alarms.near_zero)
            if self.alarm_book is not None:
                self.alarm_book.record(task, global_step, global_step * self.spec.batch.global_tokens, self.task_rows,
                                       near_zero)
        for hook in self.hooks.task_end:
            self._count(hook(TaskEnd(self.model, task, global_step)))
        self._checkpoint(global_step, checkpoint.Position(task.index + 1, 0))
        if self.rank == 0 and is_probe_point(self.spec, task):
            path = checkpoint.save_probe_point(self.run_dir, task.index, self.model.state_dict(),
                                               self._state(checkpoint.Position(task.index + 1, 0)))
            point = ProbePoint(
                run_dir=str(self.run_dir), checkpoint=str(path), size=self.spec.model.size, lr=self.spec.lr,
                seed=self.spec.seed, cycle=task.cycle, task_index=task.index, language=task.language,
                global_step=global_step, tokens_seen=global_step * self.spec.batch.global_tokens,
                deferred=is_deferred(self.spec, task),
            )
            for hook in self.hooks.probe_point:
                hook(point)

    # -- checkpoints and failures -------------------------------------------------------------

    def _state(self, position: checkpoint.Position) -> dict:
        return {"model": checkpoint.model_signature(self.cfg), "position": vars(position),
                "size": self.spec.model.size, "lr": self.spec.lr, "seed": self.spec.seed,
                "torch_rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
                "counters": self.counters, "hooks": [h.state_dict() for h in self.stateful]}

    def _count(self, counts: dict[str, int] | None) -> None:
        for key, value in (counts or {}).items():
            self.counters[key] = self.counters.get(key, 0) + value

    def _checkpoint(self, global_step: int, position: checkpoint.Position) -> None:
        tensors = [h.tensors() for h in self.with_tensors] or None  # on every rank: a hook may gather its ranks'
        if self.rank == 0:
            checkpoint.save(self.run_dir, global_step, self.model.state_dict(), self.optimizer.state_dict(),
                            self._state(position), keep=self.spec.train.keep_checkpoints, hook_tensors=tensors)

    def _maybe_fail(self, global_step: int) -> None:
        """debug.fail_at_step: the last rank crashes once at that step, to exercise restarts."""
        if self.spec.debug.fail_at_step != global_step or self.rank != self.world_size - 1:
            return
        marker = self.run_dir / f".debug_failed_at_{global_step}"
        if not marker.exists():
            marker.touch()
            if self.spec.debug.fail_by == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"debug.fail_at_step: worker {self.rank} crashes at step {global_step} as asked")
