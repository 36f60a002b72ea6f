"""The benchmark commands run end to end on CPU and write records with device, date and command."""

import json
from pathlib import Path

import pytest

from plasticity_ray.bench.train import bench_spec, flops_per_token
from plasticity_ray.cli import main

REPO = Path(__file__).resolve().parent.parent


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


def test_the_main_command_bench_times_the_readmes_command_on_fresh_clones(tmp_path):
    import subprocess

    from plasticity_ray.bench.command import MAIN_COMMAND, bench_main_command

    readme = (REPO / "README.md").read_text()
    assert f"```bash\n{MAIN_COMMAND}\n```" in readme  # the benchmark times what the README says
    # The harness itself, on a small repository and a command that prints a conclusion and takes ~0.2 s.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "marker").write_text("x")
    for args in (["init", "-q"], ["add", "marker"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    command = "test -f marker && sleep 0.2 && printf 'table\\nconclusions per run group (x):\\n  L1 (2 seeds): fine\\n'"
    record = bench_main_command(["bench", "main-command"], 2, repo, command, say=lambda line: None)
    assert [r["exit_code"] for r in record["runs"]] == [0, 0]
    assert record["runs"][0]["conclusions"] == ["L1 (2 seeds): fine"]
    walls = sorted(r["wall_s"] for r in record["runs"])
    assert 0.2 <= record["wall_s"]["min"] == walls[0] <= record["wall_s"]["max"] == walls[1] < 30
    assert record["device"] and record["date"] and record["timed"] == command and len(record["commit"]) == 40
