"""The exceptions hub code raises; each carries the text the client is told.

``HubError`` is the root. Raise it (or a subclass) from a hub method to send its message to the
caller in the error completion, as ASP.NET Core does for ``HubException``. Any other exception
becomes a generic error whose details stay in the server log.
"""

from __future__ import annotations


class HubError(Exception):
    """An error whose message is safe to show to the client."""

    def __init__(self, message: str = "The hub method failed.") -> None:
        super().__init__(message)
        self.message = message


class HubDenied(HubError):
    """The caller is not allowed to do this (not authenticated, not the owner, bad origin)."""

    def __init__(self, message: str = "Unauthorized.") -> None:
        super().__init__(message)


class ServerBusy(HubError):
    """Admission control refused a connection (``hubs.admission``): the client may try again in
    ``retry_after`` seconds, which its message says too."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(f"{message} Retry after {retry_after} s.")
        self.retry_after = retry_after


class InvalidArguments(HubError):
    """The arguments of an invocation are of the wrong type or shape."""


class UnexpectedError(HubError):
    """An unexpected exception, already logged, that the client hears about by its error id only.

    Raise it ``from`` the original exception (``hubs.diagnostics.DiagnosticFilter`` does):
    the hub then answers the caller with its generic error plus ``Error id: <error_id>.`` (and the
    original's type and text with ``ENABLE_DETAILED_ERRORS``), counts the invocation with outcome
    ``error``, and does not log it again.
    """

    def __init__(self, error_id: str) -> None:
        super().__init__(f"An unexpected error occurred on the server. Error id: {error_id}.")
        self.error_id = error_id


# The name SignalR users look for.
HubException = HubError
