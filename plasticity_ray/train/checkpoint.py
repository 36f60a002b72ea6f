"""Checkpoints: model, optimizer, position in the schedule and RNG state, written atomically.

    <run_dir>/checkpoints/step-000001234/{model.pt, optimizer.pt, state.json[, hooks.pt]}
    <run_dir>/probe_points/task-00007/{model.pt, state.json}

On a file system a checkpoint directory is written under a temporary name and renamed when
complete; on object storage (no rename) its state.json is written last and a directory without one
is not a checkpoint. Either way the newest checkpoint listed is always whole. Regular checkpoints keep the newest K; probe-point checkpoints stay
until whoever asked for them calls `release`. Loading checks the model's shape against the run's
and names the file on any problem; nothing is ever deleted on a failed load.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from plasticity_ray.errors import UserError
from plasticity_ray.model.gpt import GPTConfig
from plasticity_ray.spec import ExperimentSpec, with_overrides
from plasticity_ray.storage import is_local, patiently, remove_tree, write_json_atomic

FORMAT = 1


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Position:
    """Where training resumes: task `task`, step `step` within it (the next one to run)."""

    task: int
    step: int


def _write_dir(final: Path, payloads: dict[str, object], state: dict) -> Path:
    if is_local(final):
        return _write_dir_once(final, payloads, state)
    # Object storage that stops answering mid-checkpoint: written again from the start (its
    # state.json, written last, is what makes it a checkpoint).
    return patiently(lambda: _write_dir_once(final, payloads, state), final)


def _write_dir_once(final: Path, payloads: dict[str, object], state: dict) -> Path:
    local = is_local(final)
    target = final.with_name(f".{final.name}.tmp") if local else final
    remove_tree(target)  # a leftover of a run that crashed while writing it
    if local:
        target.mkdir(parents=True)
    for name, payload in payloads.items():
        if payload is not None:
            with (target / name).open("wb") as f:
                torch.save(payload, f)
    write_json_atomic(target / "state.json", {"format": FORMAT, **state})  # object storage: last, it makes it whole
    if local:
        remove_tree(final)  # a leftover of a run that crashed after this point
        os.replace(target, final)
    return final


def save(run_dir: Path, global_step: int, model_state: dict, optimizer_state: dict, state: dict, keep: int,
         hook_tensors: list[dict] | None = None) -> Path:
    """`hook_tensors`: the tensors of the hooks that keep some (`tensors()`), in their order, as hooks.pt."""
    root = run_dir / "checkpoints"
    payloads = {"model.pt": model_state, "optimizer.pt": optimizer_state, "hooks.pt": hook_tensors}
    path = _write_dir(root / f"step-{global_step:09d}", payloads, state)
    for old in checkpoints(run_dir)[:-keep]:
        remove_tree(old)
    return path


def save_probe_point(run_dir: Path, task: int, model_state: dict, state: dict) -> Path:
    return _write_dir(run_dir / "probe_points" / f"task-{task:05d}", {"model.pt": model_state}, state)


def release(path: Path) -> None:
    """The probe-point checkpoint at `path` is no longer needed."""
    remove_tree(path)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's whole checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "state.json").exists()) if root.exists() else []


def model_signature(cfg: GPTConfig) -> dict:
    signature = asdict(cfg)
    # The paper's model, as checkpoints from before these options say.
    if signature["activation"] == "gelu":
        del signature["activation"]
    if not signature["normalize_activations"]:
        del signature["normalize_activations"]
    return signature


def read_state(path: Path) -> dict:
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{state_file}: missing (not a checkpoint directory?)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{state_file}: unreadable ({err})") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_file}: format {state.get('format')!r}, this version reads {FORMAT}")
    return state


def _torch_load(file: Path, device: torch.device | str, mmap: bool = False):
    try:
        if not is_local(file):  # read through the object store's client; no memory map there
            with file.open("rb") as f:
                return torch.load(f, map_location=device, weights_only=True)
        return torch.load(file, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        raise CheckpointError(f"{file}: unreadable, truncated or corrupted ({type(err).__name__}: {err})") from None


def check(path: Path, cfg: GPTConfig) -> dict:
    """Cheap driver-side check that a checkpoint fits `cfg` and its files are whole (memory-mapped,
    nothing read in full), so a bad one stops the run before any worker starts."""
    state = read_state(path)
    if state.get("model") != model_signature(cfg):
        raise CheckpointError(
            f"{path / 'state.json'}: checkpoint of model {state.get('model')}, but this run's model is "
            f"{model_signature(cfg)}"
        )
    for name in ("model.pt", "optimizer.pt"):
        _torch_load(path / name, "cpu", mmap=True)
    if (path / "hooks.pt").exists():  # a mitigation's tensors (C-CHAIN's)
        _torch_load(path / "hooks.pt", "cpu", mmap=True)
    return state


def load(path: Path, model: torch.nn.Module, cfg: GPTConfig, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load a checkpoint into `model` (and `optimizer`); returns its state.json."""
    state = read_state(path)
    expected = model_signature(cfg)
    if state.get("model") != expected:
        raise CheckpointError(
            f"{path / 'state.json'}: checkpoint of model {state.get('model')}, but this run's model is {expected}"
        )
    device = next(model.parameters()).device
    weights = _torch_load(path / "model.pt", device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path / 'model.pt'}: does not fit the model ({err})") from None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(_torch_load(path / "optimizer.pt", device))
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path / 'optimizer.pt'}: does not fit the optimizer ({err})") from None
    return state


def load_hook_tensors(path: Path, device: torch.device) -> list[dict]:
    """The hooks' tensors saved with the checkpoint at `path` (see `save`)."""
    return _torch_load(path / "hooks.pt", device)


def checkpoint_spec(spec: ExperimentSpec, path: Path) -> ExperimentSpec:
    """The spec with the size, LR and seed the checkpoint at `path` was trained with."""
    state = read_state(path)
    return with_overrides(spec, {"model.size": state["size"], "optimizer.lr": state["lr"], "seed": state["seed"]},
                          source=str(path))
