"""The trainer shared by every task (energy + force potentials, QM9 properties, N-body).

What is learned (data, batches, model, loss, metrics, exported file) comes from a
:class:`~sinet_ase.train.tasks.Task` chosen by the config's ``task`` key; the
trainer does the rest and names no task (each task's class docstring gives its loss:
:mod:`sinet_ase.potential.task`, :mod:`sinet_ase.qm9.task`, :mod:`sinet_ase.nbody.task`).

AdamW (or Adam, ``training.optimizer``), a linear warm-up then a constant learning rate
(``constant``), cosine decay over the epochs (``cosine``), over the
training-time budget ``max_minutes`` (``cosine_time``: the learning rate reaches
``min_lr`` when the budget is spent; not bit-reproducible, since it follows the
clock), over CPU minutes of the process, all threads (``cosine_cpu``: runs compared
at equal CPU time on a shared machine), or reduce-on-plateau; gradient
clipping, and an exponential moving average (EMA) of the weights that is
used for validation and for the exported model (``ema_decay: 0`` scores the raw weights).
Validation runs every ``valid_every`` epochs and after the last. Every epoch writes a
checkpoint atomically; ``resume=True`` continues from it exactly (the batch
order of epoch ``k`` is drawn from ``seed + k``, so no RNG state is needed
beyond model, optimiser, scheduler and EMA). A resumed run may change only
how long and where it runs (:data:`~sinet_ase.train.checkpoint.RESUMABLE_KEYS`);
other changes are refused and the allowed ones are appended to
``run_dir/resume.log``. The best-on-validation EMA
model is exported as ``best_model.pt`` by the task. When a new loss stage starts
(``training.stage2_start``) the best model is chosen among that stage's epochs only (its
losses do not compare with the last stage's); the last stage's best is kept as
``best_model_previous_stage.pt``, since a stage that weights energies up can end with worse
forces than it started from.

Multi-process training: started by ``torchrun``, each rank takes every
``world``-th batch and ``DistributedDataParallel`` averages the gradients
(gloo on CPU, nccl on GPU), so all ranks hold the same weights.
"""

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..errors import ConfigError
from ..files import atomic_write, remove_stale_temp_files
from ..ops import fused
from .checkpoint import config_changes, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .report import write_csv
from .tasks import make_task
from .tensorboard_log import TensorBoardLog

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: schedules that decay the learning rate over the ``max_minutes`` budget, not over the epochs
TIME_SCHEDULES = ("cosine_time", "cosine_cpu")


#: whether this module initialised the process group (so :func:`train` tears it down)
_OWNS_PROCESS_GROUP = False


def _distributed_setup(device: str):
    global _OWNS_PROCESS_GROUP
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        _OWNS_PROCESS_GROUP = True
    return dist.get_rank(), dist.get_world_size()


def _distributed_teardown():
    """Destroy the process group :func:`_distributed_setup` created (not one the caller made).

    Without it a rank that finishes first may exit with gloo's threads still running, and
    the C++ runtime aborts it ("terminate called without an active exception"), which
    fails the whole ``torchrun`` job although training succeeded.
    """
    global _OWNS_PROCESS_GROUP
    if not _OWNS_PROCESS_GROUP:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        # every rank reaches this point before any tears down: a rank that destroys the
        # group while another still has collectives in flight aborts in gloo's threads
        dist.barrier()
        dist.destroy_process_group()
    _OWNS_PROCESS_GROUP = False


#: ``training`` keys newer than some checkpoints; their defaults are the behaviour from
#: before they existed
NEWER_TRAINING_KEYS = ("optimizer", "valid_every")


