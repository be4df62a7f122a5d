"""Serving stage (SPEC §2.5): a TF-Serving-protocol model server
(`model_server.py`), the multi-embedding retrieval service
(`retrieval_server.py`, `retrieval.py`, proto in `protos/`), its Python
client (`client.py`) and `mer serve` / `mer query` (`main.py`).

It reads the export's artifacts (SavedModels, ScaNN indexes) and never
imports `trainer/`.
"""
