"""The click commands of `download-models`, one module per command; download_models.py dispatches to them.

This is the top layer: it wires the core (runpod_model_manager) to the plugins (downloaders/, projects/).
"""
