"""Add the training data's domain of validity to a shipped potential, its weights untouched.

    python training/add_training_domain.py sinet-xtb-md17 [sinet-acac ...]   # from the project root

Potentials published before the trainer stored it lack ``training_domain`` in their
metadata, so :class:`~sinet_ase.SINetCalculator` cannot warn about structures far outside
their training data (:mod:`sinet_ase.domain`). For each name this reads the potential's
card (``sinet_ase/potentials/<name>.json``: its training data, split sizes and seed),
splits the data as the trainer did (:func:`sinet_ase.potential.data.load_splits`; checked:
every frame of the shipped test slice is a test frame and none a training frame),
computes :func:`~sinet_ase.domain.training_domain` over the training frames with the
model's own atomic reference energies, and rewrites the model file with that metadata
added: the file's dictionary is loaded as it is and only ``metadata`` changes, so every
weight is the same tensor, byte for byte (checked by digest before the file is replaced).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read

from sinet_ase.potential.data import load_splits, to_graphs
from sinet_ase.domain import training_domain
from sinet_ase.files import arrays_sha256
from sinet_ase.io import _verify_model_file, atomic_torch_save, read_model_file
from sinet_ase.labels import LabelKeys
from sinet_ase.pretrained import pretrained_path
from sinet_ase.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def state_digest(state) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors."""
    return arrays_sha256({k: v.detach().cpu().numpy() for k, v in state.items()})


def _keys(frames):
    return {np.round(a.positions, 6).tobytes() for a in frames}


def domain_of(name: str):
    card = json.loads(pretrained_path(name).with_suffix(".json").read_text())
    config = TrainConfig.from_dict(card["training_config"])
    d = config.data
    keys = LabelKeys.from_config(d)
    frames, _ = load_splits(
        d.train, d.valid, d.test, d.valid_size, d.test_size, config.seed, require_forces=False, keys=keys
    )
    test_slice = read(pretrained_path(name).with_name(f"{name}_test_slice.extxyz"), ":")
    in_test, in_train = _keys(frames["test"]), _keys(frames["train"])
    for atoms in test_slice:
        key = np.round(atoms.positions, 6).tobytes()
        if key not in in_test or key in in_train:
            raise SystemExit(f"{name}: the reproduced split does not match the shipped test slice")
    payload = read_model_file(pretrained_path(name))
    model_config = payload["config"]
    graphs = to_graphs(frames["train"], model_config["cutoff"], payload["elements"], keys)
    domain = training_domain(graphs, model_config["atomic_energies"])
    return payload, domain, len(frames["train"]), len(test_slice)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    for name in args.names:
        payload, domain, n_train, n_slice = domain_of(name)
        before = state_digest(payload["state_dict"])
        payload["metadata"] = dict(payload.get("metadata") or {}, training_domain=domain)
        path = pretrained_path(name)

        def verify(tmp):
            _verify_model_file(tmp)
            if state_digest(read_model_file(tmp)["state_dict"]) != before:
                raise RuntimeError(f"{name}: the weights changed; the file was not replaced")

        atomic_torch_save(payload, path, verify=verify)
        print(
            f"{name}: domain of {n_train} training frames ({n_slice} test-slice frames checked), "
            f"weights sha256 {before[:16]}...: {json.dumps(domain)}"
        )


if __name__ == "__main__":
    main()
