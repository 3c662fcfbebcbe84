"""The composition root and the services it hands to the protocols."""
