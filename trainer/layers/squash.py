"""Capsule squash non-linearity (paper eq. 3)."""

from trainer.layers._keras import tf


def squash(v: tf.Tensor, axis: int = -1, epsilon: float = 1e-9) -> tf.Tensor:
    """squash(v) = |v|^2 / (1 + |v|^2) * v / |v|.

    Why: the norm encodes how strongly a cluster exists (in [0, 1)), the
    direction is the interest. `epsilon` keeps the gradient finite at 0.

    Args:
      v: `[..., d]` vectors.
    Returns:
      Same shape, norms in [0, 1).
    """
    sq = tf.reduce_sum(tf.square(v), axis=axis, keepdims=True)
    return sq / (1.0 + sq) * v / tf.sqrt(sq + epsilon)
