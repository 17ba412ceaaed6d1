"""The exceptions crm raises: one hierarchy under :class:`CrmError`.

Every error a crm call can end in is a ``CrmError``; the subclasses say what the
caller can do about it. ``code`` is a stable snake_case name (the same codes the
HTTP API puts in its problem details). Messages never carry secrets or database
text.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = [
    "CrmError",
    "FieldError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "UnauthorizedError",
    "ForbiddenError",
    "RateLimitedError",
    "IntegrationError",
    "WebhookVerificationError",
]


class CrmError(Exception):
    """Base of every crm error. ``code`` is e.g. ``internal_error`` or
    ``configuration_error`` when no subclass applies."""

    code: str

    def __init__(self, message: str = "crm error", code: str = "internal_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class FieldError(NamedTuple):
    """One invalid input field, named as the caller spelled it (``email``, ``tags[1]``)."""

    field: str
    message: str


class ValidationError(CrmError):
    """The input was refused and nothing was written; ``errors`` lists every bad field."""

    errors: List[FieldError]

    def __init__(
        self,
        message: str = "invalid input",
        errors: Sequence[Union[FieldError, Tuple[str, str]]] = (),
    ) -> None:
        super().__init__(message, "validation_failed")
        self.errors = [FieldError(*e) for e in errors]


class NotFoundError(CrmError):
    """The entity (``entity``: ``lead``, ``api_key``, …) does not exist in this workspace."""

    def __init__(self, message: str = "not found", entity: str = "") -> None:
        super().__init__(message, "not_found")
        self.entity = entity


class ConflictError(CrmError):
    """The write would break a uniqueness rule (``code`` ``conflict``; ``existing_id``
    is the entity already there, when there is one, and ``field`` the field that
    clashed), or the entity's state allows no such change (``code`` names it:
    ``key_revoked``, a revoked API key is frozen; ``key_rotated``, a key is rotated
    once; ``quota_exceeded``, the workspace is at its quota)."""

    def __init__(
        self,
        message: str = "conflict",
        existing_id: Optional[str] = None,
        field: Optional[str] = None,
        code: str = "conflict",
    ) -> None:
        super().__init__(message, code)
        self.existing_id = existing_id
        self.field = field


class UnauthorizedError(CrmError):
    """Missing or bad credentials. ``reason``: ``malformed_key``, ``unknown_key``,
    ``revoked_key``, ``expired_key``, ``malformed_token``, ``invalid_token``,
    ``invalid_credentials`` (a login never says more than that) or
    ``email_not_verified`` (the password was right; the app requires a verified
    email)."""

    def __init__(self, message: str = "unauthorized", reason: str = "unauthorized") -> None:
        super().__init__(message, "unauthorized")
        self.reason = reason


class ForbiddenError(CrmError):
    """Valid credentials without the right to do this (a missing scope, say)."""

    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message, "forbidden")


class RateLimitedError(CrmError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, message: str = "rate limited", retry_after: float = 0.0) -> None:
        super().__init__(message, "rate_limited")
        self.retry_after = retry_after


class IntegrationError(CrmError):
    """A third-party provider (Discord, Telegram, Resend, WhatsApp, OpenAI) failed."""

    def __init__(self, message: str = "integration failed") -> None:
        super().__init__(message, "integration_failed")


class WebhookVerificationError(CrmError):
    """A webhook signature did not verify, whatever was wrong with it. ``kind``:
    ``missing_header``, ``timestamp`` or ``signature``."""

    def __init__(
        self, message: str = "webhook verification failed", kind: str = "signature"
    ) -> None:
        super().__init__(message, "webhook_verification_failed")
        self.kind = kind
