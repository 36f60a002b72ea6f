"""Mitigations of plasticity loss as trainer hooks, chosen in the spec's `mitigations` list.

Each module holds one: a small function of the hook event that changes the model (and optimizer
state) in place. They run on every rank and do the same thing everywhere: decisions come from
all-reduced statistics and random draws from generators seeded by the run's seed and the step or
task, so DDP replicas stay identical and a resumed run repeats them exactly. A hook that keeps
state (Continual Backprop's utilities, spectral regularization's singular vectors) is an object with
`attach(model)`, `state_dict()` and `load_state_dict(state, device)`; the trainer attaches it and keeps
its state in every checkpoint (tensors too large for state.json — C-CHAIN's previous weights — come
from `tensors()` and go back through `load_tensors(tensors)`, kept in the checkpoint's hooks.pt).
Penalties on the loss (L2 Init, spectral regularization, C-CHAIN) are gradient hooks: they add their
gradient to the step's averaged one before clipping.
To add one: a typed section in `spec/schema.py` (added to the `Mitigation` union), a module here, and a
line in `hooks_for`.
"""

from __future__ import annotations

from plasticity_ray.spec import (ActiveForgetting, ChurnReduction, ContinualBackprop, ExperimentSpec, L2Init,
                                NormalizeAndProject, ReDo, ResetControl, ShrinkPerturb, SpectralRegularization,
                                WeightClipping)
from plasticity_ray.train.hooks import Hooks


def hooks_for(spec: ExperimentSpec) -> Hooks:
    from plasticity_ray.mitigations import forgetting, redo, shrink_perturb, weight_clipping
    from plasticity_ray.mitigations.churn import ChurnReductionHook
    from plasticity_ray.mitigations.continual_backprop import ContinualBackpropHook
    from plasticity_ray.mitigations.l2_init import L2InitHook
    from plasticity_ray.mitigations.normalize_project import NormalizeAndProjectHook
    from plasticity_ray.mitigations.spectral import SpectralRegularizationHook

    hooks = Hooks()
    for mitigation in spec.mitigations:
        if isinstance(mitigation, WeightClipping):
            hooks.step_end.append(weight_clipping.hook(mitigation))
        elif isinstance(mitigation, ShrinkPerturb):
            hooks.task_end.append(shrink_perturb.hook(mitigation, spec.seed))
        elif isinstance(mitigation, ReDo):
            hooks.step_end.append(redo.hook(mitigation, spec.seed))
        elif isinstance(mitigation, ContinualBackprop):
            hooks.step_end.append(ContinualBackpropHook(mitigation, spec.seed))
        elif isinstance(mitigation, L2Init):
            hooks.gradients.append(L2InitHook(mitigation))
        elif isinstance(mitigation, SpectralRegularization):
            hooks.gradients.append(SpectralRegularizationHook(mitigation, spec.seed))
        elif isinstance(mitigation, ActiveForgetting):
            hooks.step_end.append(forgetting.active_forgetting(mitigation, spec.seed))
        elif isinstance(mitigation, ResetControl):
            hooks.task_start.append(forgetting.reset_control(spec.seed))
        elif isinstance(mitigation, NormalizeAndProject):
            hooks.step_end.append(NormalizeAndProjectHook())
        elif isinstance(mitigation, ChurnReduction):
            hooks.gradients.append(ChurnReductionHook(mitigation))
    return hooks
