"""Item summarisation MLP with GELU (paper eq. 4)."""

from trainer.layers._keras import keras, register, tf


@register
class ItemSummarizer(keras.layers.Layer):
    """e_i = W2^T GELU(W1^T concat(f_i1 .. f_iN)).

    Fields: item-id embedding, mean of topic embeddings, categorical
    embeddings, the content vector. Shared by the item tower and every
    sequence encoder, so clustering happens in the space items are scored in.

    Call: dict from `ItemFeatureStore` with shape S. Returns `S + [output_dim]`.
    """

    def __init__(self, num_items=1, num_topics=1, num_categorical_values=1, item_id_dim=32,
                 topic_dim=16, categorical_dim=8, hidden=64, output_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.num_topics = num_topics
        self.num_categorical_values = num_categorical_values
        self.item_id_dim = item_id_dim
        self.topic_dim = topic_dim
        self.categorical_dim = categorical_dim
        self.hidden = hidden
        self.output_dim = output_dim

    def build(self, input_shape):
        self.id_embedding = keras.layers.Embedding(self.num_items, self.item_id_dim, name="item_id")
        self.topic_embedding = keras.layers.Embedding(self.num_topics, self.topic_dim, name="topic")
        self.categorical_embedding = keras.layers.Embedding(
            self.num_categorical_values, self.categorical_dim, name="categorical")
        self.w1 = keras.layers.Dense(self.hidden, activation="gelu", name="w1")
        self.w2 = keras.layers.Dense(self.output_dim, name="w2")
        super().build(input_shape)

    def call(self, feats):
        topic_ids = feats["topic_ids"]
        present = tf.cast(topic_ids > 0, tf.float32)[..., None]
        topics = tf.reduce_sum(self.topic_embedding(topic_ids) * present, axis=-2)
        topics = topics / tf.maximum(tf.reduce_sum(present, axis=-2), 1.0)
        cats = self.categorical_embedding(feats["categorical_ids"])
        cat_shape = tf.concat([tf.shape(cats)[:-2], [-1]], axis=0)
        cats = tf.reshape(cats, cat_shape)
        fields = [self.id_embedding(feats["index"]), topics, cats, feats["content"]]
        return self.w2(self.w1(tf.concat(fields, axis=-1)))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items, "num_topics": self.num_topics,
                "num_categorical_values": self.num_categorical_values,
                "item_id_dim": self.item_id_dim, "topic_dim": self.topic_dim,
                "categorical_dim": self.categorical_dim, "hidden": self.hidden,
                "output_dim": self.output_dim}
