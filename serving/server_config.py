"""The model server's configuration files, read the way `tensorflow_model_server`
reads them: `--model_config_file` (a `ModelServerConfig` text proto),
`--batching_parameters_file` (`BatchingParameters`) and
`--monitoring_config_file` (`MonitoringConfig`); plus the version policy
that decides which on-disk versions a model serves.

Why a module of its own: the same files are written by `export/` and read
by the real TF Serving in production, so parsing and validation live in one
place and fail with the file name and the offending model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from common import tf_serving_protos

log = logging.getLogger(__name__)

PLATFORM = "tensorflow"


def _read_text(path: str) -> str:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with tf.io.gfile.GFile(path, "r") as handle:
        return handle.read()


def _resolve(base_path: str, config_dir: str) -> str:
    """Relative base paths are relative to the config file's directory."""
    if "://" in base_path or os.path.isabs(base_path):
        return base_path
    return os.path.normpath(os.path.join(config_dir, base_path))


def validate_model_server_config(config, source: str = "<config>"):
    """Checks the parts of a `ModelServerConfig` this server honours.

    Raises:
      ValueError: no `model_config_list`, a model without name or base_path,
        a duplicate name, or a platform other than "tensorflow".
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{source}: needs a model_config_list (custom_model_config is not supported)")
    seen = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ValueError(f"{source}: a model config has no name")
        if model.name in seen:
            raise ValueError(f"{source}: model name {model.name!r} appears twice")
        seen.add(model.name)
        if not model.base_path:
            raise ValueError(f"{source}: model {model.name!r} has no base_path")
        if model.model_platform not in ("", PLATFORM):
            raise ValueError(f"{source}: model {model.name!r} has model_platform {model.model_platform!r}; "
                             f"only {PLATFORM!r} is served")
    if not seen:
        raise ValueError(f"{source}: model_config_list has no models")
    return config


def read_model_server_config(path: str):
    """Reads `models.config`; relative `base_path`s are resolved against its directory.

    Args:
      path: a `ModelServerConfig` text proto file.

    Returns:
      The validated `ModelServerConfig`, with absolute base paths.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: a text-proto syntax error or an invalid model entry (see
        `validate_model_server_config`), naming `path`.
    """
    try:
        config = text_format.Parse(_read_text(path), model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a valid ModelServerConfig text proto: {err}") from err
    config_dir = os.path.dirname(os.path.abspath(path)) if "://" not in path else path.rsplit("/", 1)[0]
    for model in config.model_config_list.config:
        model.base_path = _resolve(model.base_path, config_dir)
    return validate_model_server_config(config, path)


def single_model_config(model_name: str, model_base_path: str):
    """The config of `--model_name`/`--model_base_path` (latest version only)."""
    if not model_name or not model_base_path:
        raise ValueError(f"model_name ({model_name!r}) and model_base_path ({model_base_path!r}) "
                         "are both needed")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=model_name, model_platform=PLATFORM,
                                        base_path=_resolve(model_base_path, os.getcwd()))
    return config


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The `BatchingParameters` this server honours, with TF Serving's defaults.

    Attributes:
      max_batch_size: most rows (sum of requests' dim 0) in one batch.
      batch_timeout_micros: how long the first request of a batch waits for others.
      num_batch_threads: batches run concurrently per (model, version, signature).
      max_enqueued_batches: queue bound, in batches of `max_batch_size` rows;
        past it requests fail with UNAVAILABLE (as TF Serving's full queue).
      allowed_batch_sizes: batch sizes a batch is padded up to (empty = any);
        the last must equal `max_batch_size`.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching {name} = {getattr(self, name)}; must be >= 1")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batching batch_timeout_micros = {self.batch_timeout_micros}; must be >= 0")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes {list(sizes)} must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError("Last entry in allowed_batch_sizes must match max_batch_size; "
                                 f"last entry was {sizes[-1]}; expected {self.max_batch_size}")

    @classmethod
    def from_proto(cls, params) -> BatchingOptions:
        """From a `BatchingParameters` message; unset fields keep the defaults.

        `pad_variable_length_inputs` and `thread_pool_name` are read but not
        used: requests of different shapes run in separate batches (see
        `serving.batch_scheduler`).
        """
        if params.pad_variable_length_inputs:
            log.info("batching: pad_variable_length_inputs is not implemented here; requests whose inputs "
                     "differ beyond dim 0 run in separate batches (same results, fewer merges)")
        kwargs = {name: getattr(params, name).value
                  for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                               "max_enqueued_batches") if params.HasField(name)}
        return cls(**kwargs, allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes))


def read_batching_parameters(path: str):
    """Reads a `BatchingParameters` text proto (raises ValueError naming `path`)."""
    return tf_serving_protos.parse_text(_read_text(path), "BatchingParameters", path)


def read_monitoring_config(path: str):
    """Reads a `MonitoringConfig` text proto (raises ValueError naming `path`)."""
    return tf_serving_protos.parse_text(_read_text(path), "MonitoringConfig", path)


def aspired_versions(policy, on_disk: Iterable[int]) -> set[int]:
    """The versions a model should serve, TF Serving's `ServableVersionPolicy`.

    Args:
      policy: `FileSystemStoragePathSourceConfig.ServableVersionPolicy`;
        unset = `latest { num_versions: 1 }`.
      on_disk: the complete versions found under the model's base path.

    Returns:
      `latest`: the `num_versions` highest (0 counts as 1); `all`: every one;
      `specific`: the listed versions that are on disk.
    """
    versions = sorted(set(on_disk))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(versions) & set(policy.specific.versions)
    count = max(1, policy.latest.num_versions) if choice == "latest" else 1
    return set(versions[-count:])
