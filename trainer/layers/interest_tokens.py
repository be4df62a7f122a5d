"""Interest tokens: MVKE virtual kernels without gating."""

from trainer.layers._keras import NEG_INF, keras, register, tf


@register
class InterestTokens(keras.layers.Layer):
    """K learnable query tokens attend over the sequence (single-head decoder).

    interests_k = softmax_L(q_k^T W_k h / sqrt(d)) W_v h.

    Call args: dict with `items [B, L, d]`, `mask [B, L]` bool.
    Returns: dict `capsules [B, K, d]`, `importance [B, K]`, `mask [B, K]`.
    """

    def __init__(self, num_interests=7, dim=32, **kwargs):
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.dim = dim

    def build(self, input_shape):
        self.tokens = self.add_weight(
            "tokens", shape=(self.num_interests, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.key = keras.layers.Dense(self.dim, use_bias=False, name="key")
        self.value = keras.layers.Dense(self.dim, use_bias=False, name="value")
        super().build(input_shape)

    def call(self, inputs, training=None):
        items, mask = inputs["items"], inputs["mask"]
        keys, values = self.key(items), self.value(items)
        logits = tf.einsum("kd,bld->blk", self.tokens, keys) / tf.sqrt(float(self.dim))
        logits = tf.where(mask[..., None], logits, NEG_INF)
        weights = tf.nn.softmax(logits, axis=1) * tf.cast(mask, items.dtype)[..., None]
        capsules = tf.einsum("blk,bld->bkd", weights, values)
        kmask = tf.tile(tf.reduce_any(mask, axis=1, keepdims=True), [1, self.num_interests])
        importance = tf.cast(kmask, items.dtype) / float(self.num_interests)
        return {"capsules": capsules, "importance": importance, "mask": kmask}

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests, "dim": self.dim}
