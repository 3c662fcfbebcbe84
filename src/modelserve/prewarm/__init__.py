"""Predictive pre-warming: policies that load models ahead of their traffic, and the simulator that
replays traces against them (docs/PREWARM.md)."""
