"""Alarm signals and thresholds on constructed task rows, and the near-zero fraction on a real model."""

import pytest
import torch

from plasticity_ray.spec.protocol import Task
from plasticity_ray.model.gpt import GPT, GPTConfig
from plasticity_ray.spec import AlarmSpec
from plasticity_ray.rundir import read_alarms
from plasticity_ray.train.alarms import AlarmBook, adaptation_drop, near_zero_fraction


def _rows(first_loss, later_loss, grad_norm):
    return [{"step": 5, "loss": first_loss, "grad_norm": grad_norm}, {"step": 10, "loss": later_loss, "grad_norm": grad_norm}]


def _task(index, language):
    return Task(index=index, cycle=index // 2, position=index % 2, language=language)


def test_adaptation_drop_is_the_relative_fall_up_to_the_window():
    assert adaptation_drop(_rows(4.0, 3.0, 1.0), window=10) == pytest.approx(0.25)
    assert adaptation_drop(_rows(4.0, 3.0, 1.0)[:1], window=10) is None


def test_alarms_fire_when_a_signal_crosses_its_threshold_and_survive_a_restart(tmp_path):
    spec = AlarmSpec(window=10, grad_norm_ratio_above=3.0, near_zero_fraction_above=0.5, adaptation_ratio_below=0.5)
    book = AlarmBook(spec, tmp_path)
    assert book.record(_task(0, "en"), 10, 100, _rows(4.0, 2.0, 1.0), near_zero=0.1) == []  # first visit of en
    assert book.record(_task(1, "de"), 20, 200, _rows(4.0, 2.0, 2.0), near_zero=0.1) == []
    # en returns: it falls by 10% instead of 50% (ratio 0.2), gradients are 4× the first task's, many zeros.
    raised = book.record(_task(2, "en"), 30, 300, _rows(4.0, 3.6, 4.0), near_zero=0.6)
    assert {a["signal"]: round(a["value"], 6) for a in raised} == {
        "grad_norm_ratio": 4.0, "near_zero_fraction": 0.6, "adaptation_ratio": 0.2}
    book.close()
    # A restarted run re-reads its references from signals.jsonl and raises the same alarm again.
    again = AlarmBook(spec, tmp_path)
    redo = again.record(_task(2, "en"), 30, 300, _rows(4.0, 3.6, 4.0), near_zero=0.1)
    assert {a["signal"] for a in redo} == {"grad_norm_ratio", "adaptation_ratio"}
    again.close()
    assert [(a["task"], a["signal"]) for a in read_alarms(tmp_path)] == [
        (2, "adaptation_ratio"), (2, "grad_norm_ratio"), (2, "near_zero_fraction")]


def test_near_zero_fraction_counts_small_activations():
    torch.manual_seed(0)
    model = GPT(GPTConfig(layers=1, hidden=64, vocab_size=320, context=16))
    rows = torch.randint(0, 320, (2, 17))
    assert near_zero_fraction(model, rows, threshold=1e9) == 1.0
    with torch.no_grad():  # every pre-activation far below zero: GeLU output ≈ 0
        model.blocks[0].mlp.fc.weight.zero_()
        model.blocks[0].mlp.fc.bias.fill_(-50.0)
    assert near_zero_fraction(model, rows, threshold=0.01) == 1.0
