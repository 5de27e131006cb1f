"""Every training recipe under training/ parses, and its data files exist where they live.

The DFT recipes read ``../shared/data`` (relative to the project root, where the recipes
are run from); their data checks are skipped where that folder is absent.
"""

from pathlib import Path

import pytest

from sinet_ase.potential.data import split_frame_selection
from sinet_ase.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
ENERGY_RECIPES = sorted((ROOT / "training").glob("xtb_md17.yaml")) + sorted((ROOT / "training" / "dft").glob("*.yaml"))
ALL_RECIPES = ENERGY_RECIPES + sorted((ROOT / "training").glob("qm9_*.yaml"))


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    config = load_config(recipe)
    assert config.task == ("qm9" if recipe.name.startswith("qm9") else "energy")
    if config.task == "energy":
        assert config.data.train, "an energy recipe names its training data"


@pytest.mark.parametrize("recipe", ENERGY_RECIPES, ids=lambda p: p.name)
def test_recipe_data_files_exist(recipe, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(recipe)
    paths = [
        split_frame_selection(p)[0] for p in config.data.train + (config.data.valid or []) + (config.data.test or [])
    ]
    if any("shared/data" in str(p) for p in paths) and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data is not present")
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"{recipe.name}: missing data files {missing}"
