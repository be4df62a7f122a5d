"""The retrieval service's settings (one dataclass, flags map onto it)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RetrievalConfig:
    """How the retrieval service answers.

    Attributes:
      export_dir: the `mer export` base (models, indexes, models.config).
      model_server: `host:port` of the TF Serving (or embedded) model server.
      deadline_ms: per request, for the tower calls (UNAVAILABLE /
        DEADLINE_EXCEEDED past it).
      default_budget: candidates when the request says 0 (paper: 1000).
      max_budget: larger budgets are INVALID_ARGUMENT.
      max_history: longer histories are INVALID_ARGUMENT (the towers use
        the most recent `history_length` of what is sent).
      max_topics: more followed topics are INVALID_ARGUMENT.
      max_id_length: longer item ids / topics are INVALID_ARGUMENT.
      num_explicit: K_ex, followed topics sampled per request.
      merge_policy: `round_robin` (paper) or `score`.
      score_floor: `score` policy: candidates each embedding is guaranteed.
      exact_topic_max_items: explicit embeddings whose condition topic has
        no own index (`mer build-index` gives one to topics of >= 20,000
        items) and is carried by at most this many items are scored exactly
        over those items (the relevance filter as a restricted exact
        search); larger topics without an own index go through ScaNN +
        post-filter. A topic index that comes back short is replaced by
        the exact search too. Those topics' embeddings are gathered when
        an index version loads and kept, up to the size of the index's
        embedding table (so the explicit index may take up to twice its
        table's memory).
      overfetch: ScaNN depth of explicit embeddings of large topics without
        an own index, as a multiple of budget + history; a list still short
        after the relevance filter is scored exactly over its topic's items.
        Implicit lists fetch budget + history, which is always enough.
      index_poll_seconds: how often new index versions are looked for.
    """

    export_dir: str
    model_server: str = "127.0.0.1:8500"
    deadline_ms: int = 2000
    default_budget: int = 1000
    max_budget: int = 10_000
    max_history: int = 1000
    max_topics: int = 1000
    max_id_length: int = 1024
    num_explicit: int = 5
    merge_policy: str = "round_robin"
    score_floor: int = 10
    overfetch: float = 3.0
    exact_topic_max_items: int = 100_000
    index_poll_seconds: float = 2.0
