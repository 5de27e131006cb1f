"""Lightning callback for the NequIP runs (NequIP's venv): training budget on process CPU time, and
the wall and CPU time of every training epoch -> JSON.

budget_s > 0 and clock == "cpu": stop training (trainer.should_stop after the current step, the same
mechanism as Lightning's max_time Timer) once this process has used budget_s CPU seconds since the
start of the training loop. clock == "wall": nothing here; Lightning's trainer.max_time does it.
"""

import json
import time
import lightning


class EpochTimer(lightning.Callback):
    def __init__(self, path: str, budget_s: float = 0.0, clock: str = "cpu"):
        assert clock in ("cpu", "wall"), clock
        self.path, self.budget_s, self.clock = path, float(budget_s), clock
        self.t0 = self.c0 = None
        self.hit = False
        self.epochs = []

    def on_train_start(self, trainer, pl_module):
        self.t0, self.c0 = time.time(), time.process_time()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t, self._c, self._b = time.time(), time.process_time(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._b = batch_idx + 1
        if self.clock == "cpu" and self.budget_s > 0 and time.process_time() - self.c0 >= self.budget_s:
            self.hit = True
            trainer.should_stop = True

    def on_validation_epoch_start(self, trainer, pl_module):
        # Lightning validates after the training batches of the epoch: time the training part here
        if trainer.sanity_checking or not hasattr(self, "_t"):
            return
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "seconds": time.time() - self._t,
                "cpu_seconds": time.process_time() - self._c,
                "batches": self._b,
                "complete": self._b == trainer.num_training_batches,
                "t_since_start": time.time() - self.t0,
            }
        )
        self._dump(trainer)

    def on_train_end(self, trainer, pl_module):
        self._dump(trainer)

    def _dump(self, trainer):
        full = sorted(e["seconds"] for e in self.epochs if e["complete"])
        fullc = sorted(e["cpu_seconds"] for e in self.epochs if e["complete"])
        with open(self.path, "w") as f:
            json.dump(
                {
                    "budget_s": self.budget_s,
                    "budget_clock": self.clock,
                    "budget_hit_cpu": self.hit,
                    "train_loop_wall_s": time.time() - self.t0 if self.t0 else None,
                    "train_loop_cpu_s": time.process_time() - self.c0 if self.c0 else None,
                    "n_epochs_started": trainer.current_epoch + 1,
                    "n_full_epochs": len(full),
                    "sec_per_epoch_median_full": full[len(full) // 2] if full else None,
                    "cpu_sec_per_epoch_median_full": fullc[len(fullc) // 2] if fullc else None,
                    "epochs": self.epochs,
                },
                f,
                indent=1,
            )
