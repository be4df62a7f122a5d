"""Preemption: SIGKILL mid-epoch, restart, same final state as no failure."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from mer_testing import REPO, prepare_small_world

pytestmark = pytest.mark.slow

ARGS = ["--set", "train.epochs=2", "--set", "train.steps_per_epoch=30", "--set", "train.batch_size=64",
        "--set", "train.validation_fraction=0", "--set", "train.checkpoint_every_steps=7", "--verbose", "0"]


def _cmd(data, model_dir):
    return [sys.executable, "-m", "trainer.task", "--data_dir", data, "--model_dir", model_dir, *ARGS]


def _saved_position(backup: str):
    import tensorflow as tf

    path = tf.train.latest_checkpoint(f"{backup}/chief")
    if not path:
        return None
    reader = tf.train.load_checkpoint(path)
    return (int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE")))


def test_killed_job_resumes_without_retraining_examples(tmp_path):
    data = prepare_small_world(str(tmp_path / "data"))
    reference_dir, resumed_dir = str(tmp_path / "reference"), str(tmp_path / "resumed")
    subprocess.run(_cmd(data, reference_dir), cwd=REPO, check=True, capture_output=True, timeout=600)
    reference = json.loads(open(f"{reference_dir}/training.json").read())

    proc = subprocess.Popen(_cmd(data, resumed_dir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    position, deadline = None, time.time() + 600
    while position is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        try:
            position = _saved_position(f"{resumed_dir}/backup")
        except Exception:  # checkpoint being written; poll again
            position = None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert position is not None, "the job finished or failed before its first backup"
    assert position[1] < 29, f"backup at {position} is not mid-epoch"

    out = subprocess.run(_cmd(data, resumed_dir), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming from" in out.stdout
    resumed = json.loads(open(f"{resumed_dir}/training.json").read())
    assert resumed["resumed"]["batches_done"] > 0
    assert resumed["optimizer_steps"] == reference["optimizer_steps"] == 60
    # Exactly the reference's examples, each once: same count and checksum.
    assert resumed["trained_examples"] == reference["trained_examples"] == 60 * 64
    assert resumed["trained_checksum"] == reference["trained_checksum"]
