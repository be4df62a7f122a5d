"""In-graph item feature lookup: item id string -> feature tensors.

Why in-graph: the exported user tower takes raw item ids (what a serving
client has) and looks up every item feature inside the SavedModel, so
training and serving cannot skew.
"""

from trainer.layers._keras import keras, register, tf


@register
class ItemFeatureStore(keras.layers.Layer):
    """Maps item ids to (index, content, topic ids, categorical ids, validity).

    The vocabulary lives in a `StringLookup` (index 0 = unknown / padding);
    the feature arrays are non-trainable weights filled by `set_tables`
    (from the prepare stage's item table, `trainer/item_table.py`).

    Args:
      vocabulary: item ids, index i+1 for vocabulary[i].
      vocabulary_file: instead of `vocabulary`, a text file with one id per
        line (line i -> index i+1). The lookup table is then initialised
        from the file, which a SavedModel tracks as an asset (`assets/`), so
        an exported tower carries its vocabulary as a file, not as graph
        constants.
      vocabulary_size: the number of ids in `vocabulary_file`.
      content_dim: width of the content vector (0 allowed).
      max_topics: topic slots per item (0-padded).
      num_categorical: categorical columns per item.

    Call: `ids` string tensor of any shape S. Returns dict: `index S` int32,
    `content S+[content_dim]`, `topic_ids S+[max_topics]` int32,
    `categorical_ids S+[num_categorical]` int32, `valid S` bool.
    """

    def __init__(self, vocabulary=(), content_dim=0, max_topics=3, num_categorical=0,
                 vocabulary_file=None, vocabulary_size=None, **kwargs):
        super().__init__(**kwargs)
        if vocabulary_file is not None and vocabulary_size is None:
            raise ValueError("ItemFeatureStore: vocabulary_file needs vocabulary_size")
        self.vocabulary = [] if vocabulary_file else list(vocabulary)
        self.vocabulary_file = vocabulary_file
        self.vocabulary_size = len(self.vocabulary) if vocabulary_file is None else int(vocabulary_size)
        self.content_dim = content_dim
        self.max_topics = max_topics
        self.num_categorical = num_categorical
        self.lookup = keras.layers.StringLookup(vocabulary=vocabulary_file or self.vocabulary,
                                                num_oov_indices=1, mask_token=None, name="ids")

    @property
    def table_size(self) -> int:
        return self.vocabulary_size + 1

    def build(self, input_shape):
        n = self.table_size

        def table(name, shape, dtype):
            return self.add_weight(name, shape=shape, dtype=dtype, initializer="zeros",
                                   trainable=False)

        self.content = table("content", (n, max(self.content_dim, 1)), tf.float32)
        self.topic_ids = table("topic_ids", (n, self.max_topics), tf.int32)
        self.categorical_ids = table("categorical_ids", (n, max(self.num_categorical, 1)), tf.int32)
        self.valid = table("valid", (n,), tf.int32)
        super().build(input_shape)

    def set_tables(self, content, topic_ids, categorical_ids, valid):
        """Fills the feature arrays (row 0 = unknown item)."""
        if not self.built:
            self.build(tf.TensorShape([None]))
        self.content.assign(content if self.content_dim else tf.zeros_like(self.content))
        self.topic_ids.assign(topic_ids)
        self.categorical_ids.assign(categorical_ids if self.num_categorical
                                    else tf.zeros_like(self.categorical_ids))
        self.valid.assign(valid)

    def call(self, ids):
        index = tf.cast(self.lookup(ids), tf.int32)
        return {
            "index": index,
            "content": tf.gather(self.content, index),
            "topic_ids": tf.gather(self.topic_ids, index),
            "categorical_ids": tf.gather(self.categorical_ids, index),
            "valid": tf.gather(self.valid, index) > 0,
        }

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary,
                "vocabulary_file": self.vocabulary_file, "vocabulary_size": self.vocabulary_size,
                "content_dim": self.content_dim, "max_topics": self.max_topics,
                "num_categorical": self.num_categorical}
