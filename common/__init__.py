"""What several stages share, below all of them (SPEC §7).

`common/` imports none of `beam/`, `trainer/`, `export/` or `serving/`, so
`serving/` can use the serving merge and the export layout without pulling
in the trainer.
"""
