"""The compute planner's arithmetic, against numbers worked out by hand here."""

import json
import subprocess
import sys

import pytest

from plasticity_ray.plan import format_plan, plan, summary_line
from plasticity_ray.spec import ChurnReduction, ExperimentSpec, load_spec

# L1-d64: non-embedding 1·(12·64² + 13·64) + 2·64 = 50,112; byte vocabulary 320; seq_len 16.
FLOPS_PER_TOKEN = 6 * (50_112 + 320 * 64) + 12 * 1 * 64 * 16  # 435,840
PARAMS = 50_112 + (320 + 16) * 64  # tied token table and 16 positions: 71,616


def tiny(**sweep) -> ExperimentSpec:
    return ExperimentSpec(
        name="tiny", model={"size": "L1-d64"},
        data={"tokenizer": "byte", "seq_len": 16, "languages": ["en", "zh"], "train_tokens": 1000,
              "validation_tokens": 100},
        schedule={"cycles": 3, "tokens_per_task": 256},  # 4 steps of 64 tokens
        batch={"global_tokens": 64},
        train={"log_every": 1, "eval_every": 2, "eval_sequences": 3, "keep_checkpoints": 2},
        probe={"tokens": 192, "eval_every": 2, "eval_sequences": 5, "replicates": 2,
               "extended": {"languages": ["en"], "cycles": [2, 3]}},
        diagnostics={"enabled": ["dormant_units", "attention_entropy"], "dormant_sequences": 2,
                     "entropy_sequences": 3, "entropy_first_query": 1, "entropy_language": "zh"},
        resources={"gpus_per_worker": 1, "probe_gpus": 0.5, "max_concurrent_probes": 2},
        sweep=sweep,
    )


def test_one_trial_by_hand():
    trial = plan(tiny(), gpu="a100", gpus=1, mfu=0.25).trials[0]
    assert trial.flops_per_token == FLOPS_PER_TOKEN and trial.params == PARAMS
    assert trial.train_tokens == 6 * 4 * 64  # 2 languages × 3 cycles, 4 steps of 64 tokens
    # Probe points: 3 cycle ends + en in cycles 2 and 3 = 5; + the baseline = 6; × 2 replicates.
    assert trial.probe_jobs == 12
    assert trial.probe_tokens == 12 * 3 * 64  # 192 tokens = 3 steps
    # Training validation: 4 // 2 = 2 evaluations a task of 3 × 16 tokens; probes evaluate at steps
    # 0, 2 and 3 (the last), 5 × 16 tokens each.
    assert trial.eval_tokens == 6 * 2 * 3 * 16 + 12 * 3 * 5 * 16
    assert trial.diagnostics_tokens == 5 * (2 + 3) * 16  # every probe point, not the baseline
    train_flops = FLOPS_PER_TOKEN * (1536 + 576 / 3)  # a forward-only token is a third
    side_flops = FLOPS_PER_TOKEN * (2304 + (2880 + 400) / 3)
    assert trial.flops == pytest.approx(train_flops + side_flops)
    assert trial.train_gpu_hours == pytest.approx(train_flops / (312e12 * 0.25 * 3600))
    assert trial.probe_gpu_hours == pytest.approx(side_flops / (312e12 * 0.25 * 3600))
    assert trial.checkpoint_bytes == 2 * PARAMS * 12  # fp32 weights + two AdamW moments, the newest 2
    assert trial.probe_point_bytes == 5 * PARAMS * 4


def test_fourier_features_are_priced_with_their_smaller_up_projection():
    from plasticity_ray.model.gpt import GPT
    from plasticity_ray.train.recipe import model_config

    spec = tiny().model_copy(update={"model": tiny().model.model_copy(update={"activation": "fourier"})})
    trial = plan(spec, gpu="a100", gpus=1, mfu=0.25).trials[0]
    # L1-d64's up projection makes 128 pre-activations instead of 256: 64·128 + 128 fewer parameters.
    assert trial.params == PARAMS - (64 * 128 + 128) == sum(p.numel() for p in GPT(model_config(spec)).parameters())
    assert trial.flops_per_token == FLOPS_PER_TOKEN - 6 * (64 * 128 + 128)


