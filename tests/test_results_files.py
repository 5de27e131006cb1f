"""The model files kept under ``training/nbody_results/``: each has its summary and loads.

Every committed N-body model file has a small summary JSON beside it
(``summary.json`` in its folder, ``<name>.json`` for a file beside others)
whose ``sha256`` is that of the file and whose ``config.model`` is the
model's configuration.
"""

import hashlib
import json
from pathlib import Path

import pytest

from sinet_ase.nbody.model import load_nbody_model

RESULTS = Path(__file__).resolve().parents[1] / "training" / "nbody_results"
MODEL_FILES = sorted(RESULTS.rglob("*.pt")) if RESULTS.is_dir() else []


def summary_of(path: Path) -> Path:
    own = path.with_suffix(".json")
    return own if own.is_file() else path.parent / "summary.json"


def test_the_documented_model_files_are_kept():
    names = {p.relative_to(RESULTS).as_posix() for p in MODEL_FILES}
    if not RESULTS.is_dir():
        pytest.skip("not a source checkout")
    assert {"best.pt", "seed0/best.pt", "best_seed0/best.pt", "ablation/L5/best.pt"} <= names


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_model_file_has_its_summary_and_loads(path):
    summary = json.loads(summary_of(path).read_text())
    assert summary["model_file"] == path.name
    assert summary["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = load_nbody_model(path)
    stored = summary["config"]["model"]
    assert {k: v for k, v in model.config.items() if k in stored} == {
        k: v for k, v in stored.items() if k in model.config
    }
    assert sum(p.numel() for p in model.parameters()) == summary["summary"]["num_parameters"]
