"""predict(): batched evaluation equals one-by-one SINetCalculator calls; bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from sinet_ase import SINetCalculator, SINetInputError, UnknownElementError, list_pretrained, predict, save_model
from sinet_ase.testing import small_sinet


def make_model(elements=("H", "C", "N", "O", "Cu"), cutoff=4.0, seed=0):
    """In training mode, as a caller's model mid-training: predict() must leave the mode alone."""
    model = small_sinet(
        elements, torch.float32, cutoff=cutoff, seed=seed, atomic_energies={"H": -13.6, "C": -1030.0}, energy_scale=0.7
    )
    return model.train()


def molecules(n, seed=0):
    rng = np.random.default_rng(seed)
    names = ["CH3CH2OH", "H2O", "CH4", "NH3", "C6H6", "CH3COOH", "HCOOH"]
    frames = []
    for k in range(n):
        atoms = molecule(names[k % len(names)])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def crystals(seed=0):
    rng = np.random.default_rng(seed)
    frames = [
        bulk("Cu", "fcc", a=3.6, cubic=True),
        bulk("Cu", "fcc", a=3.5) * (2, 2, 1),
        bulk("Cu", "bcc", a=2.9, cubic=True) * (2, 1, 1),
    ]
    for atoms in frames:
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.cell = atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.02, size=(3, 3)))
    return frames


def one_by_one(model, frames, stress=False):
    calc = SINetCalculator(model)
    rows = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        rows.append(
            {
                "energy": atoms.get_potential_energy(),
                "energies": atoms.get_potential_energies(),
                "forces": atoms.get_forces(),
                "stress": atoms.get_stress() if stress else None,
            }
        )
    return rows


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_equals_one_by_one_calculator_calls(batch_size):
    model, frames = make_model(), molecules(7) + crystals()
    got = predict(model, frames, batch_size=batch_size, properties=("energy", "energies", "forces"))
    want = one_by_one(model, frames)
    assert got["energy"].shape == (len(frames),) and got["energy"].dtype == np.float64
    for k, (atoms, ref) in enumerate(zip(frames, want)):
        assert got["energy"][k] == pytest.approx(ref["energy"], rel=1e-9, abs=1e-9)
        assert got["energies"][k].shape == (len(atoms),)
        np.testing.assert_allclose(got["energies"][k], ref["energies"], rtol=1e-9, atol=1e-9)
        assert got["forces"][k].shape == (len(atoms), 3)
        np.testing.assert_allclose(got["forces"][k], ref["forces"], rtol=1e-9, atol=1e-9)


def test_stress_of_periodic_structures_equals_calculator():
    model, frames = make_model(), crystals()
    got = predict(model, frames, batch_size=2, properties=("energy", "forces", "stress"))
    assert got["stress"].shape == (len(frames), 6)
    for k, ref in enumerate(one_by_one(model, frames, stress=True)):
        np.testing.assert_allclose(got["stress"][k], ref["stress"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got["forces"][k], ref["forces"], rtol=1e-9, atol=1e-9)


def test_only_requested_properties_and_model_file(tmp_path):
    model, frames = make_model(), molecules(4)
    path = tmp_path / "m.pt"
    save_model(model, path)
    from_model = predict(model, frames, properties=("energy",))
    from_file = predict(path, frames, properties="energy")
    assert set(from_model) == {"energy"}
    np.testing.assert_allclose(from_file["energy"], from_model["energy"], rtol=1e-12)


def test_float32_and_callers_model_untouched():
    model, frames = make_model(), molecules(3)
    dtype_before = next(model.parameters()).dtype
    got32 = predict(model, frames, dtype="float32")
    got64 = predict(model, frames)
    np.testing.assert_allclose(got32["energy"], got64["energy"], rtol=1e-5)
    assert next(model.parameters()).dtype == dtype_before, "the caller's model must not be cast"
    assert next(model.parameters()).requires_grad, "the caller's model must not be frozen"
    assert model.training, "the caller's model must keep its mode"


@pytest.mark.skipif("sinet-xtb-md17" not in list_pretrained(), reason="shipped potential missing")
def test_shipped_name():
    frames = molecules(2)
    got = predict("sinet-xtb-md17", frames)
    ref = one_by_one(SINetCalculator.from_pretrained("sinet-xtb-md17").model, frames)
    assert got["energy"][1] == pytest.approx(ref[1]["energy"], rel=1e-9)


def test_bad_input_names_the_structure():
    model = make_model(elements=("H", "C", "O"))
    frames = molecules(3)
    frames[2] = molecule("NH3")
    with pytest.raises(UnknownElementError, match="structure 2: element"):
        predict(model, frames)
    with pytest.raises(SINetInputError, match="structure 1: stress needs a cell periodic"):
        predict(make_model(), crystals()[:1] + molecules(1), properties=("energy", "stress"))
    with pytest.raises(SINetInputError, match="structure 0: .*empty"):
        predict(model, [Atoms()])
    with pytest.raises(ValueError, match="properties"):
        predict(model, frames, properties=("energy", "dipole"))
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, frames, batch_size=0)


