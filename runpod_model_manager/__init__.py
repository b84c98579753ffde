"""Core of runpod-model-manager: CLI, cache layout, transfer engine, locks and lock file."""

__version__ = "0.1.0"
