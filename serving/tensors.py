"""NumPy <-> `TensorProto` for the few dtypes the towers use, without
TensorFlow (the model server's and the retrieval service's hot path:
`tf.make_tensor_proto` costs more than the conversion itself)."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_NUMERIC = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_INT64: np.int64, types_pb2.DT_INT32: np.int32,
            types_pb2.DT_BOOL: np.bool_, types_pb2.DT_DOUBLE: np.float64}
_VALUES = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_INT32: "int_val",
           types_pb2.DT_BOOL: "bool_val", types_pb2.DT_DOUBLE: "double_val"}


def _shape(dims) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in dims])


def string_tensor(rows: list[list[str]]) -> tensor_pb2.TensorProto:
    """A `[B, L]` DT_STRING tensor from equal-length rows of str."""
    width = len(rows[0]) if rows else 0
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=_shape([len(rows), width]),
                                  string_val=[v.encode("utf-8") for row in rows for v in row])


def int64_tensor(rows: list[list[int]]) -> tensor_pb2.TensorProto:
    """A `[B, L]` DT_INT64 tensor (packed)."""
    values = np.asarray(rows, np.int64)
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, tensor_shape=_shape(values.shape),
                                  tensor_content=values.tobytes())


_PACKED = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.float64): types_pb2.DT_DOUBLE,
           np.dtype(np.int32): types_pb2.DT_INT32, np.dtype(np.int64): types_pb2.DT_INT64}


def to_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """`tf.make_tensor_proto(value)`, the same message, without TensorFlow's
    Python for the arrays it packs (float32/64, int32/64, rank >= 1); other
    values through it."""
    enum = _PACKED.get(value.dtype) if isinstance(value, np.ndarray) and value.ndim else None
    if enum is None:
        import tensorflow as tf

        return tf.make_tensor_proto(value)
    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=_shape(value.shape),
                                  tensor_content=value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A numeric `TensorProto` (packed or per-value fields) as an array.

    Raises:
      ValueError: a dtype this module does not read.
    """
    if proto.dtype not in _NUMERIC:
        raise ValueError(f"tensor dtype {types_pb2.DataType.Name(proto.dtype)} not supported here")
    dtype = _NUMERIC[proto.dtype]
    shape = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    values = np.asarray(getattr(proto, _VALUES[proto.dtype]), dtype=dtype)
    size = int(np.prod(shape)) if shape else 1
    if values.size == 1 and size != 1:  # TF's splat encoding of a constant tensor
        values = np.full(size, values[0], dtype)
    return values.reshape(shape)