def test_prepared_model_is_used_without_copy(monkeypatch):
    import sinet_ase.inference as predict_module

    model = SINetCalculator(make_model()).model  # float64, cpu, eval, frozen
    copies = []
    monkeypatch.setattr(
        predict_module, "prepare_model", lambda *a, **k: copies.append(1) or pytest.fail("prepared model copied")
    )
    predict(model, molecules(2))
    assert not copies


def test_batches_are_cut_to_the_memory_limit_and_large_ones_chunked():
    """predict applies the calculator's memory check per batch: with a memory_limit_gib that
    holds one molecule but not two, every structure gets its own model call (same numbers);
    a structure too large alone is refused before the call, by index; edge chunks give the
    whole-graph numbers, and a caller's prepared model keeps its own chunk setting."""
    from sinet_ase import InsufficientMemoryError
    from sinet_ase.graph import atoms_to_graph
    from sinet_ase.memory import estimate_call_bytes

    model = SINetCalculator(make_model(), edge_chunk_size=None).model  # prepared: not copied
    frames = [atoms for atoms in molecules(15) if len(atoms) == 9]  # three ethanols
    graph = atoms_to_graph(frames[0], model.cutoff)
    one = estimate_call_bytes(model, len(frames[0]), graph.edge_index.shape[1], None)
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    got = predict(model, frames, batch_size=32, memory_limit_gib=1.5 * one / 2**30)
    assert len(calls) == len(frames)
    ref = one_by_one(make_model(), frames)
    for k in range(len(frames)):
        np.testing.assert_allclose(got["forces"][k], ref[k]["forces"], rtol=0, atol=1e-9)
    with pytest.raises(InsufficientMemoryError, match=r"structure 1: this structure \(9 atoms"):
        predict(model, [molecule("H2O"), molecule("CH3CH2OH")], memory_limit_gib=0.9 * one / 2**30)

    big = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    big.rattle(0.05, seed=2)
    whole = predict(model, [big], edge_chunk_size=None)
    chunked = predict(model, [big], edge_chunk_size=50)
    np.testing.assert_allclose(chunked["forces"][0], whole["forces"][0], rtol=0, atol=1e-10)
    assert model.backbone.edge_chunk_size is None


def test_far_outside_the_training_domain_is_refused_by_index():
    """A structure far outside the model's training domain is an OutOfDomainError naming it;
    out_of_domain='ignore' returns its numbers."""
    from sinet_ase import OutOfDomainError

    model = make_model()
    model.metadata = {"training_domain": {"min_distance": {"H-O": 0.9, "H-H": 1.4}, "max_neighbours": 4}}
    squeezed = molecule("H2O")
    squeezed.positions[1] = squeezed.positions[0] + [0.3, 0.0, 0.0]
    frames = [molecule("H2O"), squeezed]
    with pytest.raises(OutOfDomainError, match=r"structure 1: structure far outside .* \(H-O\) are 0\.300 Å"):
        predict(model, frames)
    assert np.isfinite(predict(model, frames, out_of_domain="ignore")["energy"]).all()
