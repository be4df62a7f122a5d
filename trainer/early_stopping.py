"""Early stopping that survives preemption.

Keras' `BackupAndRestore` restores weights, optimizer and the epoch/step
counters, but `EarlyStopping` starts over after a restart: its best value,
patience counter and best weights (what `restore_best_weights` puts back at
the end) are gone, so a preempted job can stop later, or end on other
weights, than the same job run without a failure.

`ResumableEarlyStopping` writes its state after every epoch under
`state_dir` (next to the backup), one generation per epoch:
`epoch-NNNN.json` (best value, best epoch, patience counter, every epoch's
logs so far, from `first_epoch`) and `best-NNNN.npz` (the weights of best epoch NNNN, written
before the JSON that names it). A restarted job resumes from the generation
of the last epoch the backup completed; generations of later epochs (ended
after the last backup, so about to be re-run) are ignored and overwritten.
Only the chief writes; every worker reads the chief's state, so all replicas
stop at the same epoch with the same weights.
"""

from __future__ import annotations

import io
import json
import logging
import math

import numpy as np

from trainer.layers._keras import keras, tf

log = logging.getLogger(__name__)


def _write(path: str, data: bytes) -> None:
    """Writes then renames, so a reader never sees half a file."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "wb") as handle:
        handle.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping(restore_best_weights=True)` whose state is backed up.

    Args:
      state_dir: where the generations live (any `tf.io.gfile` path).
      resume_epoch: epochs the restored backup has completed (0 = fresh).
      keep_epochs: generations kept behind the newest: the backup may lag the
        epoch end by up to `ceil(backup_every_steps / steps_per_epoch)` epochs.
      is_chief: write the state (other workers only read it).
      **kwargs: `keras.callbacks.EarlyStopping` arguments.
    """

    def __init__(self, state_dir: str, resume_epoch: int = 0, keep_epochs: int = 2,
                 is_chief: bool = True, **kwargs):
        super().__init__(restore_best_weights=True, **kwargs)
        self.state_dir = state_dir
        self.resume_epoch = resume_epoch
        self.keep_epochs = keep_epochs
        self.is_chief = is_chief
        self.epoch_logs: list[dict] = []  # logs of every epoch trained so far, this process's too
        self.first_epoch = 0  # epoch of epoch_logs[0]

    @staticmethod
    def keep_for(backup_every_steps: int, steps_per_epoch: int) -> int:
        return math.ceil(backup_every_steps / max(1, steps_per_epoch)) + 1

    def _json(self, epoch: int) -> str:
        return f"{self.state_dir}/epoch-{epoch:04d}.json"

    def _weights(self, epoch: int) -> str:
        return f"{self.state_dir}/best-{epoch:04d}.npz"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.epoch_logs, self.first_epoch = [], self.resume_epoch
        if self.resume_epoch == 0:
            if self.is_chief and tf.io.gfile.exists(self.state_dir):
                tf.io.gfile.rmtree(self.state_dir)  # a finished or abandoned job's state
            return
        path = self._json(self.resume_epoch - 1)
        if not tf.io.gfile.exists(path):
            log.warning("no early-stopping state at %s; early stopping restarts (best value and best weights "
                        "of the epochs before the restart are unknown)", path)
            return
        with tf.io.gfile.GFile(path) as handle:
            state = json.load(handle)
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.epoch_logs, self.first_epoch = state["epoch_logs"], state["first_epoch"]
        with tf.io.gfile.GFile(self._weights(self.best_epoch), "rb") as handle:
            arrays = np.load(io.BytesIO(handle.read()))
            self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def on_epoch_end(self, epoch, logs=None):
        best_before = self.best_weights
        super().on_epoch_end(epoch, logs)
        self.epoch_logs.append({k: float(v) for k, v in (logs or {}).items()})
        if not self.is_chief or self.best_weights is None:
            return
        tf.io.gfile.makedirs(self.state_dir)
        if self.best_weights is not best_before:  # a new best (or the first epoch's weights)
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            _write(self._weights(self.best_epoch), buffer.getvalue())
        state = {"epoch": epoch, "best": float(self.best), "best_epoch": int(self.best_epoch),
                 "wait": int(self.wait), "first_epoch": self.first_epoch, "epoch_logs": self.epoch_logs}
        _write(self._json(epoch), json.dumps(state).encode())
        self._prune(epoch)

    def _prune(self, epoch: int) -> None:
        """Drops generations older than `keep_epochs` and weights no kept
        generation names."""
        needed = set()
        for name in tf.io.gfile.listdir(self.state_dir):
            if not (name.startswith("epoch-") and name.endswith(".json")):
                continue
            gen = int(name[len("epoch-"):-len(".json")])
            if gen < epoch - self.keep_epochs:
                tf.io.gfile.remove(f"{self.state_dir}/{name}")
                continue
            with tf.io.gfile.GFile(f"{self.state_dir}/{name}") as handle:
                needed.add(json.load(handle)["best_epoch"])
        for name in tf.io.gfile.listdir(self.state_dir):
            if name.startswith("best-") and name.endswith(".npz") and int(name[len("best-"):-len(".npz")]) not in needed:
                tf.io.gfile.remove(f"{self.state_dir}/{name}")

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.stopped_epoch > 0 and self.best_weights is not None:
            log.info("early stopping after epoch %d; the weights of best epoch %d (%s %.4f) are kept",
                     self.stopped_epoch + 1, self.best_epoch + 1, self.monitor, self.best)
        if self.is_chief and tf.io.gfile.exists(self.state_dir):
            tf.io.gfile.rmtree(self.state_dir)  # done: nothing left to resume
