"""The `mer` command line."""
