"""Projects: each module here that defines a BaseProject subclass is registered (see loader.py)."""
