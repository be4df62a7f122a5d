"""The towers as their own `tf.Module`s, with TF Serving signatures.

Why not save the training model: a `tfrs.Model` has no `call()` and holds
the optimizer, the frequency estimator and the training audit, none of which
a server needs. Each module here tracks exactly the variables and lookup
tables its tower reads, so the SavedModel holds the tower and nothing else;
its signature does the request preprocessing in-graph (padding, truncation
to the most recent `history_length`), so serving cannot skew from training.
"""

from __future__ import annotations

import tensorflow as tf

from common import contract


def _unique(variables) -> list:
    seen, out = set(), []
    for var in variables:
        if id(var) not in seen:
            seen.add(id(var))
            out.append(var)
    return out


def recent_history(ids: tf.Tensor, negative: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Left-aligns the non-padding items of `[B, L]` histories and keeps the
    most recent `length` of them: `[B, length]` ("" / 0 padded on the
    right, the layout the model was trained on). Any request width L works,
    padding anywhere in the row is dropped."""
    tf.debugging.assert_equal(tf.shape(ids), tf.shape(negative),
                              message="history_item_ids and history_negative must have the same shape")
    present = tf.not_equal(ids, "")
    ids = tf.ragged.boolean_mask(ids, present)[:, -length:]
    negative = tf.ragged.boolean_mask(negative, present)[:, -length:]
    return (ids.to_tensor(default_value="", shape=[None, length]),
            negative.to_tensor(default_value=0, shape=[None, length]))


class UserTower(tf.Module):
    """phi(u, .) of a trained `MultiEmbeddingModel` (built with asset vocabularies).

    Signature `serving_default`:
      implicit: `history_item_ids [B, L]` string, `history_negative [B, L]`
        int64 -> `embeddings [B, K_im, d]` float32, `importance [B, K_im]`,
        `mask [B, K_im]` bool.
      explicit (CR): the same inputs plus `topics [B, K_ex]` string ("" =
        none) -> `embeddings [B, K_ex, d]`, `mask [B, K_ex]`.
    """

    def __init__(self, model, history_length: int, num_embeddings: int | None, explicit: bool):
        super().__init__(name="user_tower")
        tables = [model.store.lookup.lookup_table]
        if explicit:
            tables.append(model.topic_lookup.lookup_table)
        self.tower_variables = _unique(v for layer in model.user_layers for v in layer.variables)
        self.lookup_tables = tables
        dim = model.cfg.embedding_dim
        history = [tf.TensorSpec([None, None], tf.string, name=contract.HISTORY_ITEM_IDS),
                   tf.TensorSpec([None, None], tf.int64, name=contract.HISTORY_NEGATIVE)]

        def towers(ids, negative, topics=None):
            ids, negative = recent_history(ids, negative, history_length)
            inputs = {contract.HISTORY_ITEM_IDS: ids, contract.HISTORY_NEGATIVE: negative}
            out = model.user_embeddings(inputs, training=False, conditions=topics)
            return tf.ensure_shape(out["embeddings"], [None, num_embeddings, dim]), out

        if explicit:
            @tf.function(input_signature=[*history, tf.TensorSpec([None, None], tf.string, name=contract.TOPICS)])
            def serve(history_item_ids, history_negative, topics):
                embeddings, out = towers(history_item_ids, history_negative, topics)
                return {contract.EMBEDDINGS: embeddings, contract.MASK: out["mask"]}
        else:
            @tf.function(input_signature=history)
            def serve(history_item_ids, history_negative):
                embeddings, out = towers(history_item_ids, history_negative)
                return {contract.EMBEDDINGS: embeddings,
                        contract.IMPORTANCE: tf.cast(out["importance"], tf.float32),
                        contract.MASK: out["mask"]}

        self.serve = serve


class ItemTower(tf.Module):
    """psi(i): signature `serving_default`, `item_ids [B]` string ->
    `embeddings [B, d]` float32 (unknown ids get the unknown-item row)."""

    def __init__(self, model):
        super().__init__(name="item_tower")
        layers = [model.store, model.summarizer, model.item_head]
        self.tower_variables = _unique(v for layer in layers for v in layer.variables)
        self.lookup_tables = [model.store.lookup.lookup_table]
        dim = model.cfg.embedding_dim

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.ITEM_IDS)])
        def serve(item_ids):
            return {contract.EMBEDDINGS: tf.ensure_shape(model.item_embeddings(item_ids), [None, dim])}

        self.serve = serve
