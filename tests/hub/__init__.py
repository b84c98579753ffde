"""Loopback fake of the Hugging Face and ModelScope hubs for tests (stdlib only)."""

from .faults import Faults
from .server import HF, MS, LocalHub, RequestRecord, make_file
from .store import FileEntry

__all__ = ["HF", "MS", "FileEntry", "Faults", "LocalHub", "RequestRecord", "make_file"]
