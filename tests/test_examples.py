"""The example scripts run end to end on a small model file."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sinet_ase import SINet, save_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(SINet(elements=["H", "C", "O", "Cu"], cutoff=4.0, channels=8, lmax=1), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("md_nve.py", ["--steps", "20"], "energy drift"),
        ("md_langevin.py", ["--steps", "20", "--trajectory", "{tmp}/t.traj"], "trajectory written"),
        ("relax.py", ["--steps", "5"], "converged"),
        ("relax.py", ["--crystal", "Cu", "--steps", "3"], "cell lengths"),
        ("md_npt.py", ["--crystal", "Cu", "--steps", "10"], "final volume per atom"),
    ],
)
def test_example_runs(script, args, expect, model_file, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(model_file), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout
