"""Loaded models: their resolved specs, states, statistics and the manager that owns them."""