def _with_training_defaults(stored: Dict) -> Dict:
    """A checkpoint's config with the :data:`NEWER_TRAINING_KEYS` it lacks set to their
    defaults, so that a run started before they existed resumes as an unchanged config."""
    import dataclasses

    from .config import TrainingConfig

    if not isinstance(stored.get("training"), dict):
        return stored
    defaults = dataclasses.asdict(TrainingConfig())
    return {**stored, "training": {**{k: defaults[k] for k in NEWER_TRAINING_KEYS}, **stored["training"]}}


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite: training stops before the
    optimiser step spreads it into the weights (the last checkpoint stays valid)."""


class Trainer:
    """Set up data, model and optimiser from a :class:`TrainConfig`; :meth:`run` trains.

    Args:
        config: the run configuration.
        resume: continue from ``run_dir/checkpoint.pt``.
        quiet: no progress bar (tests).
    """

    def __init__(self, config: TrainConfig, resume: bool = False, quiet: bool = False):
        self.config = config
        t = config.training
        self.rank, self.world = _distributed_setup(t.device)
        self.is_main = self.rank == 0
        self.quiet = quiet or not self.is_main
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.device = torch.device(
            t.device
            if t.device == "cpu"
            else (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if t.device == "cuda" and self.world > 1 else t.device)
        )
        self.dtype = _DTYPES[t.dtype]
        self.run_dir = Path(config.run_dir)
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        if resume and not self.checkpoint_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.checkpoint_path}")
        if not resume and self.checkpoint_path.is_file():
            raise ConfigError(
                f"{self.checkpoint_path} exists: pass --resume to continue that run, or choose "
                "another run_dir (nothing is overwritten)"
            )

        resume_state = load_checkpoint(self.checkpoint_path) if resume else None
        self.resume_log: List[str] = list(resume_state.get("resume_log", [])) if resume_state else []
        new_log: List[str] = []
        if resume_state is not None:
            allowed, refused = config_changes(
                _with_training_defaults(resume_state.get("config", {})), config.to_dict(), config.resumable_keys()
            )
            if refused:
                raise ConfigError(
                    f"--resume: the config differs from the one {self.checkpoint_path} was trained "
                    f"with in key(s) a run cannot change midway:\n  "
                    + "\n  ".join(refused)
                    + "\nRestore those values to continue, or start a new run in another run_dir. "
                    "Resumable keys: training.epochs, max_minutes, patience, device, num_threads, "
                    "valid_batch_size, stage2_*"
                )
            new_log = [f"resumed after epoch {int(resume_state['epoch'])}: {line}" for line in allowed]

        # --- data: every check before any training starts ---
        self.task = make_task(config)
        self.task.setup(quiet=self.quiet)
        self.graphs = self.task.graphs
        self.split_record = self.task.split_record
        if resume_state is not None:
            self.task.check_resume(resume_state)
            self._check_split_unchanged()
        self.stats = self.task.stats
        self.sizes = {k: len(v) for k, v in self.graphs.items()}

        # --- model, EMA, optimiser, schedule ---
        torch.manual_seed(config.seed)
        self.model = self.task.build_model()
        self.model = self.model.to(device=self.device, dtype=self.dtype)
        self.ema = AveragedModel(
            self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=False
        )  # buffers are constants, and some are integer
        #: whether the edge work runs through the fused CPU kernels (training.fused_kernels)
        self.fused_kernels = fused.resolve_option(t.fused_kernels, self.device, build_now=True)
        fused.set_fused(self.model, self.fused_kernels)
        fused.set_fused(self.ema.module, self.fused_kernels)
        self.train_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(self.model)
        # frozen parameters (requires_grad False: training.freeze) stay out of the optimiser
        optimizer = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = optimizer(
            [p for p in self.model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay
        )
        self.elapsed = 0.0  # wall seconds of training, over all resumed parts
        self.cpu_elapsed = 0.0  # CPU seconds of this process (all threads), likewise
        if t.scheduler != "plateau":

            def lr_factor(epoch):
                if epoch < t.warmup_epochs:
                    return (epoch + 1) / (t.warmup_epochs + 1)
                if t.scheduler == "constant":
                    return 1.0
                if t.scheduler == "cosine":
                    progress = (epoch - t.warmup_epochs) / max(t.epochs - t.warmup_epochs, 1)
                else:  # the fraction of the training-time budget spent
                    progress = self.progress()
                progress = min(progress, 1.0)
                floor = t.min_lr / t.lr
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr
            )

        self.epoch = 0
        self.best = {"valid_loss": float("inf"), "epoch": -1}
        self.bad_epochs = 0
        self.history: List[Dict[str, float]] = []
        if resume_state is not None:
            self._load(resume_state)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temp_files(self.run_dir):
                if not self.quiet:
                    print(f"removed {stale}, a partial file of a run that was killed", file=sys.stderr)
            if new_log:
                with open(self.run_dir / "resume.log", "a", encoding="utf-8") as log:
                    log.write("".join(line + "\n" for line in new_log))
                if not self.quiet:
                    print("\n".join(new_log), file=sys.stderr)
        self.tensorboard = TensorBoardLog(self.run_dir) if t.tensorboard and self.is_main else None
        self.resume_log += new_log
        if self.is_main:
            (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
            (self.run_dir / "split.json").write_text(json.dumps(self.split_record))

    # --- checkpoints ---
    def _state(self) -> Dict:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "elapsed": self.elapsed,
            "cpu_elapsed": self.cpu_elapsed,
            "stats": self.stats,
            "task_state": self.task.state_dict(),
            "resume_log": self.resume_log,
        }

    def _check_split_unchanged(self) -> None:
        """On resume, the train/valid/test split must be the one ``split.json`` recorded."""
        path = self.run_dir / "split.json"
        if not path.is_file():
            return
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            return  # unreadable: rewritten below from the (checked) config
        if stored != json.loads(json.dumps(self.split_record)):
            raise ConfigError(
                f"--resume: the data split differs from the one recorded in {path} (the data "
                "files changed since the run started); the validation losses would not compare. "
                "Restore the data files or start a new run in another run_dir"
            )

    def _load(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best = dict(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        self.elapsed = float(state["elapsed"])
        self.cpu_elapsed = float(state.get("cpu_elapsed", 0.0))
        self.stats = state["stats"]
        self.task.load_state_dict(state.get("task_state", {}))

    def progress(self) -> float:
        """Fraction of the schedule done: of the epochs, or of the time budget (``cosine_time``)."""
        t = self.config.training
        if t.scheduler in TIME_SCHEDULES:
            return min(self.spent() / (60 * t.max_minutes), 1.0)
        return self.epoch / t.epochs

    def spent(self) -> float:
        """Seconds of the budget spent: wall time, or CPU time with ``cosine_cpu``."""
        return self.cpu_elapsed if self.config.training.scheduler == "cosine_cpu" else self.elapsed

    # --- one step, one epoch ---
    def _chunks(self, n: int, batch_size: int, shuffle_seed: Optional[int]) -> List[np.ndarray]:
        """Indices of this rank's batches over ``n`` samples, shuffled by ``shuffle_seed``
        (None: in order, every batch)."""
        order = np.arange(n)
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(n)
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle_seed is not None and self.world > 1:
            chunks = chunks[: len(chunks) - len(chunks) % self.world][self.rank :: self.world]
        return chunks

    def _batches(self, samples: Sequence, batch_size: int, shuffle_seed: Optional[int]):
        """Batches of ``samples`` on the device; the task collates them
        (:meth:`~sinet_ase.train.tasks.Task.collate`)."""
        for chunk in self._chunks(len(samples), batch_size, shuffle_seed):
            yield self.task.collate(samples, chunk).to(self.device)

    def train_epoch(self) -> float:
        t = self.config.training
        self.model.train()
        total, count = 0.0, 0
        samples = self.graphs["train"]
        chunks = self._chunks(len(samples), t.batch_size, self.config.seed * 100_003 + self.epoch)
        for chunk in tqdm(
            chunks, disable=self.quiet, leave=False, desc=f"epoch {self.epoch + 1}/{t.epochs}", file=sys.stderr
        ):
            batch, size = self.task.collate(samples, chunk).to(self.device), len(chunk)
            out = self.task.train_forward(self.train_model, batch)
            loss = self.task.loss(out, batch)
            value = float(loss.detach())
            if self.world == 1 and not math.isfinite(value):
                # (with several ranks one rank stopping alone would hang the others in the
                # gradient all-reduce; they stop together at the validation check below)
                self._non_finite("training", value)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.ema.update_parameters(self.model)
            total += value * size
            count += size
        return total / max(count, 1)

    def _non_finite(self, which: str, value: float) -> None:
        kept = (
            f"the checkpoint of epoch {self.epoch} in {self.checkpoint_path} is kept"
            if self.epoch
            else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"training stopped in epoch {self.epoch + 1}: the {which} loss is {value}. Either the "
            "training diverged (lower training.lr or training.grad_clip) or a label is not "
            f"finite; {kept}"
        )

    def evaluate(self, model: torch.nn.Module, graphs: Sequence, keep: bool = False) -> Dict:
        """Loss and the task's metrics of ``model`` on ``graphs`` (energy task: energy per
        atom in meV/atom, forces in meV/Å); ``keep`` adds ``kept`` (arrays for the plots)."""
        model.eval()
        batches = self._batches(graphs, self.config.training.valid_batch_size, None)
        return self.task.evaluate(model, batches, keep=keep)

    def _export(self, path: Path, extra: Optional[Dict] = None) -> None:
        metadata = {"epoch": self.epoch, "train_size": self.sizes["train"], "config": json.dumps(self.config.to_dict())}
        if hasattr(self.model, "elements"):  # models of chemical elements
            metadata["elements"] = self.model.elements
        metadata.update(self.task.export_metadata())
        metadata.update(extra or {})
        self.task.export(self.ema.module, path, metadata)

    def _keep_previous_stage_best(self) -> None:
        """Copy ``best_model.pt`` to ``best_model_previous_stage.pt`` (atomically)."""
        best = self.run_dir / "best_model.pt"
        if self.is_main and best.exists():
            data = best.read_bytes()
            atomic_write(self.run_dir / "best_model_previous_stage.pt", lambda handle: handle.write(data))

    # --- the loop ---
    def run(self, stop_after_epoch: Optional[int] = None) -> Dict:
        """Train until ``training.epochs``, early stopping, ``max_minutes`` or ``stop_after_epoch``.

        Returns the final summary (also written to ``run_dir/summary.json``).
        """
        t = self.config.training
        started, cpu_started = time.perf_counter(), time.process_time()
        elapsed_before, cpu_before = self.elapsed, self.cpu_elapsed
        while self.epoch < t.epochs:
            epoch_start = time.perf_counter()
            if self.task.begin_epoch(self.progress()):
                # a new loss stage: its losses do not compare with the last stage's
                self.best = {"valid_loss": float("inf"), "epoch": -1}
                self.bad_epochs = 0
                self._keep_previous_stage_best()
            train_loss = self.train_epoch()
            validate = (self.epoch + 1) % t.valid_every == 0 or self.epoch + 1 == t.epochs
            valid = self.evaluate(self.ema.module, self.graphs["valid"]) if validate else None
            if validate and not math.isfinite(valid["loss"]):
                self._non_finite("validation", valid["loss"])
            self.epoch += 1
            self.elapsed = elapsed_before + time.perf_counter() - started
            self.cpu_elapsed = cpu_before + time.process_time() - cpu_started
            if t.scheduler != "plateau":
                self.scheduler.step()
            else:
                self.scheduler.step(valid["loss"])
            # epochs without validation log NaN there, so that every CSV row has the same columns
            metrics = {f"valid_{k}": valid[k] if validate else math.nan for k in self.task.metric_keys}
            row = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "valid_loss": valid["loss"] if validate else math.nan,
                **metrics,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - epoch_start,
                "elapsed_seconds": self.elapsed,
            }
            self.history.append(row)
            improved = validate and valid["loss"] < self.best["valid_loss"]
            if improved:
                self.best = {"valid_loss": valid["loss"], "epoch": self.epoch, **metrics}
                self.bad_epochs = 0
            elif validate:
                self.bad_epochs += 1
            if self.is_main:
                if improved:
                    self._export(self.run_dir / "best_model.pt")
                save_checkpoint(self._state(), self.checkpoint_path)
                write_csv(self.history, self.run_dir / "metrics.csv")
                if self.tensorboard is not None:
                    self.tensorboard.write(row)
                if not self.quiet and validate:
                    tqdm.write(
                        f"epoch {self.epoch:4d}  loss {train_loss:.4g}  {self.task.progress(valid)}  "
                        f"lr {row['lr']:.2e}  {row['epoch_seconds']:.1f} s{'  *' if improved else ''}",
                        file=sys.stdout,
                    )
            if self.bad_epochs >= t.patience:
                break
            if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                return {"stopped_at_epoch": self.epoch}
            if not validate:
                continue  # time limits stop at a validated epoch, so that a best model exists
            if t.scheduler in TIME_SCHEDULES:
                if self.spent() >= 60 * t.max_minutes:
                    break  # the budget is spent, over all resumed parts of the run
            elif t.max_minutes is not None and (time.perf_counter() - started) / 60 > t.max_minutes:
                break
        return self.finish()

    def finish(self) -> Dict:
        """Test the best model, write plots and ``summary.json``."""
        summary = {
            "task": self.task.name,
            **self.task.summary_extra(),
            "epochs_done": self.epoch,
            "best": self.best,
            "sizes": self.sizes,
            "train_seconds": self.elapsed,
            "train_cpu_seconds": self.cpu_elapsed,
            "stats": self.stats,
            "world_size": self.world,
            "resume_log": self.resume_log,
            "hardware": {
                "device": str(self.device),
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
            },
        }
        if self.world > 1:
            summary["ranks_agree"] = self._ranks_agree()
        if not self.is_main:
            return summary
        if self.tensorboard is not None:
            self.tensorboard.close()
        best = self.task.load_exported(self.run_dir / "best_model.pt").to(device=self.device, dtype=self.dtype)
        which = "test" if self.graphs["test"] else "valid"
        result = self.evaluate(best, self.graphs[which], keep=True)
        kept = result.pop("kept")
        summary[which] = result
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.task.report(self.run_dir, self.history, kept, which)
        return summary

    def _ranks_agree(self) -> bool:
        """Whether every rank holds bit-identical weights (DDP keeps them in step)."""
        import torch.distributed as dist

        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in self.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return all(torch.equal(gathered[0], g) for g in gathered[1:])


def train(config: TrainConfig, resume: bool = False, quiet: bool = False) -> Dict:
    """Build a :class:`Trainer` and run it; under ``torchrun``, close the process group
    it opened."""
    try:
        return Trainer(config, resume=resume, quiet=quiet).run()
    finally:
        _distributed_teardown()
