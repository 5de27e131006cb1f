"""Fine-tuning an energy model: start a run from a model file or a shipped potential.

``model.init_from`` (energy task) names a model file or a shipped potential
(:func:`sinet_ase.pretrained.pretrained_path`). The run then takes from that file:

* the architecture (cutoff, lmax, channels, ...): model keys given beside ``init_from``
  must equal the file's (a :class:`ConfigError` lists those that differ), except
  ``elements``;
* ``avg_num_neighbors`` and ``energy_scale``: they are part of the function the weights
  compute (the first divides every neighbour sum, the second multiplies the network's
  output), so recomputing them from the new data would change the model before any step;
* the weights.

The model knows the file's elements plus those of the new training data (or of
``model.elements``) that the file lacks. The rows of the new elements in the per-element
tensors (:attr:`sinet_ase.model.SINet.PER_ELEMENT_STATE`) are those of a newly built model
(the run's seed); the known elements keep the file's rows.

The E0s (per-element energy shifts) are not taken from the file: ``data.atomic_energies``
sets them on the new data as for a fresh model (``fit`` refits them), since a new
reference (another DFT code or functional) shifts every element's energy. Only elements
of the file that the new training data lacks keep the file's E0 (the data cannot
determine them).

``training.freeze: [backbone]`` trains only the energy head (the readout MLP); the
backbone's parameters get ``requires_grad=False`` and stay out of the optimiser. The
E0s are not trained in either case (they are set as above).
"""

from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from ..errors import ConfigError, ModelFileError

#: names accepted by ``training.freeze``: the module of :class:`~sinet_ase.model.SINet`
FREEZABLE = ("backbone",)

#: hyperparameters of a model file that a fine-tuning run keeps although they are not
#: model keys of the config (they are set from the data in a fresh run)
KEPT_FROM_FILE = ("avg_num_neighbors", "energy_scale")


def resolve_init_from(spec: str) -> Path:
    """The model file that ``model.init_from`` names: an existing path, else a shipped name."""
    from ..pretrained import list_pretrained, pretrained_path

    path = Path(spec).expanduser()
    if path.is_file():
        return path
    try:
        return pretrained_path(str(spec))
    except KeyError:
        shipped = list_pretrained()
        raise ConfigError(
            f"model.init_from: {spec!r} is neither a model file nor a shipped potential "
            f"(shipped: {', '.join(shipped) if shipped else 'none'})"
        ) from None


def read_init_model(spec: str, model_section: Dict[str, Any]) -> Dict[str, Any]:
    """Read the model file of ``model.init_from`` and check the config's model keys
    against it; returns the model-file dictionary (:func:`sinet_ase.io.read_model_file`)."""
    from ..io import read_model_file

    path = resolve_init_from(spec)
    try:
        payload = read_model_file(path)
    except ModelFileError as err:
        raise ConfigError(f"model.init_from: {err}") from err
    if payload["model_type"] != "SINet":
        raise ConfigError(
            f"model.init_from: {path} holds a {payload['model_type']} model; "
            "the energy task fine-tunes SINet energy models"
        )
    stored = payload["config"]
    differ = [
        f"model.{k}: {v!r} (file: {stored.get(k)!r})"
        for k, v in model_section.items()
        if k not in ("init_from", "elements") and v != stored.get(k)
    ]
    if differ:
        raise ConfigError(
            f"model.init_from: the architecture comes from {path}; these model keys differ "
            f"from the file's: {'; '.join(differ)}. Remove them (only model.elements may be "
            "given beside init_from)"
        )
    payload["path"] = str(path)
    return payload


def architecture(payload: Dict[str, Any]) -> Dict[str, Any]:
    """The file's SINet keywords other than elements, E0s and :data:`KEPT_FROM_FILE`."""
    return {k: v for k, v in payload["config"].items() if k not in ("elements", "atomic_energies") + KEPT_FROM_FILE}


def merged_elements(payload: Dict[str, Any], wanted: Sequence[str]) -> List[str]:
    """The file's elements (in its order), then those of ``wanted`` it lacks."""
    known = list(payload["elements"])
    return known + [s for s in wanted if s not in known]


def transfer_weights(model: torch.nn.Module, payload: Dict[str, Any]) -> List[str]:
    """Load the file's weights into ``model``, a newly built SINet with the file's
    architecture and a superset of its elements; per-element rows are matched by
    symbol, the rows of elements the file lacks keep ``model``'s values.

    Returns the elements that are new to the file.
    """
    stored, old = payload["state_dict"], list(payload["elements"])
    missing = [s for s in old if s not in model.elements]
    if missing:
        raise ValueError(f"the model lacks elements {missing} of the file it starts from")
    rows = torch.tensor([model.elements.index(s) for s in old])
    # in the file's dtype first: loading float64 weights into float32 tensors would round them
    model.to({"float32": torch.float32, "float64": torch.float64}[payload.get("dtype", "float32")])
    state = model.state_dict()
    if set(stored) != set(state):
        raise ConfigError(
            f"model.init_from: {payload.get('path', 'the file')} has other weights "
            f"than the model its hyperparameters build (it is damaged or was "
            f"written by another sinet-ase): "
            f"{sorted(set(stored).symmetric_difference(state))}"
        )
    for key, value in stored.items():
        if key in model.PER_ELEMENT_STATE:
            merged = state[key].clone()
            merged[rows] = value.to(merged.dtype)
            state[key] = merged
        else:
            state[key] = value
    model.load_state_dict(state)
    return [s for s in model.elements if s not in old]


def freeze(model: torch.nn.Module, parts: Sequence[str]) -> None:
    """``requires_grad=False`` for the parameters of the modules in ``parts``
    (:data:`FREEZABLE`); the trainer's optimiser takes only the others."""
    for part in parts:
        for parameter in getattr(model, part).parameters():
            parameter.requires_grad_(False)
