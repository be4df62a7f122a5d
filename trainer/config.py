"""Typed dataclass configuration, YAML presets and `key=value` overrides.

Why: every stage (Beam, trainer, export, serving) reads one resolved config,
and the resolved config is written next to every artifact so a result can be
traced to exactly what produced it.

The presets live in `trainer/configs/` and ship as package data, so
`--config paper` works from an installed wheel (a Dataflow worker, a
training container), not only from a checkout; `configs/` at the repository
root is a link to the same directory.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
import typing
from typing import Any

import yaml

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass
class SourceConfig:
    """Where the raw data comes from.

    Attributes:
      format: `synthetic` (built-in world), `generic` (SPEC §4 files),
        `ml-latest-small` or `ml-100k` (raw GroupLens directories).
      events: glob(s) of event files for `generic`, comma-separated.
      items: glob(s) of item files for `generic`.
      follows: glob(s) of follow files for `generic` (optional).
      path: directory of the raw MovieLens files.
      item_vector_column: name of a vector column in the item files
        (space-separated floats in CSV, a list in JSONL/Parquet).
      item_vector_dim: its length; 0 = the items have no vector column.
      item_numeric_columns: numeric item feature columns.
      item_categorical_columns: categorical item feature columns.
    """

    format: str = "synthetic"
    events: str = ""
    items: str = ""
    follows: str = ""
    path: str = ""
    item_vector_column: str = "content"
    item_vector_dim: int = 0
    item_numeric_columns: list[str] = dataclasses.field(default_factory=list)
    item_categorical_columns: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SyntheticConfig:
    """The seeded Pinterest-like world (SPEC §5).

    Attributes:
      seed: the world's seed; every user and item is a pure function of
        (seed, index).
      num_users: users in the world (~38 events each with the defaults).
      num_items: items (pins).
      num_topics: topics of the taxonomy (Zipf head/torso/tail popularity).
      content_dim: length of each item's "pretrained" content vector.
      days: days of engagements (the default split cuts at the last one).
      start_timestamp: unix seconds of the first day's midnight.
      events_per_day_core: mean (Poisson) engagements per day of a core user.
      events_per_day_casual: the same for a casual user.
      events_per_day_new: the same for a new user (active only in the last
        few days).
      explicit_share: share of engagements from the explicit retriever,
        logged with a `source_topic` (one of the user's follows).
      negative_share: share of negative engagements (`hide`).
      missing_feature_share: share of items with missing features (invalid).
      num_shards: raw files per output (events, items, follows, truth).
    """

    seed: int = 0
    num_users: int = 300
    num_items: int = 2000
    num_topics: int = 40
    content_dim: int = 16
    days: int = 15
    start_timestamp: int = 1767225600  # 2026-01-01T00:00:00Z
    events_per_day_core: float = 6.0
    events_per_day_casual: float = 2.0
    events_per_day_new: float = 2.0
    explicit_share: float = 0.2
    negative_share: float = 0.05
    missing_feature_share: float = 0.03
    num_shards: int = 4


@dataclasses.dataclass
class SplitConfig:
    """The train/eval split: temporal (SPEC §6, train = timestamp < T) or per user.

    Attributes:
      mode: `quantile` (T = numpy.quantile of de-duplicated timestamps),
        `timestamp` (T given) or `per_user` (no T: each user's last
        `per_user_eval` events, in SPEC §6 order, are eval events; for logs
        whose timestamps are only positions). A user with fewer than
        `per_user_eval + data.min_history` events has no eval event (every
        one of them trains), so every eval user has exactly `per_user_eval`
        eval records. Histories, validity and min_history are as in the
        temporal modes.
      quantile: the quantile of `quantile` mode (0.9: the last 10% of events
        are the eval period).
      timestamp: T in unix seconds for `timestamp` mode.
      per_user_eval: `per_user` mode: eval events per user (N >= 1).
    """

    mode: str = "quantile"
    quantile: float = 0.9
    timestamp: int = 0
    per_user_eval: int = 1


@dataclasses.dataclass
class DataConfig:
    """Data preparation (Beam) settings.

    Attributes:
      source: where the raw data comes from.
      synthetic: the built-in world (`source.format: synthetic`).
      split: the temporal train/eval split.
      history_length: L, most recent earlier engagements per example.
      min_history: events with fewer earlier events give no example.
      negative_actions: `action` values that are negative engagements
        (invalid in histories); any other action is positive.
      negative_rating_max: MovieLens: a rating <= this is a negative action.
      explicit_association: condition topic of explicit training examples:
        `source` (the logged `source_topic`) or `item` (sampled from the
        target item's own topics, the paper's weaker alternative).
      derive_follows: derive follows from each user's training-period topic
        shares instead of reading them (MovieLens has none).
      derive_source_topic: an event without `source_topic` gets the
        highest-ranked followed topic its item carries.
      follow_min_share: `derive_follows`: topics with at least this share of
        the user's training-period topic mass are followed.
      max_follows: `derive_follows`: at most this many followed topics.
      num_shards: TFRecord shards per prepared output.
    """

    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    history_length: int = 50
    min_history: int = 1
    negative_actions: list[str] = dataclasses.field(
        default_factory=lambda: ["negative", "hide", "dislike", "report"]
    )
    negative_rating_max: float = 2.0
    explicit_association: str = "source"
    derive_follows: bool = False
    derive_source_topic: bool = False
    follow_min_share: float = 0.15
    max_follows: int = 5
    num_shards: int = 8


@dataclasses.dataclass
class DhenConfig:
    """DHEN feature crossing (paper appendix A); defaults are the CPU preset.

    Hierarchy 1 = Transformer encoder || MLP; hierarchy 2 = parallel MaskNet
    || MLP; the parallel outputs of each hierarchy are summed.

    Attributes:
      field_dim: width every input field is projected to.
      transformer_layers: hierarchy 1: Transformer encoder layers.
      transformer_heads: hierarchy 1: attention heads.
      transformer_ff_dim: hierarchy 1: Transformer feed-forward width.
      mlp1_hidden: hierarchy 1: hidden width of the MLP.
      masknet_blocks: hierarchy 2: parallel MaskNet blocks.
      masknet_hidden: hierarchy 2: width of each MaskNet block's output.
      masknet_projection_ratio: hierarchy 2: mask hidden width as a multiple
        of the input width.
      mlp2_hidden: hierarchy 2: hidden width of the MLP.
      output_dim: width of the crossed output.
    """

    field_dim: int = 32
    transformer_layers: int = 1
    transformer_heads: int = 2
    transformer_ff_dim: int = 64
    mlp1_hidden: int = 128
    masknet_blocks: int = 2
    masknet_hidden: int = 32
    masknet_projection_ratio: float = 0.5
    mlp2_hidden: int = 128
    output_dim: int = 64


@dataclasses.dataclass
class ModelConfig:
    """The two-tower model and its implicit/explicit interest modules.

    Attributes:
      kind: `single` (one embedding), `dcm`, `mind`, `sa` (ComiRec-SA),
        `tokens` (interest tokens, MVKE without gating), `pfs`
        (PinnerFormer-subsequence concepts) or `cr` (Conditional Retrieval).
      embedding_dim: d, width of the user and item embeddings (L2-normalised).
      item_id_dim: item id embedding width in the item summariser.
      topic_dim: topic embedding width (item topics; CR's condition topic).
      categorical_dim: categorical feature embedding width.
      summarizer_hidden: hidden width of the item summarisation MLP (eq. 4).
      item_dim: width of a summarised item, the input of the interest
        modules.
      num_interests: K_im.
      num_explicit: K_ex, followed topics per user at serving.
      routing_iterations: capsule routing steps (DCM, MIND).
      init: `va_fpi`, `fpi` (no validity) or `gaussian` (MIND).
      single_assignment: SAR (eq. 7) on/off.
      validity_filter: drop invalid items from initialisation and routing.
      routing_gradient: DCM/MIND back-propagation: `last` (final weighted
        sum only, routing coefficients constant, as ComiRec) or `all`.
      association: which user embeddings the loss trains on a target:
        `argmax` (eq. 8: the one closest to the target), `gumbel`
        (straight-through Gumbel-Softmax) or `max` (what serving does: the
        positive and every in-batch negative are scored by the max over the
        user's valid embeddings, so every embedding that would rank a
        negative above the target is pushed down). Default `max`: DCM's
        best validation HR@50 on ml-100k (seed 0) went 0.435 (argmax) ->
        0.485 (single: 0.484); `docs/results/levers.md`.
      global_interest: implicit kinds: add one embedding conditioned on a
        learned global token (the user as a whole, crossed with the same
        shared fields) next to the K_im interests; its serving importance
        is the mean of the valid interests'. Default on: with `max`,
        validation HR@50 0.485 -> 0.488 (ml-100k, seed 0).
      first_centroid: VA-FPI's first centroid during training: `random` (a
        uniformly drawn eligible item, the paper) or `recent` (the most
        recent eligible item, what inference always uses: no train/serve
        skew in the clusters). Default `recent`: with max + global + logQ
        warm start, ml-100k validation HR@50 (seed 0) 0.490 -> 0.498.
      implicit_fields: shared user fields crossed with every implicit
        condition besides the condition itself (phi(u, c_j) of eq. 8): any
        of `pooled` (mean of the valid history items), `latest` (the most
        recent item); `[]` = the condition alone. Picked on ml-100k's
        validation carve (seed 0, best val HR@50: [] 0.394, [latest] 0.431,
        [pooled, latest] 0.440).
      sequence_layers: Transformer layers of a sequence encoder over the
        valid history items (recency embedded, attention over the items,
        read at the most recent one) whose summary joins the shared user
        fields of every kind (single, implicit and CR); 0 = none (the
        history enters as `pooled` and `latest` only). Default 1: ml-100k
        validation HR@50 (seed 0) single 0.484 -> 0.488, DCM (max) 0.485 ->
        0.495.
      sequence_length: recency positions the sequence encoder embeds (older
        items share the last one).
      mind_routing: `mind`: `original` (MIND's B2I routing: Gaussian
        routing logits accumulated over iterations, b_ij += c_j . S e_i,
        and K' = max(1, min(K, floor(log2 |history|))) interests per user)
        or `eq1` (this paper's eq. 1: Gaussian capsules, logits recomputed
        from them each iteration; its capsules end as one vector).
      dynamic_interests: `dcm`: MIND's per-user interest count K' (as
        above); the other clusters are masked.
      diversity_weight: implicit kinds: weight of an interest-diversity
        term added to the loss, `weight * sum over users of the mean over
        pairs of valid embeddings of relu(cos - diversity_margin)`, which
        pushes a user's embeddings apart where they are more alike than the
        margin (max association alone leaves them near-parallel: pairwise
        cosine 0.94-0.98). 0 = off.
      diversity_margin: the cosine above which the diversity term applies.
      global_loss_weight: implicit kinds with `global_interest`: weight of a
        second retrieval loss that trains the global embedding alone, as the
        single-embedding model is trained (every target, the same in-batch
        negatives and logQ correction), added to the association loss. 0 =
        off: the global embedding learns only where it wins the association.
      gumbel_temperature: temperature of the `gumbel` association.
      attention_dim: `sa`: hidden width of the self-attention.
      pfs_concepts: `pfs`: number of offline k-means item concepts.
      temperature: retrieval softmax temperature (scores are divided by it).
      frequency_buckets: hash buckets of the streaming frequency estimator
        (logQ correction).
      frequency_alpha: its moving-average rate for the gap between
        occurrences.
      max_item_topics: topics per item in the model's item features. An
        item with more distinct topics keeps its rarest: those the fewest
        items of the prepared item table carry, ties by the item's own
        order (`trainer.item_table.keep_rarest_topics`); the prepared files
        keep them all, and the manifest counts the items cut
        (`tables.items_topics_truncated`) as training.json does.
      dhen: the DHEN feature crossing.
    """

    kind: str = "dcm"
    embedding_dim: int = 32
    item_id_dim: int = 32
    topic_dim: int = 16
    categorical_dim: int = 8
    summarizer_hidden: int = 64
    item_dim: int = 32
    num_interests: int = 7
    num_explicit: int = 5
    routing_iterations: int = 3
    init: str = "va_fpi"
    single_assignment: bool = True
    validity_filter: bool = True
    routing_gradient: str = "last"
    association: str = "max"
    global_interest: bool = True
    first_centroid: str = "recent"
    implicit_fields: list[str] = dataclasses.field(default_factory=lambda: ["pooled", "latest"])
    sequence_layers: int = 1
    sequence_length: int = 50
    mind_routing: str = "original"
    dynamic_interests: bool = False
    diversity_weight: float = 0.0
    diversity_margin: float = 0.5
    global_loss_weight: float = 0.0
    gumbel_temperature: float = 1.0
    attention_dim: int = 32
    pfs_concepts: int = 32
    temperature: float = 0.05
    frequency_buckets: int = 1 << 20
    frequency_alpha: float = 0.01
    max_item_topics: int = 3
    dhen: DhenConfig = dataclasses.field(default_factory=DhenConfig)


@dataclasses.dataclass
class TrainConfig:
    """The training job (`python -m trainer.task`).

    Attributes:
      batch_size: global batch (split over replicas).
      learning_rate: Adam learning rate.
      epochs: maximum epochs; early stopping may end sooner.
      steps_per_epoch: 0 = one pass over the training records.
      validation_fraction: the last share (by target time) of the *training*
        records held out for early stopping and the tuning metric; 0 = none.
        The eval split is never read by the training job. A per-user carve
        (`validation_carve`) takes its own share; the fraction only turns it
        on (> 0) or off (0).
      validation_carve: which training records validate: `time` (the last
        `validation_fraction` by target time), `per_user` (each user's last
        `data.split.per_user_eval` training records, for users with more
        than that; the carve mirrors the `per_user` eval split, which on
        logs whose timestamps are positions a time carve does not) or
        `auto` (`per_user` with the `per_user` data split, else `time`).
        `validation_fraction=0` turns either off.
      validation_k: K of the monitored validation HR@K.
      validation_max_records: cap on validation records scored per epoch.
        A carve with more is sampled: a uniform random sample of this many
        records seeded by `train.seed`, the same every epoch
        (`trainer/validation.py`; training.json's `validation_set` says
        which records score).
      early_stopping_patience: epochs without a better validation HR@K.
      checkpoint_every_steps: BackupAndRestore save frequency (steps).
      log_every_steps: TensorBoard scalar frequency (steps).
      seed: weights, shuffling and sampling seed.
      negative_targets: what a training example whose target is a negative
        action (e.g. a MovieLens rating <= `data.negative_rating_max`)
        does in the loss: `positive` (trained like any target) or `skip`
        (weight 0: the user did not like it). Such targets stay eval
        targets (SPEC §6) and in-batch negatives of the other examples.
      logq_weight: w in the logQ correction: each in-batch candidate's
        logit minus w * log(its estimated sampling probability) (eq. 9, Yi
        et al. 2019: w = 1, the default). 0 = plain in-batch softmax, which
        pushes popular items down (they are negatives more often); w > 1
        corrects more, which ranks popular items higher. (TFRS clips the
        q^w it is given at 1e-6: the correction is at most log 1e6.)
      logq_warm_start: start the streaming frequency estimator (logQ
        correction) from the training records' target counts instead of a
        flat prior (TFRS clips the cold estimate; rare items then get
        nearly no correction for most of the first epoch). Default on:
        ml-100k validation HR@50 (seed 0) single 0.484 -> 0.487, DCM
        (argmax) 0.435 -> 0.453, and DCM reaches after one epoch what it
        reached after four.
    """

    batch_size: int = 256
    learning_rate: float = 0.003
    epochs: int = 1
    steps_per_epoch: int = 0
    validation_fraction: float = 0.05
    validation_carve: str = "auto"
    validation_k: int = 50
    validation_max_records: int = 5000
    negative_targets: str = "positive"
    logq_weight: float = 1.0
    logq_warm_start: bool = True
    early_stopping_patience: int = 2
    checkpoint_every_steps: int = 200
    log_every_steps: int = 50
    seed: int = 0


@dataclasses.dataclass
class MerConfig:
    """The whole resolved configuration.

    Attributes:
      name: a label for the config (presets set it to their own name).
      data: data preparation (`mer prepare`, `mer synthesize`).
      model: the model (`model.kind` and its modules).
      train: the training job.
    """

    name: str = "default"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def config_keys(cls: type = MerConfig, prefix: str = "") -> list[str]:
    """Every leaf key of the config, dotted (`train.learning_rate`), in field order."""
    hints = typing.get_type_hints(cls)
    keys = []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += config_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def config_flags() -> dict[str, str]:
    """Command-line flag names (without `--`) -> dotted config keys.

    Why: Vertex AI hyperparameter tuning passes each parameter as
    `--<parameterId>=<value>`, so every key is a flag (`train.learning_rate`)
    and a key whose last component is unique across the config also answers
    to it alone (`learning_rate`, `num_interests`). Ambiguous ones (`seed`,
    `num_shards`) need the dotted form.
    """
    keys = config_keys()
    counts = collections.Counter(key.rsplit(".", 1)[-1] for key in keys)
    flags = {key: key for key in keys}
    for key in keys:
        short = key.rsplit(".", 1)[-1]
        if counts[short] == 1:
            flags.setdefault(short, key)
    return flags


_CHOICES = {
    ("data", "source", "format"): ("synthetic", "generic", "ml-latest-small", "ml-100k"),
    ("data", "split", "mode"): ("quantile", "timestamp", "per_user"),
    ("data", "explicit_association"): ("source", "item"),
    ("model", "kind"): ("single", "dcm", "mind", "sa", "tokens", "pfs", "cr"),
    ("model", "init"): ("va_fpi", "fpi", "gaussian"),
    ("model", "association"): ("argmax", "gumbel", "max"),
    ("model", "first_centroid"): ("random", "recent"),
    ("model", "mind_routing"): ("original", "eq1"),
    ("train", "negative_targets"): ("positive", "skip"),
    ("train", "validation_carve"): ("auto", "time", "per_user"),
    ("model", "routing_gradient"): ("last", "all"),
    ("model", "implicit_fields"): ("pooled", "latest"),
}


def _build(cls: type, raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"config {'.'.join(path) or '<root>'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(
            f"config {'.'.join(path) or '<root>'}: unknown key(s) {unknown}; allowed: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, path + (name,))
    obj = cls(**kwargs)
    return obj


def _coerce(hint: Any, value: Any, path: tuple[str, ...]) -> Any:
    where = ".".join(path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"config {where}: expected a list, got {value!r}")
        return [_coerce(item, v, path) for v in value]
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ValueError(f"config {where}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"config {where}: expected {hint.__name__}, got {value!r}")
        try:
            coerced = hint(value)
        except (TypeError, ValueError):
            raise ValueError(f"config {where}: expected {hint.__name__}, got {value!r}") from None
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"config {where}: expected an integer, got {value!r}")
        return coerced
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"config {where}: expected a string, got {value!r}")
        value = str(value)
        allowed = _CHOICES.get(path)
        if allowed and value not in allowed:
            raise ValueError(f"config {where}: {value!r} is not one of {list(allowed)}")
        return value
    return value


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _at_least(low: int) -> tuple:
    return (lambda v: v >= low), f">= {low}"


_POSITIVE = ((lambda v: v > 0), "> 0")
_FRACTION = ((lambda v: 0 < v < 1), "in (0, 1)")
_SHARE = ((lambda v: 0 <= v <= 1), "in [0, 1]")

# Every numeric key and what it may hold (test_config checks none is missing):
# out-of-range values otherwise fail late, deep in Beam or Keras, or worse,
# run and produce nothing (a negative history length trains on empty histories).
_RANGES: dict[str, tuple] = {
    "data.source.item_vector_dim": _at_least(0),
    "data.synthetic.seed": _at_least(0),
    "data.synthetic.num_users": _at_least(1),
    "data.synthetic.num_items": _at_least(1),
    "data.synthetic.num_topics": _at_least(1),
    "data.synthetic.content_dim": _at_least(1),
    "data.synthetic.days": _at_least(1),
    "data.synthetic.start_timestamp": _at_least(0),
    "data.synthetic.events_per_day_core": _at_least(0),
    "data.synthetic.events_per_day_casual": _at_least(0),
    "data.synthetic.events_per_day_new": _at_least(0),
    "data.synthetic.explicit_share": _SHARE,
    "data.synthetic.negative_share": _SHARE,
    "data.synthetic.missing_feature_share": _SHARE,
    "data.synthetic.num_shards": _at_least(1),
    "data.split.quantile": _FRACTION,
    "data.split.timestamp": _at_least(0),
    "data.split.per_user_eval": _at_least(1),
    "data.history_length": _at_least(1),
    "data.min_history": _at_least(1),
    "data.negative_rating_max": ((lambda v: True), "a finite number"),
    "data.follow_min_share": _SHARE,
    "data.max_follows": _at_least(1),
    "data.num_shards": _at_least(1),
    "model.embedding_dim": _at_least(1),
    "model.item_id_dim": _at_least(1),
    "model.topic_dim": _at_least(1),
    "model.categorical_dim": _at_least(1),
    "model.summarizer_hidden": _at_least(1),
    "model.item_dim": _at_least(1),
    "model.num_interests": _at_least(1),
    "model.sequence_layers": _at_least(0),
    "model.sequence_length": _at_least(1),
    "model.num_explicit": _at_least(1),
    "model.routing_iterations": _at_least(1),
    "model.gumbel_temperature": _POSITIVE,
    "model.diversity_weight": _at_least(0),
    "model.diversity_margin": ((lambda v: -1 <= v <= 1), "in [-1, 1]"),
    "model.global_loss_weight": _at_least(0),
    "model.attention_dim": _at_least(1),
    "model.pfs_concepts": _at_least(1),
    "model.temperature": _POSITIVE,
    "model.frequency_buckets": _at_least(1),
    "model.frequency_alpha": ((lambda v: 0 < v <= 1), "in (0, 1]"),
    "model.max_item_topics": _at_least(1),
    "model.dhen.field_dim": _at_least(1),
    "model.dhen.transformer_layers": _at_least(1),
    "model.dhen.transformer_heads": _at_least(1),
    "model.dhen.transformer_ff_dim": _at_least(1),
    "model.dhen.mlp1_hidden": _at_least(1),
    "model.dhen.masknet_blocks": _at_least(1),
    "model.dhen.masknet_hidden": _at_least(1),
    "model.dhen.masknet_projection_ratio": _POSITIVE,
    "model.dhen.mlp2_hidden": _at_least(1),
    "model.dhen.output_dim": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.learning_rate": _at_least(0),  # 0 freezes the weights (used by the resume tests)
    "train.logq_weight": _at_least(0),
    "train.epochs": _at_least(1),
    "train.steps_per_epoch": _at_least(0),
    "train.validation_fraction": ((lambda v: 0 <= v < 1), "in [0, 1)"),
    "train.validation_k": _at_least(1),
    "train.validation_max_records": _at_least(1),
    "train.early_stopping_patience": _at_least(0),
    "train.checkpoint_every_steps": _at_least(1),
    "train.log_every_steps": _at_least(1),
    "train.seed": _at_least(0),
}
_DAY = 86_400


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{dotted key: value}` of every leaf of a config dataclass."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value, f"{prefix}{field.name}."))
        else:
            out[prefix + field.name] = value
    return out


IMPLICIT_KINDS = ("dcm", "mind", "sa", "tokens", "pfs")


def validate(cfg: MerConfig) -> MerConfig:
    """Checks every value of a resolved config, and the settings that contradict each other.

    Why up front: a bad value otherwise runs anyway (a timestamp split with no
    timestamp trains on nothing and exits 0) or ends in a traceback deep in
    Beam or Keras.

    Returns:
      `cfg`, unchanged.

    Raises:
      ValueError: one line naming each bad key, its value and what is allowed.
    """
    values = _leaves(cfg)
    problems = []
    for key, value in values.items():
        allowed = _CHOICES.get(tuple(key.split(".")))
        if allowed:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in allowed]
            if bad:
                problems.append(f"{key}={value!r}: expected one of {list(allowed)}")
        rule = _RANGES.get(key)
        if rule is None:
            continue
        ok, text = rule
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}={value!r}: expected a number {text}")
        elif not math.isfinite(value) or not ok(value):
            problems.append(f"{key}={value!r}: expected {text}")
    split, synthetic = cfg.data.split, cfg.data.synthetic
    if split.mode == "timestamp" and split.timestamp <= 0:
        problems.append(f"data.split.timestamp={split.timestamp}: data.split.mode=timestamp needs the cutoff "
                        "(unix seconds > 0), or use data.split.mode=quantile")
    elif (split.mode == "timestamp" and cfg.data.source.format == "synthetic" and synthetic.days >= 1
          and not synthetic.start_timestamp < split.timestamp < synthetic.start_timestamp + synthetic.days * _DAY):
        end = synthetic.start_timestamp + synthetic.days * _DAY
        problems.append(f"data.split.timestamp={split.timestamp}: outside the synthetic world "
                        f"({synthetic.start_timestamp} .. {end}, data.synthetic.start_timestamp + days), "
                        "so the train or the eval split would be empty")
    if cfg.model.global_loss_weight > 0 and not (cfg.model.global_interest and cfg.model.kind in IMPLICIT_KINDS):
        problems.append(f"model.global_loss_weight={cfg.model.global_loss_weight}: trains the global interest "
                        f"embedding, which needs model.global_interest=true and an implicit model.kind "
                        f"({', '.join(IMPLICIT_KINDS)}); got global_interest={cfg.model.global_interest}, "
                        f"kind={cfg.model.kind!r}")
    if problems:
        raise ValueError("config " + "; ".join(problems))
    return cfg


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _config_file(name_or_path: str) -> pathlib.Path | None:
    """The file a path-like `--config` names; None for a preset name.

    Raises:
      FileNotFoundError: it looks like a path (a suffix or a directory part)
        and no such file exists.
      ValueError: the file's extension is not YAML or JSON.
    """
    path = pathlib.Path(name_or_path)
    if path.suffix not in CONFIG_SUFFIXES and len(path.parts) < 2:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {name_or_path}")
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {name_or_path}: unknown extension {path.suffix!r}; allowed: "
                         f"{' '.join(CONFIG_SUFFIXES)}")
    return path


def _read_config_file(path: pathlib.Path) -> dict[str, Any]:
    """A YAML or JSON config file as a dict; a syntax error is one line naming the file."""
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"config file {path}: not valid {kind}: {' '.join(str(err).split())}") from None
    return raw or {}


def _override_value(key: str, value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"override {key}={value}: not a YAML value: {' '.join(str(err).split())}") from None


def resolve_config_path(name_or_path: str) -> pathlib.Path:
    """Maps a preset name (`synthetic-small`) or a path to a YAML or JSON file."""
    path = _config_file(name_or_path)
    if path is not None:
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r}: no such file or preset; presets: {presets}")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> MerConfig:
    """Loads a preset/YAML file and applies `section.key=value` overrides.

    Args:
      name_or_path: preset name from `trainer/configs/` or a YAML/JSON path; None = defaults.
      overrides: e.g. `["data.history_length=20"]`; values are parsed as YAML.

    Returns:
      The resolved `MerConfig`.

    Raises:
      FileNotFoundError: no such config file or preset.
      ValueError: unknown key, wrong type, a value outside the allowed set or
        range, contradictory settings (see `validate`), or a malformed file.
    """
    raw: dict[str, Any] = {}
    if name_or_path:
        path = resolve_config_path(name_or_path)
        raw = _read_config_file(path)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), _override_value(key.strip(), value))
    return validate(_build(MerConfig, raw, ()))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: MerConfig) -> str:
    """The resolved config as YAML, to be written next to an artifact."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
