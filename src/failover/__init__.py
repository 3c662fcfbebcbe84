"""The runbook's failover command (``python -m src.failover.failover_controller ...``), run from the repository
root: a thin entry point onto ``modelserve regions failover``. Not part of the installed package."""
