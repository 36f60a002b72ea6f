"""Continual Backprop (Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood and Sutton 2024): keep
replacing the least useful mature MLP units with fresh ones, a little every step.

Each unit's contribution utility is a running average of |h|·Σ_k|w_out,k| (its mean |GeLU output|
on the step's batch, all-reduced over DDP ranks, times the summed magnitude of its outgoing
weights). Units older than the maturity threshold are eligible; `replacement_rate` of them per
step and layer (accumulated until at least one whole unit is due) — those with the lowest utility — are
re-initialised like ReDo's. Utilities, ages and the fractional count are part of the checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from plasticity_ray.mitigations.init import generator
from plasticity_ray.mitigations.redo import reinitialise_units
from plasticity_ray.spec import ContinualBackprop
from plasticity_ray.train.hooks import StepEnd


class ContinualBackpropHook:
    def __init__(self, spec: ContinualBackprop, seed: int):
        self.spec, self.seed = spec, seed
        self.utility: list[torch.Tensor] = []
        self.age: list[torch.Tensor] = []
        self.due: list[float] = []  # per layer: replacements owed but not yet a whole unit
        self._sums: list[torch.Tensor] = []
        self._forwards = 0

    def attach(self, model) -> None:
        """Track each unit's mean |activation| over the step's training forwards."""
        device = next(model.parameters()).device
        units = [block.mlp.fc.out_features for block in model.blocks]
        if not self.utility:
            self.utility = [torch.zeros(n, device=device) for n in units]
            self.age = [torch.zeros(n, dtype=torch.long, device=device) for n in units]
            self.due = [0.0] * len(units)
        self._sums = [torch.zeros(n, device=device) for n in units]
        for i, block in enumerate(model.blocks):
            block.mlp.act.register_forward_hook(self._record(i))

    def _record(self, layer: int):
        def hook(module, inputs, output) -> None:  # training forwards only, not evaluation or probes
            if module.training and torch.is_grad_enabled():
                self._sums[layer] += output.detach().float().abs().mean((0, 1))
                if layer == 0:
                    self._forwards += 1
        return hook

    def __call__(self, event: StepEnd) -> dict:
        model = event.model
        means = torch.stack(self._sums) / max(1, self._forwards)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(means)
            means /= dist.get_world_size()
        for s in self._sums:
            s.zero_()
        self._forwards = 0
        decay, replaced = self.spec.decay_rate, 0
        g = generator(means.device, self.seed, 3, event.global_step)
        for layer, block in enumerate(model.blocks):
            contribution = means[layer] * block.mlp.proj.weight.detach().abs().sum(0)
            self.utility[layer].mul_(decay).add_(contribution, alpha=1 - decay)
            self.age[layer] += 1
            eligible = (self.age[layer] > self.spec.maturity_threshold).nonzero().flatten()
            self.due[layer] += self.spec.replacement_rate * eligible.numel()
            count = min(int(self.due[layer]), eligible.numel())
            if count == 0:
                continue
            self.due[layer] -= count
            worst = eligible[self.utility[layer][eligible].argsort()[:count]]
            reinitialise_units(model, event.optimizer, layer, worst, g)
            self.utility[layer][worst] = 0.0
            self.age[layer][worst] = 0
            replaced += count
        return {"cbp_replaced": replaced}

    def state_dict(self) -> dict:
        return {"utility": [u.tolist() for u in self.utility], "age": [a.tolist() for a in self.age], "due": self.due}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.utility = [torch.tensor(u, dtype=torch.float32, device=device) for u in state["utility"]]
        self.age = [torch.tensor(a, dtype=torch.long, device=device) for a in state["age"]]
        self.due = list(state["due"])
