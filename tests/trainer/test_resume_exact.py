"""Preemption is exact: a job killed with SIGKILL mid-epoch and rerun with
the same command ends with the very weights (bit for bit) and validation
HR of the same job without a failure, for the model kinds whose training
draws random numbers (DCM's random first VA-FPI centroid, SA's Gumbel
association) and for CR."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mer_testing import REPO, kill_after_first_backup

STEPS_PER_EPOCH = 4
# Tiny: 2 epochs of 4 steps, a backup every 3 steps (mid-epoch: epoch 0
# batch 2, epoch 1 batch 1), validation every epoch, small hashed arrays.
ARGS = ["--set", "train.epochs=2", f"--set=train.steps_per_epoch={STEPS_PER_EPOCH}", "--set", "train.batch_size=16",
        "--set", "train.checkpoint_every_steps=3", "--set", "train.validation_max_records=200",
        "--set", "model.frequency_buckets=4096", "--set", "model.num_interests=3", "--verbose", "0"]
KINDS = {
    "dcm": ["model.kind=dcm"],
    "sa_gumbel": ["model.kind=sa", "model.association=gumbel"],
    "cr": ["model.kind=cr"],
}
TIMEOUT = 600


def _cmd(data: str, model_dir: str, kind: str) -> list[str]:
    sets = [arg for override in KINDS[kind] for arg in ("--set", override)]
    return [sys.executable, "-m", "trainer.task", "--data_dir", data, "--model_dir", model_dir, *ARGS, *sets]


def _env() -> dict:
    # One thread per op pool: the jobs run side by side on few cores.
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: dict) -> None:
    for kind, proc in procs.items():
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"{kind}: {out[-3000:]}"


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    """Per kind: `(reference_dir, resumed_dir, backup position, rerun output)`.
    The uninterrupted jobs and the jobs to kill run side by side, then the
    reruns."""
    base = tmp_path_factory.mktemp("resume_exact")
    reference = {kind: str(base / f"{kind}-reference") for kind in KINDS}
    resumed = {kind: str(base / f"{kind}-resumed") for kind in KINDS}
    uninterrupted = {kind: _start(_cmd(world, reference[kind], kind)) for kind in KINDS}
    killed = {kind: _start(_cmd(world, resumed[kind], kind)) for kind in KINDS}
    positions = kill_after_first_backup(killed, {kind: f"{resumed[kind]}/backup" for kind in KINDS}, TIMEOUT)
    reruns = {kind: _start(_cmd(world, resumed[kind], kind)) for kind in KINDS}
    outputs = {kind: proc.communicate(timeout=TIMEOUT)[0] for kind, proc in reruns.items()}
    for kind, proc in reruns.items():
        assert proc.returncode == 0, f"{kind} rerun: {outputs[kind][-3000:]}"
    _finish(uninterrupted)
    return {kind: (reference[kind], resumed[kind], positions[kind], outputs[kind]) for kind in KINDS}


def _weights(model_dir: str) -> dict:
    """Every tensor of the saved model checkpoint, by key."""
    import tensorflow as tf

    from trainer.model_io import CHECKPOINT

    reader = tf.train.load_checkpoint(f"{model_dir}/{CHECKPOINT}")
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def test_training_draws_are_functions_of_the_step_seed():
    """Same (seed, step) -> the same draws, call after call (what a resumed
    job relies on); the next step -> other draws. 64 users x 12 items: two
    steps picking the same first centroid for every user is ~12^-64."""
    import tensorflow as tf

    from trainer.layers import DifferentiableClustering, InterestAssociation
    from trainer.layers.step_seed import step_seed

    rng = np.random.default_rng(0)
    items = tf.constant(rng.normal(size=(64, 12, 6)), tf.float32)
    everywhere = tf.ones([64, 12], tf.bool)
    dcm = DifferentiableClustering(3, 4, iterations=1)
    association = InterestAssociation("gumbel", 1.0)
    pair = {"embeddings": tf.math.l2_normalize(tf.constant(rng.normal(size=(64, 12, 6)), tf.float32), -1),
            "mask": everywhere, "target": tf.math.l2_normalize(tf.constant(rng.normal(size=(64, 6)), tf.float32), -1)}

    def draws(step):
        seed = step_seed(7, tf.constant(step, tf.int64))
        capsules = dcm({"items": items, "valid": everywhere, "mask": everywhere, "seed": seed}, training=True)
        return capsules["capsules"].numpy(), association({**pair, "seed": seed}, training=True)["index"].numpy()

    first, again, later = draws(5), draws(5), draws(6)
    for a, b, c in zip(first, again, later):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_killed_job_resumes_to_the_same_model(runs, kind):
    reference_dir, resumed_dir, position, rerun_output = runs[kind]
    assert position is not None, "the job finished or failed before its first backup"
    assert position[1] < STEPS_PER_EPOCH - 1, f"backup at {position} is not mid-epoch"
    assert "resuming from" in rerun_output

    reference = json.loads(open(f"{reference_dir}/training.json").read())
    resumed = json.loads(open(f"{resumed_dir}/training.json").read())
    assert resumed["resumed"]["batches_done"] > 0
    assert resumed["optimizer_steps"] == reference["optimizer_steps"]
    assert resumed["history"]["val_hr_at_50"] == reference["history"]["val_hr_at_50"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    expected, actual = _weights(reference_dir), _weights(resumed_dir)
    assert sorted(actual) == sorted(expected)
    differ = [key for key in expected if not np.array_equal(actual[key], expected[key])]
    assert not differ, f"{len(differ)} of {len(expected)} saved tensors differ, e.g. {differ[:3]}"
    assert resumed["weights_sha256"] == reference["weights_sha256"]
