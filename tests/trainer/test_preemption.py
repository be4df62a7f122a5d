"""Preemption: SIGKILL mid-epoch, restart, same final state as no failure;
early stopping's state (best, patience, best weights) survives the restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mer_testing import REPO, saved_position

pytestmark = pytest.mark.slow

ARGS = ["--set", "train.epochs=2", "--set", "train.steps_per_epoch=30", "--set", "train.batch_size=64",
        "--set", "train.validation_fraction=0", "--set", "train.checkpoint_every_steps=7", "--verbose", "0"]


def _cmd(data, model_dir):
    return [sys.executable, "-m", "trainer.task", "--data_dir", data, "--model_dir", model_dir, *ARGS]


def test_killed_job_resumes_without_retraining_examples(world, tmp_path):
    reference_dir, resumed_dir = str(tmp_path / "reference"), str(tmp_path / "resumed")
    subprocess.run(_cmd(world, reference_dir), cwd=REPO, check=True, capture_output=True, timeout=600)
    reference = json.loads(open(f"{reference_dir}/training.json").read())

    proc = subprocess.Popen(_cmd(world, resumed_dir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    position, deadline = None, time.time() + 600
    while position is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        try:
            position = saved_position(f"{resumed_dir}/backup")
        except Exception:  # checkpoint being written; poll again
            position = None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert position is not None, "the job finished or failed before its first backup"
    assert position[1] < 29, f"backup at {position} is not mid-epoch"

    out = subprocess.run(_cmd(world, resumed_dir), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming from" in out.stderr  # a log line (stderr)
    resumed = json.loads(open(f"{resumed_dir}/training.json").read())
    assert resumed["resumed"]["batches_done"] > 0
    assert resumed["optimizer_steps"] == reference["optimizer_steps"] == 60
    # Exactly the reference's examples, each once: same count and checksum.
    assert resumed["trained_examples"] == reference["trained_examples"] == 60 * 64
    assert resumed["trained_checksum"] == reference["trained_checksum"]


class _Preempted(Exception):
    pass


def _train(world, model_dir, preempt_after=None):
    """Trains with a flat validation curve (learning rate 0): epoch 0 stays
    the best, and with patience 2 the job stops after epoch 2 (30 steps).
    `preempt_after`: raise after that many steps (their backup is written)."""
    from trainer import runtime
    from trainer.config import load_config
    from trainer.layers._keras import keras
    from trainer.task import train

    class Preempt(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == preempt_after:
                raise _Preempted

    cfg = load_config("synthetic-small", [
        "train.epochs=6", "train.steps_per_epoch=10", "train.batch_size=64", "train.learning_rate=0.0",
        "train.early_stopping_patience=2", "train.checkpoint_every_steps=8", "train.validation_max_records=300"])
    keras.backend.clear_session()
    return train(cfg, world, runtime.resolve(str(model_dir), env={}), verbose=0,
                 callbacks=[Preempt()] if preempt_after else ())


def test_early_stopping_state_survives_a_restart(world, tmp_path):
    """Backups at steps 8, 16, 24; preempted after step 21 (epoch 2). The
    last backup is in epoch 1, so the generation written at epoch 1's end is
    stale: epoch 1 is re-run from that backup and must not count twice
    (that would stop after 20 steps). Without restored state the restarted
    job would keep training to step 40 and end on epoch 1's weights (1280
    examples trained)."""
    preempt_after, resume_epoch = 21, 1
    with pytest.raises(_Preempted):
        _train(world, tmp_path / "resumed", preempt_after)
    state = tmp_path / "resumed" / "backup" / "early_stopping"
    assert sorted(p.name for p in state.iterdir() if p.suffix == ".json") == [
        f"epoch-{e:04d}.json" for e in range(preempt_after // 10)]
    resumed = _train(world, tmp_path / "resumed")

    # What the same job without a failure does: epoch 0 stays the best
    # (strict improvement), patience 2 stops it after epoch 2.
    assert resumed["resumed"]["epoch"] == resume_epoch
    assert resumed["epochs_run_this_process"] == 3 - resume_epoch
    assert resumed["optimizer_steps"] == 30
    monitor = resumed["monitor"]
    assert len(resumed["history"][monitor]) == 3 and resumed["history_first_epoch"] == 0
    assert len(set(resumed["history"][monitor])) == 1  # learning rate 0: a flat curve
    assert resumed["best_epoch"] == 0 and resumed["best_validation"] == resumed["history"][monitor][0]
    # The weights put back are epoch 0's, audit counters included: 640 examples.
    assert resumed["trained_examples"] == 10 * 64
    assert not state.exists()  # a finished job leaves nothing to resume
