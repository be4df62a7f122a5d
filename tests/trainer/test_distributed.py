"""MultiWorkerMirroredStrategy with two worker processes on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from mer_testing import REPO

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_finish_with_identical_weights(world, tmp_path):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                                     "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "trainer.task", "--data_dir", world, "--model_dir", str(tmp_path / "model"),
               "--set", "train.epochs=2", "--set", "train.steps_per_epoch=5", "--set", "train.batch_size=64",
               "--set", "train.validation_max_records=200", "--set", "train.checkpoint_every_steps=3",
               "--verbose", "0"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    digests = [re.search(r"weights sha256 ([0-9a-f]{64})", out).group(1) for out in outputs]
    assert digests[0] == digests[1]
    summary = json.loads((tmp_path / "model" / "training.json").read_text())
    assert summary["strategy"] == "MultiWorkerMirroredStrategy" and summary["workers"] == 2
    # The global batch of 64 is split over the workers; 2 epochs x 5 steps.
    assert summary["optimizer_steps"] == 10
    # EarlyStopping restores the best epoch's weights, audit counters included.
    assert summary["trained_examples"] == (summary["best_epoch"] + 1) * 5 * 64
    assert summary["weights_sha256"] == digests[0]
    leftovers = [p for p in (tmp_path / "model").rglob(".worker-*")]
    assert not leftovers, leftovers
