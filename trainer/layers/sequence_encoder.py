"""A Transformer over the engagement sequence: the user's history as one field."""

from trainer.layers._keras import keras, register, tf
from trainer.layers.transformer_encoder import TransformerEncoder


@register
class SequenceEncoder(keras.layers.Layer):
    """Summarises the valid history items with self-attention.

    The items get a learned embedding of their recency (0 = the most recent
    valid item, clipped at `max_length - 1`), pass `num_layers` post-norm
    Transformer blocks that attend over the valid items only, and the output
    at the most recent valid item is the summary (with self-attention over
    the whole history, the most recent position sees every item, as the last
    token of a causal encoder does). A user with no valid item gets zeros.

    Args:
      max_length: recency positions embedded (the history length).
      num_layers, num_heads, ff_dim: the Transformer blocks.

    Call args: `items [B, L, d]`, `valid [B, L]` bool (padding and invalid
    items are False; items are ordered oldest to newest).
    Returns: `[B, d]`.
    """

    def __init__(self, max_length=50, num_layers=1, num_heads=2, ff_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.max_length = max_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.ff_dim = ff_dim

    def build(self, input_shape):
        dim = int(input_shape["items"][-1])
        self.recency = keras.layers.Embedding(self.max_length, dim, name="recency")
        self.encoder = TransformerEncoder(self.num_layers, self.num_heads, self.ff_dim, name="encoder")
        super().build(input_shape)

    def call(self, inputs):
        items, valid = inputs["items"], tf.cast(inputs["valid"], tf.bool)
        valid_i = tf.cast(valid, tf.int32)
        # Recency of each valid item: how many valid items come after it.
        after = tf.reduce_sum(valid_i, axis=1, keepdims=True) - tf.cumsum(valid_i, axis=1)
        x = items + self.recency(tf.minimum(after, self.max_length - 1))
        attend = tf.logical_and(valid[:, :, None], valid[:, None, :])
        x = self.encoder(x, attention_mask=attend)
        length = tf.shape(valid)[1]
        positions = tf.where(valid, tf.range(length)[None, :], -1)
        last = tf.reduce_max(positions, axis=1)
        summary = tf.gather(x, tf.maximum(last, 0), batch_dims=1)
        return summary * tf.cast(last >= 0, summary.dtype)[:, None]

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim}