def test_normalized_activations_are_priced_with_their_layer_norms():
    from plasticity_ray.model.gpt import GPT
    from plasticity_ray.train.recipe import model_config

    for activation, pre_activations in (("gelu", 256), ("fourier", 128)):
        model = tiny().model.model_copy(update={"normalize_activations": True, "activation": activation})
        spec = tiny().model_copy(update={"model": model})
        trial = plan(spec, gpu="a100", gpus=1, mfu=0.25).trials[0]
        # L1-d64: a gain and a bias for each MLP pre-activation, for the 64 dims of queries and of keys.
        added = 2 * pre_activations + 2 * 2 * 64
        assert trial.params - added == sum(p.numel() for p in GPT(model_config(
            spec.model_copy(update={"model": model.model_copy(update={"normalize_activations": False})}))).parameters())
        assert trial.params == sum(p.numel() for p in GPT(model_config(spec)).parameters())


def test_c_chain_is_priced_with_its_penalty_passes_and_checkpointed_previous_weights():
    spec = tiny().model_copy(update={"mitigations": [ChurnReduction(name="c_chain")]})
    plain, churn = plan(tiny(), gpu="a100", gpus=1, mfu=0.25).trials[0], plan(spec, gpu="a100", gpus=1, mfu=0.25).trials[0]
    # Per step: the step itself, a forward of the weights one update back (1/3) and a forward and
    # backward on the previous batch (1): 4/3 more per training token; evaluations and probes unchanged.
    assert churn.flops - plain.flops == pytest.approx(4 / 3 * FLOPS_PER_TOKEN * plain.train_tokens)
    assert churn.probe_gpu_hours == plain.probe_gpu_hours
    assert churn.checkpoint_bytes - plain.checkpoint_bytes == tiny().train.keep_checkpoints * PARAMS * 4


def test_sweep_wall_time_and_storage_by_hand():
    result = plan(tiny(grid={"seed": [0, 1, 2]}), gpu="h100", gpus=3, mfu=0.5)
    assert len(result.trials) == 3
    # 3 GPUs less 2 probes × 0.5 GPU leave 2 trials at once: the third starts when one ends.
    assert result.concurrent_trials == 2
    t, s = result.trials[0].train_gpu_hours, result.trials[0].probe_gpu_hours
    # Probes: 3 trials' probe work on a 1-GPU pool, or the training's 2 rounds then one last probe job.
    assert result.wall_hours == pytest.approx(max(2 * t + s / 12, 3 * s))
    # Shards: en, zh and vi, 1000 training tokens (63 rows of 17 int32) and 100 validation (7 rows).
    assert result.shard_bytes == 3 * (63 + 7) * 17 * 4
    assert result.storage_bytes == 3 * (63 + 7) * 17 * 4 + 3 * (2 * PARAMS * 12 + 5 * PARAMS * 4)


def test_a_single_trial_runs_one_at_a_time():
    result = plan(tiny(), gpu="h100", gpus=8, mfu=0.5)
    assert result.concurrent_trials == 1
    assert "1 trial(s) at once" in "\n".join(format_plan(result))


def test_paper_protocol_training_cost_is_the_architecture_figure():
    result = plan(load_spec("experiments/paper_continual.yaml"), gpu="h100", mfu=0.5)
    small = result.trials[0]
    assert small.size == "5M"
    assert small.train_tokens == 48 * 8 * 9537 * 524_288  # 9,537 steps of 0.5M tokens a task
    assert small.flops_per_token == 6 * (4_932_480 + 151_680 * 320) + 12 * 4 * 320 * 2048
    assert small.probe_jobs == 48 * 3 + 1  # cycle ends, zh and de in every cycle, and the baseline
    training = sum(t.train_gpu_hours for t in result.trials)
    assert training == pytest.approx(11_274, abs=1)  # ≈ 2.0e22 FLOPs at 50% of 989 TFLOP/s
    assert "15,608 H100-hours" in summary_line(result)


