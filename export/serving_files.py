"""The TF Serving files next to the SavedModels: `models.config`,
`batching_parameters.txt`, `monitoring.config` and each version's warmup
requests (`assets.extra/tf_serving_warmup_requests`).

All are text protos of TF Serving's own messages (or a TFRecord of
`PredictionLog`), so the real `tensorflow_model_server` reads them as they
are: `--model_config_file`, `--batching_parameters_file`,
`--monitoring_config_file`.
"""

from __future__ import annotations

import numpy as np

from common import contract
from common.tf_serving_protos import BatchingParameters, MonitoringConfig

MAX_WARMUP_RECORDS = 1000  # TF Serving refuses more
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def models_config(models: dict[str, str], labels: dict[str, int] | None = None, num_versions: int = 2,
                  present: dict[str, list[int]] | None = None):
    """`ModelServerConfig` serving the latest `num_versions` versions of each model.

    Two by default: the retrieval service pins each request to the model
    version its ScaNN index was built from, so the previous version must
    stay loaded until the service has switched to the new index (a hot swap
    without failed requests).

    Args:
      models: `{name: base_path}` (absolute, or as the server will see it).
      present: `{name: [versions on disk]}`; labels skip models without
        the labelled version.
      labels: `{label: version}` (e.g. `stable`), given to each model that
        has that version (TF Serving refuses a label of an unloaded version).
    """
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in sorted(models.items()):
        model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = num_versions
        for label, version in sorted((labels or {}).items()):
            if present is None or int(version) in present.get(name, []):
                model.version_labels[label] = int(version)
    return config


def batching_parameters(max_batch_size: int = 64, timeout_micros: int = 0, threads: int = 2):
    """Server-side batching: concurrent requests are batched up to
    `max_batch_size` rows, waiting at most `timeout_micros`.

    Timeout 0 (TF Serving's advice for online serving, to be tuned upwards
    under load): a batch runs as soon as one of `threads` is free, so a lone
    request waits for nothing and requests that arrive while every thread is
    busy are batched together.

    `pad_variable_length_inputs` stays off: TF Serving pads a shorter
    tensor with copies of its first element, which would put real item ids
    into a history's "" padding (and change its embeddings); requests of
    different widths are batched separately instead."""
    params = BatchingParameters()
    params.max_batch_size.value = max_batch_size
    params.batch_timeout_micros.value = timeout_micros
    params.num_batch_threads.value = threads
    params.max_enqueued_batches.value = 1000
    params.pad_variable_length_inputs = False
    return params


def monitoring_config(path: str = PROMETHEUS_PATH):
    config = MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = path
    return config


def warmup_requests(model_name: str, inputs: dict[str, np.ndarray], batch_sizes=(1, 4, 16),
                    limit: int = 64) -> list:
    """`PredictionLog`s of real inputs (rows of `inputs`), in batches of
    rotating size, at most `limit` (<= 1000) records."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    rows = len(next(iter(inputs.values())))
    logs, start, i = [], 0, 0
    while start < rows and len(logs) < min(limit, MAX_WARMUP_RECORDS):
        size = batch_sizes[i % len(batch_sizes)]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = contract.SIGNATURE
        for key, values in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values[start:start + size]))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
        start, i = start + size, i + 1
    return logs


def write_warmup(version_dir: str, logs: list) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` under `version_dir`."""
    import tensorflow as tf

    path = contract.join(version_dir, contract.WARMUP_FILE)
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(path: str) -> list:
    """The `PredictionLog`s of a warmup file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def write_text_proto(path: str, message) -> None:
    """Writes `message` as a text proto, atomically (temp file + rename)."""
    import tensorflow as tf
    from google.protobuf import text_format

    with tf.io.gfile.GFile(f"{path}.tmp", "w") as handle:
        handle.write(text_format.MessageToString(message))
    tf.io.gfile.rename(f"{path}.tmp", path, overwrite=True)
