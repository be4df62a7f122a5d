"""MultiWorkerMirroredStrategy with two worker processes on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import free_ports
from mer_testing import REPO, kill_after_first_backup

pytestmark = pytest.mark.slow


ARGS = ["--set", "train.epochs=2", "--set", "train.steps_per_epoch=5", "--set", "train.batch_size=64",
        "--set", "train.validation_max_records=200", "--set", "train.checkpoint_every_steps=3", "--verbose", "0"]
TIMEOUT = 600


def _pair(world: str, model_dir) -> dict:
    """Both workers of one job (TF_CONFIG on loopback), one TF thread pool
    each: the reference and the job to kill run side by side."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = {}
    for index in range(2):
        env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                   TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "trainer.task", "--data_dir", world, "--model_dir", str(model_dir), *ARGS]
        procs[index] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
    return procs


def _outputs(procs: dict) -> list[str]:
    outputs = [proc.communicate(timeout=TIMEOUT)[0] for proc in procs.values()]
    for proc, out in zip(procs.values(), outputs):
        assert proc.returncode == 0, out[-3000:]
    return outputs


@pytest.fixture(scope="module")
def jobs(world, tmp_path_factory):
    """An uninterrupted two-worker job, and the same job with both workers
    SIGKILLed after its first mid-epoch backup, then rerun with the same
    command (a preempted Vertex / Kubeflow job restarts every worker)."""
    base = tmp_path_factory.mktemp("distributed")
    reference = _pair(world, base / "reference")
    killed = _pair(world, base / "resumed")
    positions = kill_after_first_backup(killed, {i: str(base / "resumed" / "backup") for i in killed}, TIMEOUT)
    rerun = _outputs(_pair(world, base / "resumed"))
    return {"reference": (base / "reference", _outputs(reference)), "resumed": (base / "resumed", rerun),
            "positions": positions}


def _digests(outputs: list[str]) -> list[str]:
    return [re.search(r"weights sha256 ([0-9a-f]{64})", out).group(1) for out in outputs]


def test_two_workers_finish_with_identical_weights(jobs):
    model_dir, outputs = jobs["reference"]
    digests = _digests(outputs)
    assert digests[0] == digests[1]
    summary = json.loads((model_dir / "training.json").read_text())
    assert summary["strategy"] == "MultiWorkerMirroredStrategy" and summary["workers"] == 2
    # The global batch of 64 is split over the workers; 2 epochs x 5 steps.
    assert summary["optimizer_steps"] == 10
    # EarlyStopping restores the best epoch's weights, audit counters included.
    assert summary["trained_examples"] == (summary["best_epoch"] + 1) * 5 * 64
    assert summary["weights_sha256"] == digests[0]
    leftovers = [p for p in model_dir.rglob(".worker-*")]
    assert not leftovers, leftovers


def test_killed_two_worker_job_resumes_to_the_same_weights(jobs):
    """Both workers killed mid-epoch and restarted: the same final weights
    (bit for bit), validation HR and example counts as the job that was
    never interrupted."""
    positions = jobs["positions"]
    assert all(p is not None for p in positions.values()), f"a worker ended before the first backup: {positions}"
    assert all(p[1] < 4 for p in positions.values()), f"backup {positions} is not mid-epoch"
    (reference_dir, reference_out), (resumed_dir, resumed_out) = jobs["reference"], jobs["resumed"]
    assert all("resuming from" in out for out in resumed_out), resumed_out[0][-2000:]
    reference = json.loads((reference_dir / "training.json").read_text())
    resumed = json.loads((resumed_dir / "training.json").read_text())
    assert resumed["resumed"]["batches_done"] > 0
    assert _digests(resumed_out)[0] == _digests(resumed_out)[1] == _digests(reference_out)[0]
    for key in ("weights_sha256", "optimizer_steps", "trained_examples", "best_epoch", "best_validation"):
        assert resumed[key] == reference[key], key
