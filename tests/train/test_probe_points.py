"""Where probes happen: cycle ends, Appendix B's extended probing, and the stationary interval."""

from pathlib import Path

from plasticity_ray.spec import ExperimentSpec, load_spec
from plasticity_ray.spec.protocol import is_probe_point, probe_ordinal, task_info

PAPER_CONTINUAL = Path(__file__).parent.parent.parent / "experiments" / "paper_continual.yaml"


def _points(spec) -> list[int]:
    """Tasks trained at each probe point."""
    return [i + 1 for i in range(spec.tasks) if is_probe_point(spec, task_info(spec, i))]


def test_the_paper_spec_probes_after_zh_de_and_ru_in_every_cycle():
    spec = load_spec(PAPER_CONTINUAL)
    points = _points(spec)
    assert points[:6] == [2, 6, 8, 10, 14, 16]  # zh, de, ru of cycles 1 and 2
    assert len(points) == 3 * spec.schedule.cycles
    # Table IV's onsets are all reachable (only multiples of 8 were, with cycle-end probes alone).
    assert {6, 16, 18, 54, 62, 118} <= set(points)


def test_extended_probing_can_be_limited_to_chosen_cycles():
    spec = ExperimentSpec(name="x", schedule={"cycles": 5}, probe={"extended": {"languages": ["zh", "de"],
                                                                               "cycles": [2, 3]}})
    assert _points(spec) == [8, 10, 14, 16, 18, 22, 24, 32, 40]  # cycle ends always; zh/de in cycles 2-3
    every_other = ExperimentSpec(name="x", schedule={"cycles": 4}, probe={"every_cycles": 2})
    assert _points(every_other) == [16, 32]
    assert probe_ordinal(spec, 17) == 4  # the zh probe of cycle 3 is the fifth: ordinal 4


def test_stationary_runs_probe_every_every_tokens():
    spec = ExperimentSpec(name="s", schedule={"mode": "stationary", "cycles": 2, "tokens_per_task": "5B"},
                          probe={"every_tokens": "10B", "extended": {"languages": ["zh"]}})
    assert _points(spec) == [2, 4, 6, 8, 10, 12, 14, 16]  # every second 5B chunk; extended is continual-only
    default = ExperimentSpec(name="s", schedule={"mode": "stationary", "cycles": 1})
    assert _points(default) == list(range(1, 9))  # every 5B tokens
