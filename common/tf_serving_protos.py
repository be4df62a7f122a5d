"""TF Serving's `BatchingParameters` and `MonitoringConfig` messages.

Why here: `tensorflow-serving-api` ships the request and `ModelServerConfig`
protos but not these two, which `tensorflow_model_server` reads from
`--batching_parameters_file` and `--monitoring_config_file`. Both the export
(which writes them) and the model server (which reads them) need them, so
they are declared once, with TF Serving's package, names and field numbers
(`tensorflow_serving/servables/tensorflow/session_bundle_config.proto`,
`tensorflow_serving/config/monitoring_config.proto`), in a private
descriptor pool: a text proto valid here is valid for the real server.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_T = descriptor_pb2.FieldDescriptorProto


def _field(message, name: str, number: int, kind: int, type_name: str = "", repeated: bool = False):
    field = message.field.add(name=name, number=number, type=kind,
                              label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name


@functools.lru_cache(maxsize=None)
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    params = batching.message_type.add(name="BatchingParameters")
    for name, number in (("max_batch_size", 1), ("batch_timeout_micros", 2), ("max_enqueued_batches", 3),
                         ("num_batch_threads", 4)):
        _field(params, name, number, _T.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    _field(params, "thread_pool_name", 5, _T.TYPE_MESSAGE, ".google.protobuf.StringValue")
    _field(params, "allowed_batch_sizes", 6, _T.TYPE_INT64, repeated=True)
    _field(params, "pad_variable_length_inputs", 7, _T.TYPE_BOOL)
    pool.Add(batching)
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    _field(prometheus, "enable", 1, _T.TYPE_BOOL)
    _field(prometheus, "path", 2, _T.TYPE_STRING)
    config = monitoring.message_type.add(name="MonitoringConfig")
    _field(config, "prometheus_config", 1, _T.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)
    return pool


def message_class(name: str):
    """`BatchingParameters`, `MonitoringConfig` or `PrometheusConfig`."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"tensorflow.serving.{name}"))


def BatchingParameters(**kwargs):  # noqa: N802  (a message constructor)
    return message_class("BatchingParameters")(**kwargs)


def MonitoringConfig(**kwargs):  # noqa: N802
    return message_class("MonitoringConfig")(**kwargs)


def parse_text(text: str, name: str, source: str = "<text>"):
    """Parses a text proto of message `name`.

    Raises:
      ValueError: naming `source` and the parser's line/column message.
    """
    try:
        return text_format.Parse(text, message_class(name)())
    except text_format.ParseError as err:
        raise ValueError(f"{source}: not a valid {name} text proto: {err}") from err
