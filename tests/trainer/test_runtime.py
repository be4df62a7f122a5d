"""Vertex / Kubeflow environment resolution and the tuning-metric format."""

from __future__ import annotations

import json

import pytest

from trainer import runtime


def test_local_defaults_and_flag_precedence():
    rt = runtime.resolve(env={})
    assert (rt.model_dir, rt.checkpoint_dir, rt.tensorboard_dir) == (
        "runs/model", "runs/model/backup", "runs/model/logs")
    assert rt.cluster is None and rt.is_chief and rt.num_workers == 0
    env = {"AIP_MODEL_DIR": "gs://b/model/", "AIP_CHECKPOINT_DIR": "gs://b/ckpt",
           "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb", "CLOUD_ML_HP_METRIC_FILE": "/tmp/x/m", "CLOUD_ML_TRIAL_ID": "7"}
    rt = runtime.resolve(env=env)
    assert (rt.model_dir, rt.checkpoint_dir, rt.tensorboard_dir, rt.hp_metric_file, rt.trial) == (
        "gs://b/model", "gs://b/ckpt", "gs://b/tb", "/tmp/x/m", "7")
    assert rt.export_dir == "gs://b/model"  # Vertex: the chief exports SavedModels there
    assert runtime.resolve(env={}).export_dir is None
    assert runtime.resolve(model_dir="local", env=env).model_dir == "local"


def test_cluster_spec_becomes_tf_config():
    spec = {"cluster": {"workerpool0": ["h0:2222"], "workerpool1": ["h1:2222", "h2:2222"]},
            "environment": "cloud", "task": {"type": "workerpool1", "index": 1}}
    env = {"CLUSTER_SPEC": json.dumps(spec)}
    rt = runtime.resolve(env=env)
    assert rt.cluster == {"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]},
                          "task": {"type": "worker", "index": 1}}
    assert json.loads(env["TF_CONFIG"]) == rt.cluster
    assert rt.num_workers == 3 and not rt.is_chief
    assert runtime.worker_dir("gs://b/m", rt) == "gs://b/m/.worker-worker-1"


def test_tf_config_wins_and_worker_zero_is_chief_without_chief():
    tf_config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    rt = runtime.resolve(env={"TF_CONFIG": json.dumps(tf_config), "CLUSTER_SPEC": "{}"})
    assert rt.is_chief and rt.num_workers == 2


def test_bad_environment_names_the_variable():
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        runtime.resolve(env={"TF_CONFIG": "{oops"})
    with pytest.raises(ValueError, match="task.type 'pool9'"):
        runtime.tf_config_from_cluster_spec({"cluster": {}, "task": {"type": "pool9"}})


def test_hp_metric_line_is_hypertune_format(tmp_path):
    rt = runtime.resolve(env={"CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hp" / "output.metrics"),
                              "CLOUD_ML_TRIAL_ID": "3"})
    runtime.report_hp_metric(rt, "val_hr_at_50", 0.25, 120)
    runtime.report_hp_metric(rt, "val_hr_at_50", 0.5, 240)
    lines = [json.loads(x) for x in (tmp_path / "hp" / "output.metrics").read_text().splitlines()]
    assert lines[-1]["val_hr_at_50"] == "0.5" and lines[-1]["global_step"] == "240"
    assert lines[-1]["trial"] == "3" and isinstance(lines[-1]["timestamp"], float)
