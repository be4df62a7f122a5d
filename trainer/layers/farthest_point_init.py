"""Validity-Aware Farthest Point Initialisation (paper eq. 5-6)."""

from trainer.layers._keras import tf


def farthest_point_init(
    points: tf.Tensor, eligible: tf.Tensor, num_clusters: int, first_index: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Picks `num_clusters` diverse items as initial centroids.

    Centroid 1 is `first_index`; each next one is the eligible, not yet
    chosen item whose largest cosine similarity to the chosen centroids is
    smallest (eq. 5). Ineligible items (invalid, padding) are never chosen
    (eq. 6). When fewer eligible items than clusters exist, the remaining
    clusters are *masked* (zero vector, mask 0), never duplicated.

    Args:
      points: `[B, L, d]` mapped item vectors (S e_i).
      eligible: `[B, L]` bool; which items may become centroids.
      num_clusters: K.
      first_index: `[B]` int index of the first centroid (must be eligible
        when any item is).

    Returns:
      (centroids `[B, K, d]`, mask `[B, K]` bool).
    """
    length = tf.shape(points)[1]
    unit = tf.math.l2_normalize(points, axis=-1)
    has_any = tf.reduce_any(eligible, axis=1)
    first = tf.one_hot(first_index, length, on_value=True, off_value=False, dtype=tf.bool)
    chosen = tf.logical_and(first, has_any[:, None])
    centroids = [tf.gather(points, first_index, batch_dims=1)]
    masks = [has_any]
    max_sim = tf.einsum("bld,bd->bl", unit, tf.gather(unit, first_index, batch_dims=1))
    for _ in range(1, num_clusters):
        available = tf.logical_and(eligible, tf.logical_not(chosen))
        score = tf.where(available, max_sim, tf.fill(tf.shape(max_sim), 1e9))
        index = tf.argmin(score, axis=1, output_type=tf.int32)
        has = tf.reduce_any(available, axis=1)
        centroids.append(tf.gather(points, index, batch_dims=1))
        masks.append(has)
        picked = tf.one_hot(index, length, on_value=True, off_value=False, dtype=tf.bool)
        chosen = tf.logical_or(chosen, tf.logical_and(picked, has[:, None]))
        sim = tf.einsum("bld,bd->bl", unit, tf.gather(unit, index, batch_dims=1))
        max_sim = tf.where(has[:, None], tf.maximum(max_sim, sim), max_sim)
    mask = tf.stack(masks, axis=1)
    centroids = tf.stack(centroids, axis=1) * tf.cast(mask, points.dtype)[..., None]
    return centroids, mask
