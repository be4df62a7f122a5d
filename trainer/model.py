"""The multi-embedding two-tower retrieval model (SPEC §2.2).

Item tower psi: id -> in-graph features -> summariser (eq. 4) -> dense -> L2.
User tower phi(u, c): history -> summariser -> interest module (DCM, MIND,
SA, interest tokens, PFS) or an explicit condition topic (CR) -> fields
[condition, pooled history, latest item] -> DHEN -> dense -> L2, one vector
per condition. Loss: sampled softmax over in-batch negatives with logQ from
the streaming frequency estimator and accidental-hit removal, using only the
associated embedding (eq. 8-9), or (`association=max`) scoring every
candidate by the max over the user's embeddings, as serving does.
"""

from __future__ import annotations

import numpy as np
import tensorflow_recommenders as tfrs

from trainer import diagnostics, features
from trainer.config import IMPLICIT_KINDS, ModelConfig, TrainConfig
from trainer.item_table import ItemTable
from trainer.layers._keras import keras, tf
from trainer.layers.association import InterestAssociation
from trainer.layers.dhen import DHEN
from trainer.layers.differentiable_clustering import DifferentiableClustering
from trainer.layers.frequency_estimator import StreamingFrequencyEstimator
from trainer.layers.interest_tokens import InterestTokens
from trainer.layers.item_feature_store import ItemFeatureStore
from trainer.layers.item_summarizer import ItemSummarizer
from trainer.layers.self_attentive import SelfAttentiveInterests
from trainer.layers.sequence_encoder import SequenceEncoder
from trainer.layers.step_seed import step_seed
from trainer.layers.subsequence_concepts import SubsequenceConcepts

DIAGNOSTICS = ("pairwise_cosine", "routing_entropy", "masked_fraction", "effective_interests")


