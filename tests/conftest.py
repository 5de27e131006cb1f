"""Shared fixtures: every physics test runs in float32 and float64.

Tolerances follow e3nn's habit: errors are measured in float64 and compared
with 1e-9 (float64) or 1e-4 (float32) relative.
"""

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)
