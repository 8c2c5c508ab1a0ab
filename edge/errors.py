"""Exceptions of the edge package.

Every exception raised on purpose by the edge derives from ``EdgeError``.
Third-party exceptions (aiohttp client errors, ``OSError`` from storage)
are converted into these at one boundary each: ``edge.origin`` for the
origin client and ``edge.storage`` for the cache directory.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of the edge's exceptions; the message says what went wrong."""


class ConfigError(EdgeError):
    """A configuration file is missing, unreadable or invalid.

    ``str()`` is one line naming the file, the key and the problem, fit
    to print to an operator without a traceback.
    """

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}")


class OriginError(EdgeError):
    """The origin could not give a usable response."""

    status = 502


class OriginUnreachableError(OriginError):
    """No connection to the origin could be made (refused, DNS, TLS)."""

    status = 502


class OriginTimeoutError(OriginError):
    """The origin did not answer in time."""

    status = 504


class OriginProtocolError(OriginError):
    """The origin's reply was malformed: bad framing, oversized headers."""

    status = 502


class OriginOutOfStepError(OriginProtocolError):
    """A pooled connection failed before any reply: closed, or bytes
    that do not start a response (left over from a previous reply that
    sent more than it declared)."""

    status = 502


class StorageError(EdgeError):
    """The cache directory could not be read or written."""


class PurgeRequestError(EdgeError):
    """A purge request names nothing this edge can purge: no site of
    its, a malformed URL or body, or a prefix with a dot segment."""