def test_mfu_comes_from_the_newest_record_for_the_gpu(tmp_path):
    def record(name, date, device, tokens_per_s):
        sizes = {size: {"bare": {"tokens_per_s": tokens_per_s, "flops_per_token": 1e8}} for size in ("5M", "314M")}
        (tmp_path / name).write_text(json.dumps({"device": device, "date": date, "train": {"sizes": sizes}}))

    record("old.json", "2026-01-01T00:00:00+00:00", "NVIDIA H100 80GB HBM3 + Xeon", 1e6)
    record("new.json", "2026-06-01T00:00:00+00:00", "NVIDIA H100 80GB HBM3 + Xeon", 2e6)
    record("other.json", "2026-09-01T00:00:00+00:00", "NVIDIA A100-SXM4-80GB + Xeon", 3e6)
    trial = plan(tiny(), gpu="h100", bench_dir=tmp_path).trials[0]
    assert trial.mfu == pytest.approx(2e6 * 1e8 / 989e12)  # nearest measured size to L1-d64: 5M
    assert trial.mfu_source == "measured: new.json at 5M"
    assert plan(tiny(), gpu="h200", bench_dir=tmp_path).trials[0].mfu_source == "assumed"


def test_plan_command_prints_the_table_and_rejects_a_bad_mfu():
    command = [sys.executable, "-m", "plasticity_ray.cli", "plan", "experiments/paper_continual.yaml"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "model.size=314M" in done.stdout and "H100-hours" in done.stdout
    bad = subprocess.run([*command, "--mfu", "1.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--mfu: '1.5': a fraction in (0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_adaptive_protocol_is_priced_from_its_expected_runs_next_to_the_full_one(tmp_path):
    """Each trial at the tasks and points `expected_run` simulates for its size's onset; the full
    cost is the same trials with every task trained and every extended point probed."""
    from plasticity_ray.bench.adaptive import expected_run
    from plasticity_ray.plan import trial_plan, without_adaptive

    spec = load_spec("experiments/paper_continual_adaptive.yaml")
    result = plan(spec, gpu="h100", mfu=0.5)
    assert len(result.trials) == 24  # 8 sizes × 3 seeds
    small = result.trials[0]
    expected = expected_run(spec, 6, 3)  # 5M (the spec's size) at its Table IV onset, 3 seeds
    assert small.tasks == pytest.approx(expected["tasks"]) and small.tasks < 384
    assert small.train_tokens == round(expected["tasks"] * 9537 * 524_288)
    assert small.probe_jobs == round(expected["points"]) + 1 < 145  # fewer than every point, and the baseline
    assert small.probe_point_bytes == expected["kept_peak"] * small.params * 4
    full = trial_plan(without_adaptive(spec), "5M", "h100", 0.5)
    assert full.probe_jobs == 145 and full.train_tokens == 384 * 9537 * 524_288
    assert result.full_gpu_hours > result.gpu_hours
    text = "\n".join(format_plan(result))
    assert f"a saving of {1 - result.gpu_hours / result.full_gpu_hours:.0%}" in text
    assert f"at most {expected['kept_peak']} kept probe points per run at once" in text
    # Onsets of one's own: a later onset trains longer.
    from plasticity_ray.bench.adaptive import size_onsets

    (tmp_path / "onsets.csv").write_text("model,onset\n5M,300\n")
    later = plan(spec, gpu="h100", mfu=0.5, onsets=size_onsets(tmp_path / "onsets.csv")).trials[0]
    assert later.tasks > small.tasks
    bad = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "plan", "experiments/paper_continual_adaptive.yaml",
                          "--onsets", str(tmp_path / "missing.csv")], capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.csv: cannot read" in bad.stderr and "Traceback" not in bad.stderr
