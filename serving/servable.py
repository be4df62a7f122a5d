"""One loaded model version, served the way TF Serving serves a SavedModel.

TF Serving loads `<base_path>/<version>/` with the TF1 session loader (the
"serve" MetaGraph in its own graph and session) and runs a signature by
feeding its input tensor names and fetching its output tensor names. Doing
exactly that here, rather than `tf.saved_model.load`, means a model that
works on this server works on the real one (no eager-only behaviour, the
same init ops and assets).

Request checks follow `predict_util.cc` (signature lookup, input set,
`output_filter`), with two more that TF Serving leaves to the session:
dtype and static shape against the SignatureDef, so a bad request gets
INVALID_ARGUMENT naming the input instead of a kernel error.
"""

from __future__ import annotations

import logging
import math
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2

from serving.batch_scheduler import BatchScheduler, BatchStats, Feeds
from serving.server_config import BatchingOptions
from serving.serving_error import ServingError, code_from_number
from serving.tensors import to_proto

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords
MAX_INPUT_TENSOR_BYTES = 1 << 30  # a tiny proto must not expand into an OOM


def _dtype_name(enum: int) -> str:
    return types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else f"DataType({enum})"


def _joined(names) -> str:
    return "{" + ",".join(sorted(names)) + "}"


class Servable:
    """A SavedModel version loaded into its own TF1 graph and session.

    Build with `Servable.load`; thread-safe (`Session.run` is).

    Args:
      name: the model name.
      version: the integer version.
      path: the version directory.
      session: a `tf.compat.v1.Session` holding the loaded graph.
      meta_graph_def: the loaded "serve" `MetaGraphDef`.
      batching: batch concurrent Predict calls with these options; None = never.
    """

    def __init__(self, name: str, version: int, path: str, session, meta_graph_def,
                 batching: BatchingOptions | None = None):
        self.name = name
        self.version = version
        self.path = path
        self._session = session
        self._signatures = dict(meta_graph_def.signature_def)
        self._batching = batching
        self._schedulers: dict[str, BatchScheduler] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, version: int, path: str, batching: BatchingOptions | None = None,
             session_config=None, warm_up: bool = True) -> Servable:
        """Loads a version and replays its warmup requests.

        Args:
          name: the model name.
          version: the integer version.
          path: `<base_path>/<version>` (must hold saved_model.pb).
          batching: see the class.
          session_config: a `tf.compat.v1.ConfigProto` (thread pools), or None.
          warm_up: replay `assets.extra/tf_serving_warmup_requests` if present.

        Raises:
          ServingError: the SavedModel does not load, or a warmup record
            fails (its status, e.g. INVALID_ARGUMENT); the session is closed.
        """
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        try:
            with graph.as_default():
                meta_graph_def = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
        except Exception as err:
            session.close()
            raise _load_error(name, version, path, err) from err
        servable = cls(name, version, path, session, meta_graph_def, batching)
        if warm_up:
            try:
                servable.warm_up()
            except BaseException:
                servable.close()
                raise
        return servable

    # -- metadata ---------------------------------------------------------

    def signature_def_map(self):
        """All SignatureDefs, as `GetModelMetadata`'s "signature_def" field packs them."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self._signatures.items():
            result.signature_def[key].CopyFrom(signature)
        return result

    def batch_stats(self) -> BatchStats:
        with self._lock:
            schedulers = list(self._schedulers.values())
        total = BatchStats()
        for scheduler in schedulers:
            total = total.add(scheduler.stats)
        return total

    # -- predict ----------------------------------------------------------

    def predict(self, request, batch: bool = True):
        """Answers a `PredictRequest` (TF Serving's `RunPredict`).

        Args:
          request: the `PredictRequest`; `model_spec.signature_name` defaults
            to "serving_default".
          batch: go through the batch scheduler when batching is on.

        Returns:
          A `PredictResponse` with `model_spec` {name, version, signature_name}
          and one TensorProto per requested output.

        Raises:
          ServingError: FAILED_PRECONDITION unknown signature;
            INVALID_ARGUMENT missing/extra/mistyped/misshaped/unparsable input
            or unknown/duplicate `output_filter` name; the session's code on a
            run failure.
        """
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = self._signature(signature_name)
        feeds = self._feeds(signature_name, signature, request.inputs)
        outputs = self._output_aliases(signature_name, signature, request.output_filter)
        if batch and self._batching is not None:
            values = self._scheduler(signature_name).run(feeds, outputs)
        else:
            values = self._run(signature_name, feeds, outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = signature_name
        for alias in outputs:
            response.outputs[alias].CopyFrom(to_proto(values[alias]))
        return response

    def _where(self, signature_name: str) -> str:
        return f"model {self.name!r} version {self.version} signature {signature_name!r}"

    def _signature(self, signature_name: str):
        signature = self._signatures.get(signature_name)
        if signature is None:
            served = sorted(k for k in self._signatures if not k.startswith("__"))
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found. Model {self.name!r} '
                               f"version {self.version} has signatures {served}")
        return signature

    def _feeds(self, signature_name: str, signature, inputs) -> Feeds:
        """Checks the request's inputs against the signature and converts them."""
        sent, expected = set(inputs), set(signature.inputs)
        extra, missing = sent - expected, expected - sent - set(signature.defaults)
        if extra or missing:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input size does not match signature: {len(sent)}!={len(expected)} "
                               f"len({_joined(sent)}) != len({_joined(expected)}). "
                               f"Sent extra: {_joined(extra)}. Missing but required: {_joined(missing)}. "
                               f"({self._where(signature_name)})")
        feeds = {}
        for alias, info in signature.inputs.items():
            proto = inputs[alias] if alias in inputs else signature.defaults[alias]
            feeds[alias] = self._to_array(signature_name, alias, info, proto)
        return feeds

    def _to_array(self, signature_name: str, alias: str, info, proto) -> np.ndarray:
        """One input TensorProto -> ndarray, checked for dtype, size and shape."""
        where = f"input {alias!r} of {self._where(signature_name)}"
        if proto.dtype != info.dtype:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{where} has dtype {_dtype_name(proto.dtype)}; the signature expects "
                               f"{_dtype_name(info.dtype)}")
        _check_proto_size(where, proto)
        try:
            value = tf.make_ndarray(proto)
        except Exception as err:  # noqa: BLE001  (any malformed proto is the client's error)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensor parsing error: {alias} ({where}: {err})")
        _check_shape(where, value.shape, info.tensor_shape)
        return value

    def _output_aliases(self, signature_name: str, signature, output_filter) -> tuple[str, ...]:
        """The requested outputs (`output_filter`, default all), in order."""
        if not output_filter:
            return tuple(signature.outputs)
        seen = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {alias} Outputs expected "
                                   f"to be in the set {_joined(signature.outputs)}. "
                                   f"({self._where(signature_name)})")
            if alias in seen:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return tuple(seen)

    def _scheduler(self, signature_name: str) -> BatchScheduler:
        with self._lock:
            scheduler = self._schedulers.get(signature_name)
            if scheduler is None:
                scheduler = BatchScheduler(lambda feeds, outputs: self._run(signature_name, feeds, outputs),
                                           self._batching, f"{self.name}/{self.version}/{signature_name}")
                self._schedulers[signature_name] = scheduler
            return scheduler

    def _run(self, signature_name: str, feeds: Feeds, outputs: tuple[str, ...]) -> Feeds:
        """One `session.run` of a signature: feed input names, fetch output names."""
        signature = self._signatures[signature_name]
        feed_dict = {signature.inputs[alias].name: value for alias, value in feeds.items()}
        fetches = [signature.outputs[alias].name for alias in outputs]
        try:
            values = self._session.run(fetches, feed_dict)
        except tf.errors.OpError as err:
            raise ServingError(code_from_number(err.error_code),
                               f"{self._where(signature_name)}: {err.message.splitlines()[0]}") from err
        return dict(zip(outputs, values))

    # -- warmup -----------------------------------------------------------

    def warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (TF Serving's warmup).

        Returns:
          The number of records replayed (0 when there is no warmup file).

        Raises:
          ServingError: an unparsable or non-Predict record, more than 1000
            records, a corrupt TFRecord file (DATA_LOSS), or a record whose
            Predict fails (its code), naming the record.
        """
        path = f"{self.path.rstrip('/')}/{WARMUP_FILE}"
        if not tf.io.gfile.exists(path):
            log.info("No warmup data file found at %s", path)
            return 0
        count = 0
        try:
            for record in tf.data.TFRecordDataset(path):
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "Number of warmup records exceeds the maximum "
                                       f"({MAX_WARMUP_RECORDS}) at {path}")
                self._warm_up_record(path, count, record.numpy())
        except tf.errors.OpError as err:
            raise ServingError(grpc.StatusCode.DATA_LOSS,
                               f"{err.message.splitlines()[0]}. Please verify your warmup data is in "
                               f"TFRecord format ({path})") from err
        log.info("Model %s version %d: replayed %d warmup records from %s", self.name, self.version, count,
                 path)
        return count

    def _warm_up_record(self, path: str, number: int, raw: bytes) -> None:
        try:
            record = prediction_log_pb2.PredictionLog.FromString(raw)
        except Exception as err:  # noqa: BLE001  (protobuf's DecodeError)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Failed to parse warmup record {number} from {path}") from err
        kind = record.WhichOneof("log_type")
        if kind != "predict_log":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported log_type for warmup: {kind} (record {number} of {path}); "
                               "this server replays predict_log records only")
        try:
            self.predict(record.predict_log.request, batch=False)
        except ServingError as err:
            raise ServingError(err.code, f"warmup record {number} of {path} failed: {err.message}") from err

    def close(self) -> None:
        """Stops the batch schedulers (running what they hold), then closes the session."""
        with self._lock:
            schedulers, self._schedulers = list(self._schedulers.values()), {}
        for scheduler in schedulers:
            scheduler.close()
        self._session.close()


def _load_error(name: str, version: int, path: str, err: Exception) -> ServingError:
    code = code_from_number(err.error_code) if isinstance(err, tf.errors.OpError) else grpc.StatusCode.UNKNOWN
    message = err.message if isinstance(err, tf.errors.OpError) else str(err)
    return ServingError(code, f"model {name!r} version {version} failed to load from {path}: "
                              f"{message.splitlines()[0] if message else type(err).__name__}")


def _check_proto_size(where: str, proto) -> None:
    """Rejects negative dims and protos that would expand past MAX_INPUT_TENSOR_BYTES."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"tensor parsing error: {where} has shape {dims}")
    itemsize = np.dtype(tf.as_dtype(proto.dtype).as_numpy_dtype).itemsize  # strings: 8-byte object pointers
    if math.prod(dims) * itemsize > MAX_INPUT_TENSOR_BYTES:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"tensor parsing error: {where} has shape {dims}, "
                           f"over {MAX_INPUT_TENSOR_BYTES} bytes")


def _check_shape(where: str, shape: tuple[int, ...], expected) -> None:
    """Rank and static dims (-1 = any) against the signature's TensorShapeProto."""
    if expected.unknown_rank:
        return
    dims = [d.size for d in expected.dim]
    if len(shape) != len(dims) or any(want not in (-1, got) for want, got in zip(dims, shape)):
        allowed = "[" + ", ".join("None" if d == -1 else str(d) for d in dims) + "]"
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{where} has shape {list(shape)}; the signature expects {allowed}")
