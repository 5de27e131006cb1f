"""The QM9 heads (scalar target, dipole) under the model-test contract of ``sinet_ase.testing``:
O(3) equivariance with parity (the dipole is a polar vector), translation, permutation, a batch
equal to its molecules one at a time, smoothness at the cutoff; with either backbone. Random
weights on ``ase.build`` molecules: no QM9 data needed (the trained heads are tested in
``test_qm9_model.py``)."""

import torch

from sinet_ase.graph import atoms_to_graph, batch_graphs
from sinet_ase.qm9.model import QM9DipoleModel, QM9ScalarModel
from sinet_ase.testing import ModelTests


class QM9HeadTests(ModelTests):
    elements = ("H", "C", "N", "O", "F")
    model_class = QM9ScalarModel
    equivariance_lmax = 2

    def build(self, elements, dtype=torch.float64, cutoff=5.0, lmax=2, channels=8, seed=0, **options):
        torch.manual_seed(seed)
        model = self.model_class(
            elements=elements,
            cutoff=cutoff,
            lmax=lmax,
            channels=channels,
            num_layers=2,
            mlp_hidden=16,
            radial_hidden=16,
            **options,
        )
        return model.to(dtype).eval()

    def evaluate(self, model, structures):
        graphs = [atoms_to_graph(atoms, model.config["cutoff"]) for atoms in structures]
        return model(batch_graphs(graphs))


class TestQM9Scalar(QM9HeadTests):
    per_structure = {"prediction": 0, "standardised": 0}
    model_options = dict(target="alpha", target_mean=5.0, target_std=2.0, atom_refs={"H": -1.0, "C": 3.0, "O": 0.5})


class TestQM9ScalarMeanPoolingSiFormer(TestQM9Scalar):
    model_options = dict(TestQM9Scalar.model_options, pooling="mean", backbone="siformer", num_heads=2)


class TestQM9Dipole(QM9HeadTests):
    model_class = QM9DipoleModel
    per_structure = {"prediction": 0, "dipole": 1}
    per_atom = {"charges": 0, "atomic_dipoles": 1}
    model_options = dict(target_std=1.5)


class TestQM9DipoleSiFormer(TestQM9Dipole):
    model_options = dict(target_std=1.5, backbone="siformer", num_heads=2)
