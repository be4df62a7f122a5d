"""Export stage (SPEC §2.4): TF Serving SavedModels and the ScaNN index.

Not built yet: `mer export` says so. It will read the trainer's artifacts
(checkpoints, item table, vocabularies) and never import `beam/`.
"""
