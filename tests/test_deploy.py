"""The shipped Kubeflow / Vertex specs parse and run the real entry point."""

from __future__ import annotations

import yaml

from mer_testing import REPO
from trainer.task import parser


def _task_args(container: dict) -> list[str]:
    assert container["command"] == ["python", "-m", "trainer.task"]
    return container["args"]


def test_kubeflow_tfjob_runs_trainer_task_on_two_workers():
    job = yaml.safe_load((REPO / "deploy" / "kubeflow-tfjob.yaml").read_text())
    assert job["kind"] == "TFJob" and job["apiVersion"] == "kubeflow.org/v1"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow"
    args = parser().parse_args(_task_args(container))
    assert args.data_dir.startswith("gs://") and args.checkpoint_dir.startswith("gs://")


def test_vertex_customjob_pools_run_the_same_job():
    spec = yaml.safe_load((REPO / "deploy" / "vertex-customjob.yaml").read_text())
    pools = spec["workerPoolSpecs"]
    assert len(pools) == 2 and pools[0]["replicaCount"] == 1
    argv = [_task_args(p["containerSpec"]) for p in pools]
    assert argv[0] == argv[1]
    args = parser().parse_args(argv[0])
    assert args.model_dir is None  # Vertex provides AIP_MODEL_DIR
    assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://")
