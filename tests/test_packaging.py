"""The files the package reads at run time ship in a built wheel.

setuptools copies non-Python files into a wheel only where they match
``[tool.setuptools.package-data]`` in ``pyproject.toml``; a file the code reads
but no glob names works from a checkout and fails after ``pip install``.
"""

from fnmatch import fnmatchcase
from pathlib import Path

import pytest

import sinet_ase
from sinet_ase import pretrained

tomllib = pytest.importorskip("tomllib" if __import__("sys").version_info >= (3, 11) else "tomli")

PACKAGE = Path(sinet_ase.__file__).resolve().parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"


def package_data_globs():
    if not PYPROJECT.is_file():
        pytest.skip("not a source checkout (no pyproject.toml beside the package)")
    config = tomllib.loads(PYPROJECT.read_text())
    return config["tool"]["setuptools"]["package-data"]["sinet_ase"]


def files_pretrained_reads():
    """Every file ``sinet_ase.pretrained`` hands out, and the card each model file carries."""
    import json

    files = [PACKAGE / "potentials" / pretrained._STRUCTURES]
    for name in pretrained.list_pretrained():
        model = pretrained.pretrained_path(name)
        card = model.with_suffix(".json")
        files += [model, card]
        test_slice = json.loads(card.read_text()).get("test_slice", {}).get("file")
        if test_slice:
            files.append(model.parent / test_slice)
    return files


def test_every_file_pretrained_reads_exists_and_is_package_data():
    globs = package_data_globs()
    files = files_pretrained_reads()
    assert pretrained.list_pretrained(), "no shipped potential found"
    for path in files:
        assert path.is_file(), f"{path} is missing"
        relative = path.relative_to(PACKAGE).as_posix()
        assert any(fnmatchcase(relative, g) for g in globs), f"{relative} matches no package-data glob {globs}"


def test_every_package_data_glob_matches_a_file():
    for pattern in package_data_globs():
        assert list(PACKAGE.glob(pattern)), f"package-data glob {pattern!r} matches nothing in {PACKAGE}"


def test_every_non_python_file_in_the_package_is_package_data():
    globs = package_data_globs()
    for path in PACKAGE.rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(PACKAGE).as_posix()
        assert any(fnmatchcase(relative, g) for g in globs), f"{relative} would be left out of a wheel"


def test_the_package_is_marked_typed_and_the_marker_ships():
    """PEP 561: type checkers read the annotations of a package with ``py.typed``."""
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in package_data_globs()
