"""The export layout and serving signatures: what `export/` writes and
`serving/` reads (the serving half of the feature contract).

Layout under an export base directory (TF Serving's `--model_base_path`
convention, one directory per model, integer versions):

  <base>/models.config                 ModelServerConfig text proto
  <base>/batching_parameters.txt       BatchingParameters text proto
  <base>/monitoring.config             MonitoringConfig text proto
  <base>/<model>/<version>/            SavedModel (saved_model.pb, variables/,
                                       assets/ vocabularies,
                                       assets.extra/tf_serving_warmup_requests)
  <base>/index/<retriever>/<version>/  ScaNN index of that retriever's items:
      scann/                           the serialised searcher
      items.txt                        row -> item id (one per line)
      topics.txt                       row -> the item's topics, '|'-joined
      build.json                       the build config
      recall.json                      recall@k against exact search
  <base>/embeddings/<retriever>/<version>/  sharded (item id, embedding) TFRecords

Retrievers: `implicit` (DCM/MIND/... user tower + its item tower) and
`explicit` (the CR user tower + its item tower).
"""

from __future__ import annotations

IMPLICIT = "implicit"
EXPLICIT = "explicit"
RETRIEVERS = (IMPLICIT, EXPLICIT)

USER_MODEL = {IMPLICIT: "user_implicit", EXPLICIT: "user_explicit"}
ITEM_MODEL = {IMPLICIT: "item_implicit", EXPLICIT: "item_explicit"}

SIGNATURE = "serving_default"

# user_* signature inputs
HISTORY_ITEM_IDS = "history_item_ids"  # string [B, L], "" = padding, most recent last
HISTORY_NEGATIVE = "history_negative"  # int64 [B, L], 1 = negative action
TOPICS = "topics"  # string [B, K_ex], "" = none (user_explicit only)
# item_* signature input
ITEM_IDS = "item_ids"  # string [B]

# outputs
EMBEDDINGS = "embeddings"  # float32 [B, K, d] (user) / [B, d] (item)
IMPORTANCE = "importance"  # float32 [B, K]
MASK = "mask"  # bool [B, K]

SAVED_MODEL = "saved_model.pb"
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
MONITORING_CONFIG = "monitoring.config"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

INDEX_DIR = "index"
EMBEDDINGS_DIR = "embeddings"
INDEX_SEARCHER = "scann"
INDEX_ITEMS = "items.txt"
INDEX_TOPICS = "topics.txt"
INDEX_BUILD = "build.json"
INDEX_RECALL = "recall.json"


def join(*parts: str) -> str:
    """Joins path parts with '/' (local paths and gfile URIs alike)."""
    head, *rest = parts
    return "/".join([head.rstrip("/"), *[p.strip("/") for p in rest]])


def versions(root: str, marker: str) -> list[int]:
    """The complete versions under `root`: integer directories holding
    `marker` (`saved_model.pb` for a model, `build.json` for an index).
    Temporary `.tmp-*` siblings and half-written versions are not listed."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(root):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(root))
    return sorted(int(n) for n in names if n.isdigit() and tf.io.gfile.exists(join(root, n, marker)))


def model_versions(base: str, model: str) -> list[int]:
    """Exported versions of `<base>/<model>/`."""
    return versions(join(base, model), SAVED_MODEL)


def latest_model_version(base: str, model: str) -> int:
    """The newest exported version of `<base>/<model>/`.

    Raises:
      FileNotFoundError: none exported.
    """
    found = model_versions(base, model)
    if not found:
        raise FileNotFoundError(f"{join(base, model)}: no exported version (run `mer export`)")
    return found[-1]


def index_dir(base: str, retriever: str, version: int) -> str:
    return join(base, INDEX_DIR, retriever, str(version))


def embeddings_dir(base: str, retriever: str, version: int) -> str:
    return join(base, EMBEDDINGS_DIR, retriever, str(version))
