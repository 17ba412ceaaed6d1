"""Cal.com webhooks: ``verify_signature(secret, body, header)`` checks
``X-Cal-Signature-256`` (hex HMAC-SHA256 of the raw body) and raises
:class:`WebhookVerificationError` unless it matches; ``await receive(workspace,
secret, header, body)`` also captures the booking's attendee as a lead."""

from typing import Optional, Union

from ._native import calcom_verify_signature as verify_signature
from .client import Workspace
from .errors import WebhookVerificationError
from .models import Booking

__all__ = ["verify_signature", "receive", "Booking", "WebhookVerificationError"]


async def receive(
    workspace: Workspace, secret: str, signature: Optional[str], body: Union[bytes, str]
) -> Booking:
    """Handles a Cal.com webhook ``POST`` for ``workspace``: verifies ``signature``
    (the ``X-Cal-Signature-256`` header, ``None`` when absent) over the raw ``body``
    with the webhook ``secret``, then for ``BOOKING_CREATED``, ``BOOKING_RESCHEDULED``
    and ``BOOKING_CANCELLED`` captures the first attendee by email (source
    ``cal_com``) with a ``booking`` activity. A bad signature raises
    ``WebhookVerificationError`` and a body of another shape ``ValidationError``;
    neither writes anything. The same booking and trigger twice is a ``duplicate``."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    out = await workspace._native.calcom_receive(workspace.id, secret, signature, raw)
    return Booking.from_dict(out)
