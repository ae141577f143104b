"""Trained digits weights (float16 state dicts, official layout) and their sidecar record."""
