"""The runbook's replication commands (``python -m src.replication.model_replicator ...``), run from the
repository root: thin entry points onto ``modelserve regions``. Not part of the installed package."""
