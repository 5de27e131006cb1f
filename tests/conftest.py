"""Shared fixtures: every physics test runs in float32 and float64.

Tolerances follow e3nn's habit (``sinet_ase.testing.TOLERANCE``): errors are measured in
float64 and compared with 1e-9 (float64) or 1e-4 (float32) relative.
"""

import numpy as np
import pytest
import torch

from sinet_ase.testing import small_sinet


@pytest.fixture(autouse=True, scope="session")
def _at_most_two_threads():
    """At most two intra-op threads for the session (set when the tests run, not on import)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _no_background_compilation(monkeypatch):
    """No test starts a background compilation (``sinet-md --compile auto`` on a cold cache)
    unless it switches it back on: a process outliving the test would load the machine."""
    from sinet_ase.background import BACKGROUND_SWITCH

    monkeypatch.setenv(BACKGROUND_SWITCH, "off")


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_model():
    """``small_model(elements, dtype=float64, cutoff=4.0, lmax=2, channels=8, num_layers=2,
    seed=0, **options)``: a small SINet with random weights (``sinet_ase.testing.small_sinet``)."""
    return small_sinet
