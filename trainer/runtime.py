"""Where a training job runs: Vertex AI / Kubeflow conventions, local fallbacks.

Vertex AI custom training sets `AIP_MODEL_DIR`, `AIP_CHECKPOINT_DIR`,
`AIP_TENSORBOARD_LOG_DIR`, and for several replicas `CLUSTER_SPEC` (worker
pools) and usually `TF_CONFIG`; Kubeflow's TFJob sets `TF_CONFIG`.
Hyperparameter tuning reads the metric lines written to
`CLOUD_ML_HP_METRIC_FILE` (the `cloudml-hypertune` format). Everything has a
local default, so the same command runs on a laptop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

# Vertex worker pools -> TF_CONFIG task types (pool 0 is the chief).
_POOL_TYPES = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps",
               "workerpool3": "evaluator"}


@dataclasses.dataclass
class Runtime:
    """Resolved job locations and cluster role.

    Attributes:
      model_dir: final model (checkpoint + config + training summary).
      checkpoint_dir: BackupAndRestore state for preemption.
      tensorboard_dir: TensorBoard event files.
      cluster: the TF_CONFIG dict, or None for a single process.
      hp_metric_file: where the tuning metric goes.
      trial: the tuning trial id.
      export_dir: where the chief exports the TF Serving SavedModels after
        training: `$AIP_MODEL_DIR` when Vertex sets it (what the Model
        Registry imports), else None (export with `mer export`).
    """

    model_dir: str
    checkpoint_dir: str
    tensorboard_dir: str
    cluster: dict | None
    hp_metric_file: str
    trial: str
    export_dir: str | None = None

    @property
    def task_type(self) -> str:
        return (self.cluster or {}).get("task", {}).get("type", "chief")

    @property
    def task_index(self) -> int:
        return int((self.cluster or {}).get("task", {}).get("index", 0))

    @property
    def num_workers(self) -> int:
        spec = (self.cluster or {}).get("cluster", {})
        return len(spec.get("chief", [])) + len(spec.get("worker", []))

    @property
    def is_chief(self) -> bool:
        """The chief, or worker 0 when the cluster has no chief."""
        spec = (self.cluster or {}).get("cluster", {})
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and not spec.get("chief")


def tf_config_from_cluster_spec(spec: dict) -> dict:
    """Vertex `CLUSTER_SPEC` -> the `TF_CONFIG` layout."""
    cluster = {_POOL_TYPES[pool]: list(hosts) for pool, hosts in spec.get("cluster", {}).items()
               if pool in _POOL_TYPES and hosts}
    task = spec.get("task", {})
    pool = task.get("type", "workerpool0")
    if pool not in _POOL_TYPES:
        raise ValueError(f"CLUSTER_SPEC task.type {pool!r}: expected one of {sorted(_POOL_TYPES)}")
    return {"cluster": cluster, "task": {"type": _POOL_TYPES[pool], "index": int(task.get("index", 0))}}


def _json_env(env: dict, name: str) -> dict | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"environment variable {name} is not valid JSON ({err.msg} at {err.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"environment variable {name}: expected a JSON object, got {type(value).__name__}")
    return value


def resolve(model_dir: str | None = None, checkpoint_dir: str | None = None,
            tensorboard_dir: str | None = None, env: dict | None = None) -> Runtime:
    """Flags win over Vertex variables, which win over local defaults.

    Side effect: when only `CLUSTER_SPEC` is set, `TF_CONFIG` is derived and
    exported so tf.distribute's cluster resolver sees the same cluster.
    """
    env = os.environ if env is None else env
    cluster = _json_env(env, "TF_CONFIG")
    if cluster is None:
        spec = _json_env(env, "CLUSTER_SPEC")
        if spec is not None and sum(len(h) for h in spec.get("cluster", {}).values()) > 1:
            cluster = tf_config_from_cluster_spec(spec)
            env["TF_CONFIG"] = json.dumps(cluster)
    model_dir = model_dir or env.get("AIP_MODEL_DIR") or "runs/model"
    model_dir = model_dir.rstrip("/")
    return Runtime(
        model_dir=model_dir,
        checkpoint_dir=(checkpoint_dir or env.get("AIP_CHECKPOINT_DIR") or f"{model_dir}/backup").rstrip("/"),
        tensorboard_dir=(tensorboard_dir or env.get("AIP_TENSORBOARD_LOG_DIR") or f"{model_dir}/logs").rstrip("/"),
        cluster=cluster,
        hp_metric_file=env.get("CLOUD_ML_HP_METRIC_FILE", "/tmp/hypertune/output.metrics"),
        trial=env.get("CLOUD_ML_TRIAL_ID", "0"),
        export_dir=(env.get("AIP_MODEL_DIR") or "").rstrip("/") or None,
    )


def make_strategy(runtime: Runtime):
    """MultiWorkerMirroredStrategy for a cluster of >= 2 workers, else
    MirroredStrategy over local GPUs when there are several, else the default.

    Large embedding tables: MultiWorkerMirroredStrategy replicates every
    table on every worker, which is right while the tables fit one worker's
    memory (the item vocabulary of ~10^6 ids x 32 floats is 128 MB). Beyond
    that the choice is ParameterServerStrategy with a variable partitioner
    (tables sharded over parameter servers, `Model.fit` supports it), or
    TPUEmbedding on TPU; see README "Distributed training".
    """
    import tensorflow as tf

    if runtime.cluster is not None and runtime.num_workers >= 2:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_dir(path: str, runtime: Runtime) -> str:
    """Non-chief workers write to a private scratch dir (all workers must
    take part in a distributed save; only the chief's copy is kept)."""
    if runtime.is_chief:
        return path
    return f"{path}/.worker-{runtime.task_type}-{runtime.task_index}"


def report_hp_metric(runtime: Runtime, tag: str, value: float, step: int) -> None:
    """Appends one line in the `cloudml-hypertune` format (chief only)."""
    import tensorflow as tf

    if not runtime.is_chief:
        return
    directory = os.path.dirname(runtime.hp_metric_file)
    if directory:
        tf.io.gfile.makedirs(directory)
    line = json.dumps({"timestamp": time.time(), "trial": runtime.trial, tag: str(value),
                       "global_step": str(step)})
    with tf.io.gfile.GFile(runtime.hp_metric_file, "a") as handle:
        handle.write(line + "\n")
