"""Export stage (SPEC §2.4): trained models -> TF Serving SavedModels
(`exporter.py`, `towers.py`, `serving_files.py`, `validation.py`) and the
ScaNN index of the item embeddings (`build_index.py` over
`common/item_index.py`; the
embeddings come from `beam/embed_items.py`).

Reads the trainer's artifacts (`<model_dir>/artifacts/`, checkpoints),
never the prepared data directory.
"""