class MultiEmbeddingModel(tfrs.Model):
    """Two towers, several user embeddings, one loss.

    Args:
      cfg: the model config (`kind` picks the user tower).
      table: the item table (vocabulary + features) from the prepare stage.
      concepts: `[N+1]` offline concept per item row, for `kind="pfs"`.
      asset_vocabularies: initialise the item and topic lookups from the
        table's vocabulary files (`table.vocab_files`) instead of in-memory
        lists, so a SavedModel of a tower carries them as assets (export).
        Same ids -> same indices either way.
    """

    def __init__(self, cfg: ModelConfig, table: ItemTable, concepts: np.ndarray | None = None,
                 seed: int = 0, asset_vocabularies: bool = False):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.seed = seed
        files = table.vocab_files if asset_vocabularies else {}
        if asset_vocabularies and not files:
            raise ValueError("asset_vocabularies=True needs an item table loaded from files")
        self.store = ItemFeatureStore(table.ids, table.content.shape[1], table.topic_ids.shape[1],
                                      table.categorical_ids.shape[1], name="item_store",
                                      vocabulary_file=files.get("items"), vocabulary_size=len(table.ids))
        self.store.set_tables(table.content, table.topic_ids, table.categorical_ids, table.valid)
        self.summarizer = ItemSummarizer(
            num_items=len(table.ids) + 1, num_topics=len(table.topics) + 1,
            num_categorical_values=table.num_categorical_values, item_id_dim=cfg.item_id_dim,
            topic_dim=cfg.topic_dim, categorical_dim=cfg.categorical_dim,
            hidden=cfg.summarizer_hidden, output_dim=cfg.item_dim, name="summarizer")
        self.item_head = keras.layers.Dense(cfg.embedding_dim, name="item_head")
        self.interests = self._interest_module(cfg, table, concepts, seed)
        if self.kind == "cr":
            self.topic_lookup = keras.layers.StringLookup(vocabulary=files.get("topics") or table.topics,
                                                          num_oov_indices=1,
                                                          mask_token=None, name="topic_lookup")
            self.condition_embedding = keras.layers.Embedding(len(table.topics) + 1, cfg.topic_dim,
                                                              name="condition_topic")
        # The global interest: one learned condition token (`global_interest`).
        self.global_token = None
        if cfg.global_interest and self.kind in IMPLICIT_KINDS:
            self.global_token = keras.layers.Embedding(1, cfg.item_dim, name="global_token")
        self.sequence = None
        if cfg.sequence_layers:
            self.sequence = SequenceEncoder(cfg.sequence_length, cfg.sequence_layers, name="sequence")
        self.dhen = DHEN(**vars(cfg.dhen), name="dhen")
        self.user_head = keras.layers.Dense(cfg.embedding_dim, name="user_head")
        # `max` scores with every embedding; the layer then only names the
        # slot nearest the target (the `effective_interests` diagnostic).
        self.association = InterestAssociation("argmax" if cfg.association == "max" else cfg.association,
                                               cfg.gumbel_temperature,
                                               1.0 / cfg.temperature, name="association")
        self.frequency = StreamingFrequencyEstimator(cfg.frequency_buckets, cfg.frequency_alpha,
                                                     name="frequency")
        self.recompute_selected = True  # see _select
        self.use_train_config(TrainConfig())  # the training job passes its own
        self.task = tfrs.tasks.Retrieval(temperature=cfg.temperature, remove_accidental_hits=True)
        # Collapse diagnostics. Metric accumulators are not model state: they
        # are kept out of the checkpoint (untracked; reported via `metrics`),
        # so adding a diagnostic never orphans an existing checkpoint.
        self._self_setattr_tracking = False
        self.diag = {name: keras.metrics.Mean(name=name) for name in DIAGNOSTICS}
        self._self_setattr_tracking = True
        # Training audit, checkpointed with the model: how many examples the
        # weights have been trained on and an order-free checksum of which
        # ones (sum of 2^20-bucket hashes of user|timestamp; exact in
        # float64 up to ~8e9 examples). A job resumed after preemption must
        # end with the same pair as an uninterrupted one.
        audit = dict(trainable=False, dtype=tf.float64, aggregation=tf.VariableAggregation.SUM)
        self.trained_examples = tf.Variable(0.0, name="trained_examples", **audit)
        self.trained_checksum = tf.Variable(0.0, name="trained_checksum", **audit)

    @staticmethod
    def _interest_module(cfg, table, concepts, seed):
        k = cfg.num_interests
        if cfg.kind == "dcm":
            return DifferentiableClustering(k, cfg.item_dim, cfg.routing_iterations, cfg.init,
                                            cfg.single_assignment, cfg.validity_filter, seed,
                                            cfg.routing_gradient, cfg.first_centroid,
                                            dynamic_interests=cfg.dynamic_interests, name="dcm")
        if cfg.kind == "mind":
            # `original`: MIND's B2I routing (random logits, accumulated, K'
            # interests per user); `eq1`: the paper's eq. 1 with random capsules.
            original = cfg.mind_routing == "original"
            return DifferentiableClustering(k, cfg.item_dim, cfg.routing_iterations, "gaussian",
                                            False, cfg.validity_filter, seed, cfg.routing_gradient,
                                            logits="accumulate" if original else "recompute",
                                            dynamic_interests=original, name="mind")
        if cfg.kind == "sa":
            return SelfAttentiveInterests(k, cfg.attention_dim, name="self_attention")
        if cfg.kind == "tokens":
            return InterestTokens(k, cfg.item_dim, name="interest_tokens")
        if cfg.kind == "pfs":
            if concepts is None:
                raise ValueError("model.kind=pfs needs offline concepts (trainer.kmeans.item_concepts)")
            layer = SubsequenceConcepts(k, cfg.pfs_concepts, len(table.ids) + 1, name="pfs")
            layer.build(None)
            layer.item_concept.assign(concepts.astype(np.int32))
            return layer
        return None

    @property
    def user_layers(self) -> list:
        """Every layer the user tower reads (what an exported tower tracks)."""
        optional = (self.interests, self.sequence, self.global_token, getattr(self, "condition_embedding", None))
        return [self.store, self.summarizer, self.dhen, self.user_head] + [x for x in optional if x is not None]

    @property
    def num_embeddings(self) -> int | None:
        """Implicit embeddings per user (K_im, plus the global one); None for CR
        (one per followed topic)."""
        if self.kind == "cr":
            return None
        if self.kind == "single":
            return 1
        k = min(self.cfg.num_interests, self.cfg.pfs_concepts) if self.kind == "pfs" else self.cfg.num_interests
        return k + int(self.global_token is not None)

    @property
    def metrics(self):
        return super().metrics + list(self.diag.values())

    # -- towers ----------------------------------------------------------------
    def item_embeddings(self, ids: tf.Tensor) -> tf.Tensor:
        """psi(i): `[N]` item ids -> `[N, d]` unit vectors."""
        return tf.math.l2_normalize(self.item_head(self.summarizer(self.store(ids))), axis=-1)

    def _history(self, inputs):
        ids = inputs[features.HISTORY_ITEM_IDS]
        feats = self.store(ids)
        items = self.summarizer(feats)
        mask = tf.not_equal(ids, "")
        valid = tf.logical_and(feats["valid"], tf.equal(inputs[features.HISTORY_NEGATIVE], 0))
        valid = tf.logical_and(valid, mask)
        m = tf.cast(mask, items.dtype)[..., None]
        v = tf.cast(valid, items.dtype)[..., None]
        # Pool the valid items; fall back to all items when none is valid.
        weights = tf.where(tf.reduce_any(valid, axis=1)[:, None, None], v, m)
        pooled = tf.reduce_sum(items * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        last = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) - 1, 0)
        latest = tf.gather(items, last, batch_dims=1) * tf.cast(tf.reduce_any(mask, axis=1), items.dtype)[:, None]
        out = {"items": items, "valid": valid, "mask": mask, "index": feats["index"],
               "pooled": pooled, "latest": latest}
        if self.sequence is not None:
            out["sequence"] = self.sequence({"items": items, "valid": valid})
        return out

    def _cross(self, condition: tf.Tensor | None, hist: dict) -> tf.Tensor:
        """DHEN over fields for `[B, K, *]` conditions -> `[B, K, d]` unit vectors.

        `hist`: the shared user fields (`_history`): `pooled`, `latest` and,
        with `sequence_layers`, `sequence`."""
        pooled, latest = hist["pooled"], hist["latest"]
        extra = [hist["sequence"]] if "sequence" in hist else []
        if condition is None:
            out = self.user_head(self.dhen([pooled, latest] + extra))
            return tf.math.l2_normalize(out, axis=-1)[:, None, :]
        k = tf.shape(condition)[1]
        flat_cond = tf.reshape(condition, [-1, condition.shape[-1]])
        rep = lambda x: tf.reshape(tf.repeat(x[:, None, :], k, axis=1), [-1, x.shape[-1]])  # noqa: E731
        if self.kind == "cr":
            fields = [flat_cond, rep(pooled), rep(latest)] + [rep(x) for x in extra]
        else:
            # Squashed capsules are short (|c| ~ |v|^2 for small v), which
            # lets the crossing's biases dominate; the direction is the
            # interest, its strength is reported as importance. The shared
            # fields (`implicit_fields`) are the same for all K conditions.
            shared = {"pooled": pooled, "latest": latest}
            fields = [tf.math.l2_normalize(flat_cond, axis=-1)]
            fields += [rep(shared[name]) for name in self.cfg.implicit_fields] + [rep(x) for x in extra]
        out = tf.math.l2_normalize(self.user_head(self.dhen(fields)), axis=-1)
        return tf.reshape(out, [tf.shape(condition)[0], k, out.shape[-1]])

    def user_embeddings(self, inputs: dict, training=None, conditions: tf.Tensor | None = None) -> dict:
        """phi(u, c) for every condition.

        Args:
          inputs: `history_item_ids [B, L]` ("" = padding), `history_negative
            [B, L]`; for CR `condition_topic [B]` unless `conditions` given.
          conditions: CR only, `[B, K_ex]` topic strings ("" = none).

        Returns:
          dict `embeddings [B, K, d]`, `importance [B, K]`, `mask [B, K]` bool.
        """
        return self._user_tower(inputs, training, conditions)[0]

    def _user_tower(self, inputs: dict, training=None, conditions: tf.Tensor | None = None, seed=None):
        """`user_embeddings` plus, for implicit kinds, the crossing's inputs
        `(conditions [B, K, c], pooled [B, e], latest [B, e])` (else None).
        `seed`: the training step's `[2]` seed for the interest module's draws."""
        hist = self._history(inputs)
        batch = tf.shape(hist["pooled"])[0]
        if self.kind == "single":
            emb = self._cross(None, hist)
            return {"embeddings": emb, "importance": tf.ones([batch, 1]),
                    "mask": tf.ones([batch, 1], tf.bool)}, None
        if self.kind == "cr":
            topics = conditions if conditions is not None else inputs[features.CONDITION_TOPIC][:, None]
            cond = self.condition_embedding(self.topic_lookup(topics))
            emb = self._cross(cond, hist)
            mask = tf.not_equal(topics, "")
            return {"embeddings": emb, "importance": tf.cast(mask, tf.float32), "mask": mask}, None
        module_inputs = {"items": hist["items"], "valid": hist["valid"], "mask": hist["mask"],
                         "item_index": hist["index"]}
        if seed is not None:
            module_inputs["seed"] = seed
        out = self.interests(module_inputs, training=training)
        capsules, importance, mask = out["capsules"], out["importance"], out["mask"]
        if self.global_token is not None:
            token = self.global_token(tf.zeros([batch], tf.int32))
            capsules = tf.concat([capsules, token[:, None, :]], axis=1)
            # Its merge budget: the mean of the valid interests' importance.
            valid = tf.cast(mask, importance.dtype)
            mean = tf.reduce_sum(importance * valid, axis=1) / tf.maximum(tf.reduce_sum(valid, axis=1), 1.0)
            importance = tf.concat([importance, tf.where(tf.reduce_any(mask, axis=1), mean, 1.0)[:, None]], 1)
            mask = tf.concat([mask, tf.ones([batch, 1], tf.bool)], axis=1)
        else:
            # A user with no usable item keeps one embedding (from the pooled fields).
            none = tf.logical_not(tf.reduce_any(mask, axis=1, keepdims=True))
            first = tf.one_hot(0, tf.shape(mask)[1], on_value=True, off_value=False, dtype=tf.bool)
            mask = tf.logical_or(mask, tf.logical_and(none, first[None, :]))
        emb = self._cross(capsules, hist)
        return {"embeddings": emb, "importance": importance, "mask": mask}, (
            capsules, hist)

    def _select(self, user: dict, cross_inputs, target: tf.Tensor, training, seed=None):
        """The associated embedding `[B, d]` that the loss trains (eq. 8) and
        its slot `[B]`.

        With argmax association only the selected embedding gets gradients,
        so the K-condition crossing is run forward only (stop_gradient) to
        pick j*, and the crossing is run again, with gradients, on the B
        selected conditions. The gradients are identical to back-propagating
        through all K rows (whose gradients are zero) at a fraction of the
        cost: the DHEN backward pass covers B rows instead of B*K.
        `recompute_selected = False` takes the plain path (equivalence test).
        """
        inputs = {"embeddings": user["embeddings"], "mask": user["mask"], "target": target}
        if seed is not None:
            inputs["seed"] = seed
        if self.cfg.association == "max":
            # Every valid embedding is scored (`_max_scored`); masked slots
            # take a valid slot's vector, so they never win the max.
            index = self.association({**inputs, "embeddings": tf.stop_gradient(user["embeddings"])})["index"]
            return _max_scored(user["embeddings"], user["mask"]), index
        if not (self.recompute_selected and training and cross_inputs is not None and self.association.mode == "argmax"):
            chosen = self.association(inputs, training=training)
            return chosen["selected"], chosen["index"]
        inputs["embeddings"] = tf.stop_gradient(user["embeddings"])
        index = self.association(inputs, training=training)["index"]
        conditions, hist = cross_inputs
        chosen = tf.gather(conditions, index, batch_dims=1)[:, None, :]
        return self._cross(chosen, hist)[:, 0, :], index

    # -- training --------------------------------------------------------------
    def _step_seed(self, training):
        """The seed of this training step's random draws (VA-FPI's first
        centroid, MIND's Gaussian init, Gumbel noise): a function of the
        seed and the optimizer step, which a backup restores, so a resumed
        job draws what an uninterrupted one draws. None outside `fit`
        (no optimizer): the layers then draw from stateful ops."""
        optimizer = getattr(self, "optimizer", None)
        if not training or optimizer is None:
            return None
        return step_seed(self.seed, optimizer.iterations)

    def compute_loss(self, inputs, training=False):
        target_ids = inputs[features.TARGET_ITEM_ID]
        target = self.item_embeddings(target_ids)
        seed = self._step_seed(training)
        user, cross_inputs = self._user_tower(inputs, training=training, seed=seed)
        selected, index = self._select(user, cross_inputs, target, training, seed)
        probability = self.frequency(target_ids, training=training)
        self.diag["pairwise_cosine"].update_state(
            diagnostics.mean_pairwise_cosine(user["embeddings"], user["mask"]))
        self.diag["routing_entropy"].update_state(
            diagnostics.routing_entropy(user["importance"], user["mask"]))
        self.diag["masked_fraction"].update_state(diagnostics.masked_fraction(user["mask"]))
        self.diag["effective_interests"].update_state(
            diagnostics.effective_interests(index, tf.shape(user["mask"])[1]))
        if training:
            key = tf.strings.join([inputs[features.USER_ID], tf.strings.as_string(
                inputs[features.TARGET_TIMESTAMP])], "|")
            hashes = tf.cast(tf.strings.to_hash_bucket_fast(key, 1 << 20), tf.float64)
            self.trained_examples.assign_add(tf.cast(tf.size(hashes), tf.float64))
            self.trained_checksum.assign_add(tf.reduce_sum(hashes))
        weight = None
        if self.negative_targets == "skip":
            weight = tf.cast(tf.equal(inputs[features.TARGET_NEGATIVE], 0), tf.float32)

        def retrieval_loss(query):
            """The in-batch softmax of `query` against the batch's targets (logQ-corrected)."""
            return self.task(query, target,
                             candidate_sampling_probability=self._sampling_probability(probability),
                             candidate_ids=target_ids, sample_weight=weight, compute_metrics=False)

        loss = retrieval_loss(selected)
        if self.cfg.global_loss_weight > 0 and self.global_token is not None:
            # The global embedding is the last slot (`_user_tower`).
            loss += self.cfg.global_loss_weight * retrieval_loss(user["embeddings"][:, -1, :])
        if self.cfg.diversity_weight > 0 and self.kind in IMPLICIT_KINDS:
            # Summed over users, as the retrieval loss is.
            excess = diagnostics.similarity_excess(user["embeddings"], user["mask"], self.cfg.diversity_margin)
            loss += self.cfg.diversity_weight * tf.reduce_sum(excess)
        return loss

    def use_train_config(self, train: TrainConfig) -> None:
        """The training options the loss reads (`train.negative_targets`,
        `train.logq_weight`): plain attributes, not model state."""
        self.negative_targets = train.negative_targets
        self.logq_weight = train.logq_weight

    def _sampling_probability(self, probability: tf.Tensor) -> tf.Tensor | None:
        """What the loss subtracts the log of (`train.logq_weight` w): q^w, so
        the correction is w * log q (TFRS clips q^w at 1e-6); None (no
        correction) at w = 0."""
        if self.logq_weight == 0:
            return None
        return probability if self.logq_weight == 1 else tf.pow(probability, self.logq_weight)


