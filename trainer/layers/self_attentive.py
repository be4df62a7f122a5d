"""ComiRec-SA multi-head self-attentive interests."""

from trainer.layers._keras import NEG_INF, keras, register, tf


@register
class SelfAttentiveInterests(keras.layers.Layer):
    """K attention heads over the sequence, one interest per head (ComiRec-SA).

    A = softmax_L(W2 tanh(W1 H^T)); interests = A H. Padding gets no weight.

    Call args: dict with `items [B, L, d]`, `mask [B, L]` bool.
    Returns: dict `capsules [B, K, d]`, `importance [B, K]` (1/K per head),
    `mask [B, K]` (all heads valid when the history is non-empty).
    """

    def __init__(self, num_interests=7, attention_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.attention_dim = attention_dim

    def build(self, input_shape):
        self.w1 = keras.layers.Dense(self.attention_dim, activation="tanh", name="w1")
        self.w2 = keras.layers.Dense(self.num_interests, use_bias=False, name="w2")
        super().build(input_shape)

    def call(self, inputs, training=None):
        items, mask = inputs["items"], inputs["mask"]
        logits = self.w2(self.w1(items))  # [B, L, K]
        logits = tf.where(mask[..., None], logits, NEG_INF)
        weights = tf.nn.softmax(logits, axis=1) * tf.cast(mask, items.dtype)[..., None]
        capsules = tf.einsum("blk,bld->bkd", weights, items)
        has = tf.reduce_any(mask, axis=1, keepdims=True)
        kmask = tf.tile(has, [1, self.num_interests])
        importance = tf.cast(kmask, items.dtype) / float(self.num_interests)
        return {"capsules": capsules, "importance": importance, "mask": kmask}

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests,
                "attention_dim": self.attention_dim}
