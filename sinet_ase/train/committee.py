"""Train a committee: N runs of one config with seeds ``seed .. seed+N-1``.

Member ``k`` trains into ``run_dir/member_k`` with ``seed + k``. The seed draws
the initial weights and the batch order, and, where the validation (and test)
frames are split off the training files (``data.valid_size``), also that split,
so members then also see different training subsets; with explicit
``data.valid``/``data.test`` files every member trains on the same frames. The
members' ``best_model.pt`` files load as one committee with
``SINetCalculator(committee_glob(config))``.
"""

import copy
from pathlib import Path
from typing import Dict, List

from ..errors import ConfigError
from .config import TrainConfig
from .trainer import train


def member_configs(config: TrainConfig, members: int) -> List[TrainConfig]:
    """The configs of the ``members`` runs: ``run_dir/member_k`` and ``seed + k``."""
    if isinstance(members, bool) or int(members) != members or members < 1:
        raise ConfigError(f"a committee needs a positive whole number of members, got {members!r}")
    configs = []
    for k in range(int(members)):
        member = copy.deepcopy(config)
        member.seed = config.seed + k
        member.run_dir = str(Path(config.run_dir) / f"member_{k}")
        configs.append(member)
    return configs


def committee_glob(config: TrainConfig) -> str:
    """The glob string that :class:`~sinet_ase.SINetCalculator` takes for the committee."""
    return str(Path(config.run_dir) / "member_*" / "best_model.pt")


def train_committee(config: TrainConfig, members: int, resume: bool = False, quiet: bool = False) -> List[Dict]:
    """Train the members one after another; returns their summaries.

    Every member's folder is checked before the first one starts: without
    ``resume``, an existing checkpoint is a :class:`ConfigError` (nothing is
    overwritten); with ``resume``, members with a checkpoint continue and the
    others start.
    """
    configs = member_configs(config, members)
    existing = [c.run_dir for c in configs if (Path(c.run_dir) / "checkpoint.pt").is_file()]
    if existing and not resume:
        raise ConfigError(
            f"committee member run(s) {', '.join(existing)} exist: pass --resume to "
            "continue them, or choose another run_dir (nothing is overwritten)"
        )
    summaries = []
    for member in configs:
        if not quiet:
            print(f"committee: training {member.run_dir} (seed {member.seed})", flush=True)
        summaries.append(train(member, resume=member.run_dir in existing, quiet=quiet))
    return summaries
