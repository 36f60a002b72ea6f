"""What a user sees from a local Ray: the CLI's own lines, not Ray's internal notices."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

# Ray's C++ log lines ("[2026-12-02 08:05:45,510 E 20900 20961] core_worker.cc:2465: ...") and its
# Python notice that it turned token authentication on.
RAY_INTERNAL = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+ [EWF] \d+ \d+\] \w+\.cc:\d+|Token authentication is")


@pytest.mark.slow
def test_a_trial_on_a_new_local_ray_prints_no_ray_internal_lines(demo_prepared, demo_spec, tmp_path):
    """`plasticity-ray train` on the demo's recipe (one cycle of two languages, probed and
    diagnosed), shrunk to its smallest model and a few steps, in a process of its own that starts a
    local Ray as a user's does, with Ray's default token authentication."""
    spec = demo_spec.model_dump(mode="json", exclude={"sweep"})
    spec["model"]["size"] = "L1-d64"
    spec["data"]["languages"] = ["en", "ru"]  # the prepared data serves them (ru: the entropy language)
    spec["schedule"].update(cycles=1, tokens_per_task="32K")
    spec["probe"].update(extended=None, tokens="32K")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)  # Ray writes its token to ~/.ray
    done = subprocess.run([sys.executable, "-m", "plasticity_ray.cli", "train", str(path)], capture_output=True,
                          text=True, env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "done:" in done.stdout and "probes (" in done.stdout
    assert not RAY_INTERNAL.findall(output), [line for line in output.splitlines() if RAY_INTERNAL.search(line)]
    assert (tmp_path / ".ray" / "auth_token").exists()  # token authentication stayed on
