"""Per-source downloaders: each module here that defines a Downloader subclass is a source (see factory.py)."""
