"""Cal.com webhooks: ``verify_signature(secret, body, header)`` checks
``X-Cal-Signature-256`` (hex HMAC-SHA256 of the raw body) and raises
:class:`WebhookVerificationError` unless it matches."""

from ._native import calcom_verify_signature as verify_signature
from .errors import WebhookVerificationError

__all__ = ["verify_signature", "WebhookVerificationError"]
