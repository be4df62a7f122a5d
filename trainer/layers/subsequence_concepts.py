"""PinnerFormer-subsequence (PFS): history split by offline k-means concepts."""

from trainer.layers._keras import keras, register, tf


@register
class SubsequenceConcepts(keras.layers.Layer):
    """One embedding per concept subsequence, for the K most engaged concepts.

    Concepts are fixed offline (k-means over item vectors, `trainer/kmeans.py`)
    and enter as a per-item concept table (a non-trainable weight), so the
    assignment is not trained end to end, as in the paper's PFS. The paper
    encodes each subsequence with PinnerFormer; here a subsequence is
    mean-pooled through the shared item summariser (documented
    simplification: the same encoder the other variants use).

    Call args: dict `items [B, L, d]`, `item_index [B, L]` int (row in the
    item table), `mask [B, L]` bool.
    Returns: dict `capsules [B, K, d]`, `importance [B, K]` (subsequence
    length), `mask [B, K]`.
    """

    def __init__(self, num_interests=7, num_concepts=32, table_size=1, **kwargs):
        super().__init__(**kwargs)
        self.num_interests = num_interests
        self.num_concepts = num_concepts
        self.table_size = table_size

    def build(self, input_shape):
        self.item_concept = self.add_weight(
            "item_concept", shape=(self.table_size,), dtype=tf.int32,
            initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, inputs, training=None):
        items, index, mask = inputs["items"], inputs["item_index"], inputs["mask"]
        concept = tf.gather(self.item_concept, index)
        onehot = tf.one_hot(concept, self.num_concepts, dtype=items.dtype)
        onehot = onehot * tf.cast(mask, items.dtype)[..., None]
        counts = tf.reduce_sum(onehot, axis=1)  # [B, C]
        pooled = tf.einsum("blc,bld->bcd", onehot, items) / tf.maximum(counts, 1.0)[..., None]
        k = min(self.num_interests, self.num_concepts)
        top_counts, top = tf.math.top_k(counts, k=k)
        capsules = tf.gather(pooled, top, batch_dims=1)
        kmask = top_counts > 0
        return {"capsules": capsules, "importance": top_counts, "mask": kmask}

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests,
                "num_concepts": self.num_concepts, "table_size": self.table_size}
