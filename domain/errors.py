"""Domain errors: the base class every decision error derives from.

Each error carries a stable machine-readable ``code``; the API layer maps error
classes to HTTP statuses in one place and never invents codes of its own.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused by a domain rule."""

    code: str = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(DomainError):
    code = "not_found"


class ValidationError(DomainError):
    code = "invalid_request"


class GoneError(DomainError):
    """The resource existed and was erased: what it held can no longer be read or changed."""

    code = "gone"


class ConflictError(DomainError):
    """Another command changed the aggregate first; nothing was written."""

    code = "conflict"
