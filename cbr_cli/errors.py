"""The one exception type cbr raises to its users.

Library code raises :class:`CbrError` with a message that names the parameter,
key, flag or file and what was expected; ``cbr_cli.cli.app`` turns it into a
one-line ``error: ...`` on stderr and a non-zero exit code, in one place.
"""

from __future__ import annotations


class CbrError(Exception):
    """A user-facing error: bad argument, bad config, unreadable file, ...

    Parameters
    ----------
    message : str
        One line saying what is wrong and where (parameter, key path or file).
    exit_code : int
        Process exit code the CLI uses for it (2 for usage/config errors,
        1 for failures while running).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
