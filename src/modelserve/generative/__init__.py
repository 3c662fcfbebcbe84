"""Generative models: the CPU engine with continuous batching, its scheduler, sampling and token counts.

Nothing here knows of HTTP; torch and transformers are imported only when an engine is built.
"""