def _max_scored(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """`[B, K, d]` embeddings for TFRS's max-over-heads scoring: masked
    slots are replaced by the user's first valid slot (every user has one),
    so a candidate's score is the max over the valid embeddings only."""
    first = tf.argmax(tf.cast(mask, tf.int32), axis=1, output_type=tf.int32)
    fill = tf.gather(embeddings, first, batch_dims=1)[:, None, :]
    return tf.where(mask[..., None], embeddings, fill)


def create_variables(model: MultiEmbeddingModel, batch: dict) -> None:
    """Creates every weight (and the optimizer's slots) without training, so
    a checkpoint can be restored into the model before `fit`."""
    model.item_embeddings(batch[features.TARGET_ITEM_ID])
    model.user_embeddings(batch, training=False)
    model.frequency(batch[features.TARGET_ITEM_ID], training=False)
    model.built = True
    if getattr(model, "optimizer", None) is not None:
        model.optimizer.build(model.trainable_variables)


def build_model(cfg: ModelConfig, table: ItemTable, seed: int = 0,
                asset_vocabularies: bool = False) -> MultiEmbeddingModel:
    """Factory: the model for `cfg.kind`, with offline PFS concepts when needed."""
    concepts = None
    if cfg.kind == "pfs":
        from trainer.kmeans import item_concepts

        concepts = item_concepts(table, cfg.pfs_concepts, seed)
    return MultiEmbeddingModel(cfg, table, concepts, seed, asset_vocabularies)
