"""Energy + force data sets from extxyz / ASE database files.

A data set is a list of ``ase.Atoms`` whose labels sit in the calculator results
(``ase.io.read`` of extxyz with ``energy=`` and ``forces``) or, under other names
such as ``REF_energy``, in ``atoms.info`` / ``atoms.arrays``: a
:class:`~sinet_ase.labels.LabelKeys` names them (:mod:`sinet_ase.labels`).
This module turns them into labelled graphs, splits them reproducibly, and
computes the statistics that set up a model before training:

- per-element energy shift ``E0``: given (a dict, or a file of isolated atoms),
  taken from the training files' isolated-atom frames (``config_type`` ``isolated_atom``;
  removed from training), or by least squares
  ``min_E0 sum_s (E_s - sum_Z n_{s,Z} E0_Z)^2`` over the training structures for the
  elements still without one;
- force scale: root-mean-square force component of the training set;
- average number of neighbours within the cutoff.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase import Atoms
from ase.io import read

from ..errors import ConfigError
from ..graph import atoms_to_graph
from ..labels import DEFAULT_CONFIG_TYPE, LabelKeys, config_type, get_energy, get_forces, get_stress, is_isolated_atom

PathLike = Union[str, Path]


_COMPRESSED = {".xz": "lzma", ".gz": "gzip", ".bz2": "bz2"}


def _read_all(path: Path) -> List[Atoms]:
    """``ase.io.read(path, index=":")``, decompressing into memory first.

    ASE reads a compressed extxyz by re-opening the stream for each frame, so a
    2,000-frame ``.xz`` file takes many minutes; decompressed once it takes seconds.
    """
    suffix = path.suffix.lower()
    if suffix not in _COMPRESSED:
        return read(str(path), index=":")
    import importlib
    import io

    opener = importlib.import_module(_COMPRESSED[suffix]).open
    with opener(path, "rt") as handle:
        text = handle.read()
    fmt = "extxyz" if path.name.lower().endswith((".xyz" + suffix, ".extxyz" + suffix)) else None
    return read(io.StringIO(text), index=":", format=fmt)


def split_frame_selection(path: PathLike) -> Tuple[Path, Optional[slice]]:
    """``"data.xyz@1000:"`` -> ``(Path("data.xyz"), slice(1000, None))``: ASE's ``file@index``
    syntax (``@start:stop[:step]`` or ``@k``). A path that exists as given is never split."""
    text = str(path)
    if Path(text).exists() or "@" not in text:
        return Path(text), None
    name, _, index = text.rpartition("@")
    try:
        parts = [int(p) if p.strip() else None for p in index.split(":")]
    except ValueError:
        raise ConfigError(
            f"{text}: the frame selection after '@' must be k or start:stop[:step] (as in ase.io.read), got {index!r}"
        ) from None
    if len(parts) == 1:
        k = parts[0]
        if k is None:
            raise ConfigError(f"{text}: empty frame selection after '@'")
        return Path(name), slice(k, None if k == -1 else k + 1)
    if len(parts) > 3:
        raise ConfigError(f"{text}: the frame selection after '@' must be start:stop[:step]")
    return Path(name), slice(*parts)


def read_structures(
    path: PathLike, require_forces: bool = True, require_stress: bool = False, keys: Optional[LabelKeys] = None
) -> List[Atoms]:
    """All frames of an extxyz / ASE-db / any ase.io file, checked for labels.

    ``path@start:stop`` selects frames as ``ase.io.read``'s ``file@index`` does (for
    example ``aspirin.xyz@:1000`` to train on and ``aspirin.xyz@1000:`` to test on).

    Raises :class:`ConfigError` naming the file when it cannot be read, when a frame
    lacks the energy (or forces, or stress when asked for) under ``keys``, or when a label
    is NaN or infinite (it would turn the loss and then every weight into NaN).
    Isolated-atom frames (:func:`sinet_ase.labels.is_isolated_atom`) need the energy only.
    """
    keys = keys or LabelKeys()
    path, selection = split_frame_selection(path)
    if not path.exists():
        raise ConfigError(f"data file {path} does not exist")
    try:
        frames = _read_all(path)
    except Exception as err:  # ase.io raises many types for unreadable files
        raise ConfigError(f"cannot read {path} with ase.io.read: {type(err).__name__}: {err}") from err
    if selection is not None:
        frames = frames[selection]
    if not frames:
        raise ConfigError(f"{path} holds no structures" + ("" if selection is None else " in the selected range"))
    for k, atoms in enumerate(frames):
        isolated = is_isolated_atom(atoms)
        try:
            labels = {
                "energy": get_energy(atoms, keys),
                "forces": get_forces(atoms, keys),
                "stress": get_stress(atoms, keys),
            }
        except ConfigError as err:
            raise ConfigError(f"{path}, frame {k}: {err}") from err
        needed = {"energy": True, "forces": require_forces and not isolated, "stress": require_stress and not isolated}
        missing = [name for name, need in needed.items() if need and labels[name] is None]
        if missing:
            names = {
                "energy": repr(keys.energy),
                "forces": repr(keys.forces),
                "stress": f"{keys.stress!r} or virials {keys.virials!r}",
            }
            raise ConfigError(
                f"{path}, frame {k}: no {' or '.join(f'{m} (key {names[m]})' for m in missing)} "
                "found; an extxyz file needs energy= in the comment line and a forces column, or "
                "set data.energy_key / forces_key / stress_key / virials_key to the names it uses"
            )
        for name, value in labels.items():
            if value is not None:
                values = np.asarray(value, dtype=np.float64)
                if not np.all(np.isfinite(values)):
                    bad = values[~np.isfinite(values)].ravel()[0]
                    raise ConfigError(
                        f"{path}, frame {k}: the {name} label holds {bad} (non-finite); a NaN or "
                        "infinite label makes the loss NaN. Remove or fix this frame"
                    )
    return frames


def split_indices(n: int, valid: Union[int, float], test: Union[int, float], seed: int) -> Dict[str, np.ndarray]:
    """Random disjoint train/valid/test indices of ``n`` items.

    ``valid`` and ``test`` are counts (int) or fractions (float < 1); the rest
    is training. The permutation comes from ``numpy.random.default_rng(seed)``.
    """

    def count(x):
        return int(round(x * n)) if isinstance(x, float) and x < 1 else int(x)

    n_valid, n_test = count(valid), count(test)
    if n_valid + n_test >= n:
        raise ConfigError(f"cannot split {n} structures into {n_valid} valid + {n_test} test + training")
    perm = np.random.default_rng(seed).permutation(n)
    return {
        "valid": np.sort(perm[:n_valid]),
        "test": np.sort(perm[n_valid : n_valid + n_test]),
        "train": np.sort(perm[n_valid + n_test :]),
    }


def fit_atomic_energies(
    frames: Sequence[Atoms],
    elements: Sequence[str],
    keys: Optional[LabelKeys] = None,
    fixed: Optional[Dict[str, float]] = None,
) -> Dict[str, float]:
    """Least-squares per-element energies ``E0`` (eV) from total energies.

    ``fixed`` E0s are kept and their share ``sum_Z n_{s,Z} E0_Z`` subtracted first; the
    other elements of ``elements`` are fitted to what remains.
    """
    keys, fixed = keys or LabelKeys(), dict(fixed or {})
    free = [s for s in elements if s not in fixed]
    counts = np.zeros((len(frames), len(free)))
    energies = np.zeros(len(frames))
    index = {s: k for k, s in enumerate(free)}
    for row, atoms in enumerate(frames):
        energies[row] = get_energy(atoms, keys)
        for symbol in atoms.get_chemical_symbols():
            if symbol in fixed:
                energies[row] -= fixed[symbol]
            else:
                counts[row, index[symbol]] += 1
    # rank-deficient when element ratios never vary (one molecule): lstsq gives the min-norm fit
    solution = np.linalg.lstsq(counts, energies, rcond=None)[0] if free else []
    fitted = {s: float(solution[k]) for s, k in index.items()}
    return {s: float(fixed[s]) if s in fixed else fitted[s] for s in elements}


def isolated_atom_energies(
    frames: Sequence[Atoms], keys: Optional[LabelKeys] = None, source: str = ""
) -> Dict[str, float]:
    """``{symbol: E0}`` (eV) from single-atom frames (one element per frame).

    The energy is read under ``keys.energy``, else under ASE's ``energy`` (so a file such
    as rMD17's ``isolated_atoms.xyz`` serves data labelled ``REF_energy`` too). Raises
    :class:`ConfigError` for a frame of more than one atom, one without an energy, or two
    frames of one element with different energies.
    """
    keys = keys or LabelKeys()
    e0: Dict[str, float] = {}
    for k, atoms in enumerate(frames):
        where = f"{source}, frame {k}" if source else f"isolated-atom frame {k}"
        if len(atoms) != 1:
            raise ConfigError(f"{where}: an isolated-atom frame must hold one atom, it holds {len(atoms)}")
        energy = get_energy(atoms, keys)
        if energy is None:
            energy = get_energy(atoms, LabelKeys())
        if energy is None:
            raise ConfigError(f"{where}: no energy (key {keys.energy!r}) for the isolated atom")
        symbol = atoms.get_chemical_symbols()[0]
        if symbol in e0 and abs(e0[symbol] - energy) > 1e-6:
            raise ConfigError(f"{where}: two isolated-atom energies for {symbol} ({e0[symbol]} and {energy} eV)")
        e0[symbol] = energy
    return e0


def read_atomic_energies(spec: Union[str, Dict[str, float]], keys: Optional[LabelKeys] = None) -> Dict[str, float]:
    """E0s (eV) given as a dict ``{symbol: eV}`` or as a file of isolated atoms (one per frame)."""
    if isinstance(spec, dict):
        from ase.data import chemical_symbols

        bad = [s for s in spec if s not in chemical_symbols or s == "X"]
        if bad:
            raise ConfigError(f"data.atomic_energies: {bad} are not element symbols")
        return {str(s): float(v) for s, v in spec.items()}
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"data.atomic_energies: {path} is neither 'fit' nor an existing file of isolated atoms")
    try:
        frames = _read_all(path)
    except Exception as err:
        raise ConfigError(f"cannot read {path} with ase.io.read: {type(err).__name__}: {err}") from err
    return isolated_atom_energies(frames, keys, str(path))


def force_rms(frames: Sequence[Atoms], keys: Optional[LabelKeys] = None) -> float:
    """Root-mean-square force component (eV/Å) of a set of frames."""
    keys = keys or LabelKeys()
    forces = np.concatenate([get_forces(a, keys).ravel() for a in frames])
    return float(np.sqrt(np.mean(forces**2))) if forces.size else 1.0


def config_type_weight(atoms: Atoms, weights: Optional[Dict[str, float]], keys: Optional[LabelKeys] = None) -> float:
    """Loss weight of a structure: ``weights[config_type]``, else ``weights["Default"]``, else 1."""
    if not weights:
        return 1.0
    kind = config_type(atoms, keys or LabelKeys())
    return float(weights.get(kind, weights.get(DEFAULT_CONFIG_TYPE, 1.0)))


def elements_of(frames: Sequence[Atoms]) -> List[str]:
    """Chemical symbols present, ordered by atomic number."""
    numbers = sorted({int(z) for a in frames for z in a.numbers})
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]


def check_elements_covered(train: Sequence[Atoms], other: Sequence[Atoms], name: str) -> None:
    """Every element of ``other`` must occur in the training set."""
    missing = set(elements_of(other)) - set(elements_of(train))
    if missing:
        raise ConfigError(
            f"element(s) {', '.join(sorted(missing))} occur in the {name} data but not in the "
            "training data; the model could not learn them. Add them to the training set."
        )


def to_graphs(
    frames: Sequence[Atoms],
    cutoff: float,
    elements: Sequence[str],
    keys: Optional[LabelKeys] = None,
    config_type_weights: Optional[Dict[str, float]] = None,
):
    """Labelled graphs (energy, forces, stress when present) for training; each graph's
    ``weight`` ``(1,)`` is its loss weight (:func:`config_type_weight`)."""
    graphs = []
    for atoms in frames:
        graph = atoms_to_graph(atoms, cutoff, elements, with_labels=True, keys=keys)
        graph.weight = torch.tensor([config_type_weight(atoms, config_type_weights, keys)], dtype=torch.float64)
        graphs.append(graph)
    return graphs


def average_num_neighbors(graphs) -> float:
    """Mean number of neighbours per atom over a set of graphs."""
    edges = sum(int(g.edge_index.shape[1]) for g in graphs)
    atoms = sum(int(g.pos.shape[0]) for g in graphs)
    return max(edges / max(atoms, 1), 1.0)


def load_splits(
    train: Sequence[PathLike],
    valid: Optional[Sequence[PathLike]] = None,
    test: Optional[Sequence[PathLike]] = None,
    valid_size: Union[int, float] = 0.05,
    test_size: Union[int, float] = 0.0,
    seed: int = 0,
    require_forces: bool = True,
    require_stress: bool = False,
    keys: Optional[LabelKeys] = None,
) -> Tuple[Dict[str, List[Atoms]], Dict[str, Dict]]:
    """Read the data files and split them.

    Without explicit ``valid``/``test`` files, *each* training file is split on
    its own (so every molecule of a multi-molecule set is in every split, and
    no test frame is ever trained on). Isolated-atom frames (config_type
    ``isolated_atom``) are taken out of every file before splitting; those of the
    training files are returned as ``splits["isolated_atom"]`` (E0 references).
    Returns the frames of each split and, for reproducibility, the frame indices
    taken from each file.
    """
    splits: Dict[str, List[Atoms]] = {"train": [], "valid": [], "test": [], "isolated_atom": []}
    record: Dict[str, Dict] = {}

    def read(path):
        frames = read_structures(path, require_forces, require_stress, keys)
        kept = [k for k, a in enumerate(frames) if not is_isolated_atom(a)]
        isolated = [k for k, a in enumerate(frames) if is_isolated_atom(a)]
        if isolated:
            record.setdefault(str(path), {})["isolated_atom"] = isolated
        return frames, kept, isolated

    for path in train:
        frames, kept, isolated = read(path)
        splits["isolated_atom"].extend(frames[i] for i in isolated)
        if not kept:
            continue
        if valid is None:
            idx = split_indices(len(kept), valid_size, test_size if test is None else 0, seed)
            for key in idx:
                record.setdefault(str(path), {})[key] = [kept[i] for i in idx[key]]
                splits[key].extend(frames[kept[i]] for i in idx[key])
        else:
            splits["train"].extend(frames[i] for i in kept)
            record.setdefault(str(path), {})["train"] = kept
    for key, paths in (("valid", valid), ("test", test)):
        for path in paths or []:
            frames, kept, _ = read(path)
            splits[key].extend(frames[i] for i in kept)
            record.setdefault(str(path), {})[key] = kept
    if not splits["train"]:
        raise ConfigError("the training split is empty")
    if not splits["valid"]:
        raise ConfigError("the validation split is empty; give valid files or a valid_size > 0")
    for key in ("valid", "test"):
        check_elements_covered(splits["train"], splits[key], key)
    return splits, record
