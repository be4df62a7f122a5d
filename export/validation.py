"""Checks that an exported SavedModel is fit for TF Serving.

Why: TF Serving runs the graph in C++ with the ops it was built with. A
`py_function` needs a Python interpreter, a ScaNN op needs ScaNN's shared
library; both load fine here and fail in the server. Every op of every
graph and function must be a core TensorFlow op.
"""

from __future__ import annotations

# Core ops that still cannot run in TF Serving: they call back into Python.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def _read_saved_model(saved_model_dir: str):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(f"{saved_model_dir.rstrip('/')}/saved_model.pb", "rb") as handle:
        proto.ParseFromString(handle.read())
    return proto


def saved_model_ops(saved_model_dir: str) -> tuple[dict[str, set[str]], set[str]]:
    """`({op type: {where}}, {library function names})` over the graph and
    the function library of every MetaGraph in `saved_model.pb`."""
    proto = _read_saved_model(saved_model_dir)
    functions = {f.signature.name for meta in proto.meta_graphs for f in meta.graph_def.library.function}
    ops: dict[str, set[str]] = {}
    for meta in proto.meta_graphs:
        for node in meta.graph_def.node:
            ops.setdefault(node.op, set()).add(f"graph node {node.name!r}")
        for function in meta.graph_def.library.function:
            for node in function.node_def:
                ops.setdefault(node.op, set()).add(f"function {function.signature.name!r}")
    return ops, functions


def is_core_op(op: str) -> bool:
    """A registered core TensorFlow op (`tf.raw_ops`; ops of libraries loaded
    with `tf.load_op_library`, such as ScaNN's, are not there) that does not
    call back into Python. Function-call nodes name library functions, which
    are checked on their own."""
    import tensorflow as tf

    return op not in PYTHON_OPS and hasattr(tf.raw_ops, op)


def validate_ops(saved_model_dir: str) -> int:
    """Fails unless every op is a core op.

    Returns:
      The number of distinct op types checked.

    Raises:
      ValueError: naming each offending op and where it occurs.
    """
    ops, functions = saved_model_ops(saved_model_dir)
    bad = {op: where for op, where in ops.items() if op not in functions and not is_core_op(op)}
    if bad:
        detail = "; ".join(f"{op} (in {', '.join(sorted(where)[:3])})" for op, where in sorted(bad.items()))
        raise ValueError(f"{saved_model_dir}: not servable by TF Serving, non-core ops: {detail}. "
                         f"Only core TensorFlow ops are allowed (no py_function, no ScaNN ops).")
    return len(ops)

