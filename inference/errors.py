"""Errors the handler returns to the caller as `{"error": message}`; each message is one sentence."""


class InputError(ValueError):
    """The request cannot be served as given (bad field, unreadable or oversized audio, refused URL)."""


class ModelUnavailableError(RuntimeError):
    """A model the task needs is not in the cache this worker reads."""
