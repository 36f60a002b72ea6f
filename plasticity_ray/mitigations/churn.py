"""C-CHAIN, continual churn approximated reduction (Tang, Berseth et al., ICML 2025): churn is the
change an update makes to the network's outputs on data outside its batch. The loss gets
λ·mean((f_θ(x) − f_θ₋(x))²) over the logits of a reference batch x, θ₋ the weights before the
previous update (the authors compare with the network one update back, on a batch drawn apart from
the training one); here x is this rank's previous batch of the same task, the nearest thing to
their replay sample. λ follows the authors' rule: fixed for the first updates of a task, then
relative_scale·mean|L|/mean L_churn over a window of updates. Every rank computes the penalty on its
own rows and the ranks average its gradient and the losses behind λ, so replicas stay identical.

Exact resume needs θ₋ and x: `tensors()` hands them to the checkpoint (its hooks.pt), the scalars
go to state.json."""

from __future__ import annotations

import torch
import torch.distributed as dist

from plasticity_ray.model.gpt import GPT, linear_logit_mse
from plasticity_ray.spec import ChurnReduction
from plasticity_ray.train.hooks import Gradients


def _ranks() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if _ranks() > 1:
        dist.all_reduce(t)
        t /= _ranks()
    return t


class ChurnReductionHook:
    def __init__(self, spec: ChurnReduction):
        self.spec = spec
        self.previous: GPT | None = None  # θ₋: the weights before the previous update
        self._reset(None)

    def _reset(self, task: int | None) -> None:
        self.task, self.strength, self.updates = task, self.spec.initial_strength, 0
        self.has_previous = False
        self.reference: list[torch.Tensor] = []  # the previous step's micro-batches
        self.losses: list[float] = []  # |L| per update, averaged over ranks
        self.churns: list[float] = []  # L_churn per update with a penalty

    def attach(self, model) -> None:
        # A model of its own (a copy would carry other hooks' forward hooks); its initial draw must not
        # move the run's RNG stream, and its values are replaced at the first update anyway.
        with torch.random.fork_rng(devices=[]):
            self.previous = GPT(model.cfg).to(next(model.parameters()).device)
        self.previous.requires_grad_(False)

    def churn(self, model, precision) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """L_churn on the reference batch and its gradient (this rank's)."""
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), device=grads[0].device)
        for rows in self.reference:
            with precision():
                with torch.no_grad():
                    before = self.previous.hidden_states(rows[:, :-1])
                loss = linear_logit_mse(model.hidden_states(rows[:, :-1]), model.wte.weight, before,
                                        self.previous.wte.weight) / len(self.reference)
            for grad, g in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    grad += g
            total += loss.detach()
        return total, grads

    def __call__(self, event: Gradients) -> None:
        spec = self.spec
        if event.task.index != self.task:
            self._reset(event.task.index)
        if self.has_previous:
            churn, grads = self.churn(event.model, event.precision)
            flat = _mean_over_ranks(torch.cat([churn.reshape(1)] + [g.flatten() for g in grads]))
            self.churns.append(flat[0].item())
            offset = 1
            with torch.no_grad():
                for param, grad in zip((p for p in event.model.parameters() if p.requires_grad), grads):
                    param.grad.add_(flat[offset : offset + grad.numel()].view_as(grad).to(param.grad.dtype),
                                    alpha=self.strength)
                    offset += grad.numel()
        self.losses.append(_mean_over_ranks(event.loss.detach().float().clone()).abs().item())
        self.updates += 1
        if self.updates >= spec.warmup_steps and self.churns:
            recent_loss = sum(self.losses[-spec.window:]) / len(self.losses[-spec.window:])
            recent_churn = sum(self.churns[-spec.window:]) / len(self.churns[-spec.window:])
            self.strength = spec.relative_scale * recent_loss / (recent_churn + 1e-8)
        with torch.no_grad():  # θ₋ and x for the next update: this update's weights and rows
            for mine, theirs in zip(self.previous.parameters(), event.model.parameters()):
                mine.copy_(theirs)
        self.reference = [rows.clone() for rows in event.micro_batches]
        self.has_previous = True
        self.losses, self.churns = self.losses[-spec.window:], self.churns[-spec.window:]

    def state_dict(self) -> dict:
        micro_batch = len(self.reference[0]) if self.reference else 0
        return {"task": self.task, "strength": self.strength, "updates": self.updates, "has_previous": self.has_previous,
                "losses": self.losses, "churns": self.churns, "micro_batch": micro_batch}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.task, self.strength, self.updates = state["task"], state["strength"], state["updates"]
        self.has_previous, self.losses, self.churns = state["has_previous"], state["losses"], state["churns"]
        self._micro_batch = state["micro_batch"]

    def tensors(self) -> dict[str, torch.Tensor]:
        """θ₋ and every rank's reference rows (rank order: the previous global batch). Called on every
        rank (it gathers them), saved by rank 0."""
        if not self.has_previous:
            return {}
        mine = torch.cat(self.reference)
        everyone = [mine]
        if _ranks() > 1:
            everyone = [torch.empty_like(mine) for _ in range(_ranks())]
            dist.all_gather(everyone, mine)
        return {"reference": torch.cat(everyone), **{f"previous.{name}": t for name, t in self.previous.state_dict().items()}}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not self.has_previous:
            return
        self.previous.load_state_dict({k.removeprefix("previous."): t for k, t in tensors.items() if k != "reference"})
        rows = tensors["reference"].chunk(_ranks())[dist.get_rank() if _ranks() > 1 else 0]
        self.reference = list(rows.split(self._micro_batch))
