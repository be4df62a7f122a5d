"""Serving stage (SPEC §2.5): model server, retrieval service, client.

Not built yet: `mer serve` says so. It must not import `trainer/` model code.
"""
