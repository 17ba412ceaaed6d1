"""The exceptions crm raises: one hierarchy under :class:`CrmError`.

Every error a crm call can end in is a ``CrmError``; the subclasses say what the
caller can do about it. ``code`` is a stable snake_case name (the same codes the
HTTP API puts in its problem details). Messages never carry secrets or database
text.

Each error also knows its HTTP rendering, the one crm's HTTP router (crm-http)
gives the same error: ``status`` is the HTTP status, ``to_problem()`` the RFC 9457
problem details body and ``http_headers()`` the headers that go with it
(``Retry-After``, ``WWW-Authenticate``). :mod:`crm.fastapi` serves them.
"""

import math
from http import HTTPStatus
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

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


#: The reason phrases crm-http's titles use (the ``http`` crate's), where Python's
#: differ or are missing (``422 Unprocessable Content`` from Python 3.13 on).
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

#: The status of a plain ``CrmError`` by its code (the subclasses have their own).
_CODE_STATUS = {
    "provider_error": 422,
    "configuration_error": 503,
    "body_too_large": 413,
    "file_too_large": 413,
    "unsupported_media_type": 415,
    "storage_unavailable": 503,
}

#: What a 5xx problem says, by code: never the error's own text, which is for logs.
_SERVER_DETAIL = {
    "configuration_error": "this server is not configured for this request",
    "integration_failed": "a third-party provider failed",
    "storage_unavailable": "the file storage is unavailable; nothing was written",
}


def _title(status: int) -> str:
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem(status: int, code: str, detail: str) -> Dict[str, Any]:
    """A problem body in crm-http's field order (``type``, ``title``, ``status``,
    ``detail``, ``code``, then the optional members)."""
    return {"type": "about:blank", "title": _title(status), "status": status, "detail": detail, "code": code}


