"""What the transfer engine reports while it works: its own module, so that the reporters (and with them
every command's start-up) need not import the engine and its HTTP stack."""

from __future__ import annotations


class Progress:
    """What the engine reports; the CLI's reporters override what they show. Called from worker threads."""

    def file_started(self, label: str, size: int, already: int) -> None: ...

    def advance(self, label: str, nbytes: int) -> None: ...

    def file_done(self, label: str, transferred: int) -> None: ...

    def note(self, message: str) -> None: ...

    def planned(self, files: int, nbytes: int) -> None:
        """What the run is about to fetch, in all (called once, before the first file starts)."""
