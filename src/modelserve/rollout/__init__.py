"""Progressive rollout of a model version with automatic rollback, within one server.

``analysis`` holds the plain logic (the traffic split, the check of a window), ``window`` reads a
version's counters, ``controller`` runs each model's rollout as a stored state machine, ``store``,
``schema`` and ``migrations`` keep it in the database. The HTTP routes are ``protocol/rollouts.py``;
the command line is ``modelserve rollout`` (``cli``).
"""
