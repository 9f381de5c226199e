"""The package's one exception family: every error it raises on purpose carries a one-line message for people, the
HTTP status a request refused with it is answered with, and the exit code a command that stops on it ends with."""


class CifarlabError(Exception):
    """Base of the package's errors (tests/test_layout.py checks every exception class derives from it)."""

    status = 400    # HTTP status of a request refused with it
    exit_code = 2   # exit status of a command that stops on it

    def __init__(self, message="", status=None, exit_code=None):
        super().__init__(message)
        self.message = str(message)
        if status is not None:
            self.status = status
        if exit_code is not None:
            self.exit_code = exit_code
