"""Reading results needs neither torch nor Ray: `results` and `analyze` run with both blocked."""

import subprocess
import sys

BLOCK = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "ray"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
from plasticity_ray.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_results_and_analyze_run_with_torch_and_ray_blocked(tmp_path, write_run):
    experiment = tmp_path / "e"
    write_run(experiment, "5M_run", "5M", "paper", [3.4, 3.2, 3.0, 3.2, 3.4], baseline=3.5)
    for command in (["results", str(experiment), "--probes"], ["analyze", str(experiment)]):
        done = subprocess.run([sys.executable, "-c", BLOCK, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (experiment / "analysis" / "onsets.csv").exists() and (experiment / "trials.csv").exists()
    # The blocker does block: a command that trains cannot even start.
    blocked = subprocess.run([sys.executable, "-c", BLOCK, "bench", "data"], capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and "is blocked in this test" in blocked.stderr
