"""Collapse diagnostics for multi-embedding user towers (paper §3.2.4)."""

from trainer.layers._keras import tf


def _entropy(p: tf.Tensor) -> tf.Tensor:
    """Entropy (nats) over the last axis of probabilities `p` (0 log 0 = 0)."""
    return -tf.reduce_sum(tf.where(p > 0, p * tf.math.log(tf.maximum(p, 1e-12)), 0.0), axis=-1)


def _pairs(embeddings: tf.Tensor, mask: tf.Tensor):
    """`cos [B, K, K]` between a user's embeddings and `pair [B, K, K]`:
    1 where both are unmasked and distinct, else 0."""
    unit = tf.math.l2_normalize(embeddings, axis=-1)
    cos = tf.einsum("bkd,bjd->bkj", unit, unit)
    m = tf.cast(mask, cos.dtype)
    return cos, m[:, :, None] * m[:, None, :] * (1.0 - tf.eye(tf.shape(cos)[1]))


def mean_pairwise_cosine(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean cosine between a user's unmasked embeddings, over users with >= 2.

    Close to 1 = the embeddings collapsed into one.

    Args: embeddings `[B, K, d]`, mask `[B, K]` bool. Returns: scalar.
    """
    cos, pair = _pairs(embeddings, mask)
    per_user_pairs = tf.reduce_sum(pair, axis=[1, 2])
    per_user = tf.reduce_sum(cos * pair, axis=[1, 2]) / tf.maximum(per_user_pairs, 1.0)
    users = tf.cast(per_user_pairs > 0, cos.dtype)
    return tf.reduce_sum(per_user * users) / tf.maximum(tf.reduce_sum(users), 1.0)


def similarity_excess(embeddings: tf.Tensor, mask: tf.Tensor, margin: float) -> tf.Tensor:
    """Per user, the mean over pairs of unmasked embeddings of
    `relu(cos - margin)` (0 for a user with fewer than 2): the
    interest-diversity term of `model.diversity_weight`.

    Args: embeddings `[B, K, d]`, mask `[B, K]` bool. Returns: `[B]`.
    """
    cos, pair = _pairs(embeddings, mask)
    excess = tf.nn.relu(cos - margin) * pair
    return tf.reduce_sum(excess, axis=[1, 2]) / tf.maximum(tf.reduce_sum(pair, axis=[1, 2]), 1.0)


def routing_entropy(importance: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean entropy (nats) of the normalised routing mass sum_i b_ij per user.

    Low = one cluster takes all items.
    """
    m = tf.cast(mask, importance.dtype)
    mass = importance * m
    p = mass / tf.maximum(tf.reduce_sum(mass, axis=1, keepdims=True), 1e-9)
    return tf.reduce_mean(_entropy(p))


def masked_fraction(mask: tf.Tensor) -> tf.Tensor:
    """Share of user embeddings that are masked (not enough valid items)."""
    return 1.0 - tf.reduce_mean(tf.cast(mask, tf.float32))


def effective_interests(index: tf.Tensor, num_interests) -> tf.Tensor:
    """exp(entropy) of how often each embedding slot is the associated one.

    Over a batch of examples, the share of targets associated (eq. 8) with
    slot j; 1 = one slot wins every example, i.e. the model degenerated into
    a single-embedding one ("winner takes all", paper §3.2.4); K = uniform.
    Read it with `pairwise_cosine`: K (near-)identical embeddings are also a
    single-embedding model, yet float noise spreads the argmax over all
    slots (MIND on ml-100k: cosine 1.00 and 6.9 effective interests).

    Args: index `[B]` int selected slot, num_interests K. Returns: scalar.
    """
    counts = tf.math.bincount(index, minlength=num_interests, maxlength=num_interests, dtype=tf.float32)
    p = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    return tf.exp(_entropy(p))
