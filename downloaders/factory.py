"""Source name -> downloader class: the modules of this package plus `runpod_model_manager.downloaders` entry points."""

from __future__ import annotations

import functools
import sys

from runpod_model_manager.errors import UserError
from runpod_model_manager.plugins import discover
from runpod_model_manager.source import Downloader

ENTRY_POINT_GROUP = "runpod_model_manager.downloaders"


def _warn(message: str) -> None:
    print(f"warning: downloader {message}", file=sys.stderr)


@functools.cache
def downloader_classes() -> dict[str, type[Downloader]]:
    classes: dict[str, type[Downloader]] = {}
    for cls in discover("downloaders", Downloader, ENTRY_POINT_GROUP, _warn):
        classes.setdefault(cls.source, cls)
    return classes


def available_sources() -> list[str]:
    return sorted(downloader_classes())


def get_downloader_class(source: str) -> type[Downloader]:
    """The class for `source`; a clear error if it is unknown or its library is not installed."""
    try:
        cls = downloader_classes()[source]
    except KeyError:
        raise UserError(f"unknown source '{source}': use one of {', '.join(['auto', *available_sources()])}.") from None
    if not cls.is_available():
        raise UserError(cls.install_hint())
    return cls
