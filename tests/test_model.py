"""Physics of the SINet energy model: the model-test contract of ``sinet_ase.testing``
(symmetry, conservative forces, stress, locality, batching), plus what is particular to the
Scalar Interaction backbone and the energy reference."""

import pytest
import torch

from sinet_ase import SINet, atoms_to_graph
from sinet_ase.model import edge_vectors, graph_batch
from sinet_ase.testing import EnergyModelTests, rattled_ethanol as ethanol, relative_error


class TestSINet(EnergyModelTests):
    """The energy-model contract on the Scalar Interaction backbone (the default)."""


@pytest.mark.parametrize("lmax", [0, 1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 37], ids=["whole", "chunked"])
def test_scalar_features_are_the_scalars_of_the_features_with_their_gradients(small_model, lmax, chunk, rng):
    """The energy path skips the last layer's l > 0 output; values and gradients stay the same."""
    model = small_model(["H", "C", "O"], torch.float64, lmax=lmax, channels=4, seed=lmax)
    model.backbone.edge_chunk_size = chunk
    graph = atoms_to_graph(ethanol(rng), model.cutoff)
    backbone = model.backbone
    species = backbone.species(graph.z)
    vectors = edge_vectors(graph, graph.pos, graph.cell, graph_batch(graph)).detach().requires_grad_(True)
    weights = torch.randn(len(species), backbone.layout.channels, dtype=torch.float64)
    full = backbone.features(species, graph.edge_index, vectors)[:, :, 0]
    (grad_full,) = torch.autograd.grad((full * weights).sum(), vectors)
    scalars = backbone.scalar_features(species, graph.edge_index, vectors)
    (grad_scalars,) = torch.autograd.grad((scalars * weights).sum(), vectors)
    assert scalars.shape == full.shape
    assert relative_error(scalars, full) < 1e-12
    assert relative_error(grad_scalars, grad_full) < 1e-12
    assert float(grad_full.abs().max()) > 0  # the check has something to compare


def test_energy_reference_survives_float32_cast():
    model = SINet(elements=["H", "O"], atomic_energies={"H": -13.6, "O": -2041.123456789})
    model = model.to(torch.float32)
    assert model.energy_shift.dtype == torch.float64
    assert model.energy_shift[1].item() == -2041.123456789


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not a chemical element"):
        SINet(elements=["H", "Xx"])
    with pytest.raises(ValueError, match="repeats"):
        SINet(elements=["H", "H"])
    with pytest.raises(ValueError, match="cutoff"):
        SINet(elements=["H"], cutoff=-1.0)
    with pytest.raises(ValueError, match="not in elements"):
        SINet(elements=["H"], atomic_energies={"C": 1.0})
