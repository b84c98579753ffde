"""Errors a user can cause or fix. Their message is one sentence that is shown as is, never a traceback."""


class UserError(Exception):
    """Bad input or environment: shown as one line, exit code 2."""

    exit_code = 2


class ModelError(Exception):
    """One model could not be resolved or downloaded; the others go on, exit code 1."""

    exit_code = 1

    def __init__(self, model: str, message: str):
        super().__init__(f"{model}: {message}")
        self.model = model
        self.reason = message


class TransferError(Exception):
    """A file could not be transferred after all retries (message names the file)."""