class CrmError(Exception):
    """Base of every crm error. ``code`` is e.g. ``internal_error`` or
    ``configuration_error`` when no subclass applies.

    ``status`` is the HTTP status crm-http answers the error with: fixed per
    subclass; for a plain ``CrmError`` by its code (``provider_error`` 422, the
    provider refused the request; ``file_too_large`` 413; ``unsupported_media_type``
    415, the file's sniffed type is not allowed; ``configuration_error`` and
    ``storage_unavailable`` 503; anything else 500).
    """

    code: str
    #: The HTTP status of the error (the class's; a plain ``CrmError``'s by its code).
    status: int = 500

    def __init__(self, message: str = "crm error", code: str = "internal_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        own = type(self).status
        self.status = _CODE_STATUS.get(code, own) if own == CrmError.status else own

    def _detail(self) -> str:
        """The ``detail`` of the problem: the message for a 4xx, a fixed sentence for
        a 5xx (whose message is for logs only)."""
        if self.status >= 500:
            return _SERVER_DETAIL.get(self.code, "internal error")
        return self.message

    def to_problem(self) -> Dict[str, Any]:
        """The RFC 9457 problem details body crm-http serves for this error:
        ``type`` (``about:blank``), ``title`` (the status's reason phrase),
        ``status``, ``detail``, ``code``, and per kind ``errors`` (a list of
        ``{field, message}``), ``existing_id`` or ``retry_after`` (whole seconds).
        Never a secret, and a 5xx never says more than its kind."""
        return _problem(self.status, self.code, self._detail())

    def http_headers(self) -> Dict[str, str]:
        """Headers an HTTP response of this error carries besides its content type
        (``Retry-After`` for a rate limit, ``WWW-Authenticate`` for a challenge)."""
        return {}


#: What a 401 says about each refusal reason (crm-http's words; a login never says
#: more than "invalid credentials").
_REASON_DETAIL = {
    "malformed_key": "malformed API key",
    "unknown_key": "unknown API key",
    "revoked_key": "revoked API key",
    "expired_key": "expired API key",
    "malformed_token": "malformed token",
    "invalid_token": "invalid or expired token",
    "invalid_credentials": "invalid credentials",
    "email_not_verified": "email not verified",
    "invalid_link": "invalid or expired link",
    "jwt_malformed": "malformed JWT",
    "jwt_algorithm": "JWT algorithm not accepted",
    "jwt_signature": "JWT signature does not verify",
    "jwt_expired": "expired JWT",
    "jwt_not_yet_valid": "JWT not valid yet",
    "jwt_issuer": "JWT from another issuer",
    "jwt_audience": "JWT for another audience",
    "jwt_unknown_key": "JWT signed with an unknown key",
    "jwt_claims": "JWT claims missing or invalid",
}


class FieldError(NamedTuple):
    """One invalid input field, named as the caller spelled it (``email``, ``tags[1]``)."""

    field: str
    message: str


class ValidationError(CrmError):
    """The input was refused and nothing was written; ``errors`` lists every bad field
    (HTTP 422)."""

    status = 422
    errors: List[FieldError]

    def __init__(
        self,
        message: str = "invalid input",
        errors: Sequence[Union[FieldError, Tuple[str, str]]] = (),
    ) -> None:
        super().__init__(message, "validation_failed")
        self.errors = [FieldError(*e) for e in errors]

    def to_problem(self) -> Dict[str, Any]:
        body = super().to_problem()
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class NotFoundError(CrmError):
    """The entity (``entity``: ``lead``, ``api_key``, …) does not exist in this
    workspace (HTTP 404)."""

    status = 404

    def __init__(self, message: str = "not found", entity: str = "") -> None:
        super().__init__(message, "not_found")
        self.entity = entity


class ConflictError(CrmError):
    """The write would break a uniqueness rule (``code`` ``conflict``; ``existing_id``
    is the entity already there, when there is one, and ``field`` the field that
    clashed), or the entity's state allows no such change (``code`` names it:
    ``key_revoked``, a revoked API key is frozen; ``key_rotated``, a key is rotated
    once; ``quota_exceeded``, the workspace is at its quota; ``confirmation_required``,
    a lead with a timeline deleted over HTTP without ``confirm``). HTTP 409; the problem
    names the clashing ``field`` in ``errors`` and carries ``existing_id``."""

    status = 409

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

    def to_problem(self) -> Dict[str, Any]:
        body = super().to_problem()
        if self.field:
            body["errors"] = [{"field": self.field, "message": self.message}]
        if self.existing_id:
            body["existing_id"] = self.existing_id
        return body


class UnauthorizedError(CrmError):
    """Missing or bad credentials. ``reason``: ``malformed_key``, ``unknown_key``,
    ``revoked_key``, ``expired_key``, ``malformed_token``, ``invalid_token``,
    ``invalid_credentials`` (a login never says more than that),
    ``email_not_verified`` (the password was right; the app requires a verified
    email), ``invalid_link`` (a download link malformed, forged or expired), or for
    an external JWT ``jwt_malformed``, ``jwt_algorithm``, ``jwt_signature``,
    ``jwt_expired``, ``jwt_not_yet_valid``, ``jwt_issuer``, ``jwt_audience``,
    ``jwt_unknown_key``, ``jwt_claims``; from :mod:`crm.fastapi` also
    ``missing_credentials`` (the request carried no key or token where ``field``
    names it).

    HTTP 401. The problem's ``detail`` says what was wrong with a key or token (a
    login only "invalid credentials") and never the reason code itself.
    ``challenge``, when set, is the ``WWW-Authenticate`` value to answer with
    (``Bearer`` for a route that takes an API key)."""

    status = 401
    #: The ``WWW-Authenticate`` challenge of the response, if any.
    challenge: Optional[str] = None

    def __init__(
        self,
        message: str = "unauthorized",
        reason: str = "unauthorized",
        *,
        field: Optional[str] = None,
    ) -> None:
        super().__init__(message, "unauthorized")
        self.reason = reason
        self.field = field

    def _detail(self) -> str:
        if self.field:
            return f"{self.field}: {self.message}"
        return _REASON_DETAIL.get(self.reason, self.message)

    def to_problem(self) -> Dict[str, Any]:
        body = super().to_problem()
        if self.field:
            body["errors"] = [{"field": self.field, "message": self.message}]
        return body

    def http_headers(self) -> Dict[str, str]:
        return {"WWW-Authenticate": self.challenge} if self.challenge else {}


class ForbiddenError(CrmError):
    """Valid credentials without the right to do this (a missing scope, say): HTTP
    403. ``code`` is ``forbidden``, or from :mod:`crm.fastapi` ``csrf_failed`` (a
    state-changing session request from a foreign origin, ``field`` ``Origin``)."""

    status = 403

    def __init__(
        self, message: str = "forbidden", *, code: str = "forbidden", field: Optional[str] = None
    ) -> None:
        super().__init__(message, code)
        self.field = field

    def _detail(self) -> str:
        if self.field:
            return f"{self.field}: {self.message}"
        if self.code == "forbidden":
            return "the credential does not allow this action"
        return self.message

    def to_problem(self) -> Dict[str, Any]:
        body = super().to_problem()
        if self.field:
            body["errors"] = [{"field": self.field, "message": self.message}]
        return body


class RateLimitedError(CrmError):
    """Too many attempts; try again after ``retry_after`` seconds (HTTP 429, with
    ``Retry-After`` in whole seconds, rounded up)."""

    status = 429

    def __init__(self, message: str = "rate limited", retry_after: float = 0.0) -> None:
        super().__init__(message, "rate_limited")
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` in whole seconds, rounded up (what ``Retry-After`` says)."""
        try:
            return max(0, math.ceil(self.retry_after))
        except (OverflowError, ValueError):  # inf or nan: no usable wait
            return 0

    def _detail(self) -> str:
        return f"too many requests; retry after {self.retry_after_seconds} s"

    def to_problem(self) -> Dict[str, Any]:
        body = super().to_problem()
        body["retry_after"] = self.retry_after_seconds
        return body

    def http_headers(self) -> Dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class IntegrationError(CrmError):
    """A third-party provider (Discord, Telegram, Resend, WhatsApp, OpenAI) failed
    (HTTP 502; the problem does not say how)."""

    status = 502

    def __init__(self, message: str = "integration failed") -> None:
        super().__init__(message, "integration_failed")


class WebhookVerificationError(CrmError):
    """A webhook signature did not verify, whatever was wrong with it. ``kind``:
    ``missing_header``, ``timestamp`` or ``signature``. HTTP 401."""

    status = 401

    def __init__(
        self, message: str = "webhook verification failed", kind: str = "signature"
    ) -> None:
        super().__init__(message, "webhook_verification_failed")
        self.kind = kind
