"""The benchmark commands run end to end on CPU and write records with device, date and command."""

import json

import pytest

from plasticity_ray.bench.train import bench_spec, flops_per_token
from plasticity_ray.cli import main


def test_mfu_flops_per_token_is_the_palm_formula():
    spec = bench_spec("5M", 2048, 524_288, "qwen3")
    assert flops_per_token(spec) == 6 * (4_932_480 + 151_680 * 320) + 12 * 4 * 320 * 2048


@pytest.mark.slow
def test_bench_train_runs_on_cpu_bare_and_in_ray_train(ray_session, tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "--sizes", "L1-d64", "--seq-len", "32", "--batch-tokens", "512",
            "--tokenizer", "byte", "--steps", "3", "--warmup", "1", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"] == "plasticity-ray " + " ".join(argv)
    assert record["device"] and record["date"]
    size = record["sizes"]["L1-d64"]
    assert size["bare"]["tokens_per_s"] > 0 and size["ray_train"]["tokens_per_s"] > 0
    assert size["tokens_per_s"] == size["ray_train"]["tokens_per_s"]
