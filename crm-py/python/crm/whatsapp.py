"""WhatsApp Cloud API webhooks.

``handshake(mode, token, challenge, verify_token)`` answers Meta's verification
``GET`` (the challenge, or ``UnauthorizedError``); ``verify_signature(app_secret,
body, header)`` checks ``X-Hub-Signature-256`` on the raw body
(``WebhookVerificationError`` unless it matches); ``receive(workspace, app_secret,
header, body)`` verifies and turns each text message into a lead captured by phone
with a ``message`` activity, once per message id (``wamid``).
"""

from typing import Optional, Union

from ._native import whatsapp_handshake as handshake
from ._native import whatsapp_verify_signature as verify_signature
from .client import Workspace
from .errors import WebhookVerificationError
from .models import Received

__all__ = ["handshake", "verify_signature", "receive", "Received", "WebhookVerificationError"]


async def receive(
    workspace: Workspace,
    app_secret: str,
    signature: Optional[str],
    body: Union[bytes, str],
    *,
    phone_number_id: Optional[str] = None,
) -> Received:
    """Handles a webhook ``POST`` for ``workspace``: verifies ``signature`` (the
    ``X-Hub-Signature-256`` header, ``None`` when absent) over the raw ``body``, then
    captures each new text message. A bad signature raises
    ``WebhookVerificationError`` and a body that is not a WhatsApp payload
    ``ValidationError``; neither writes anything. A message seen before (same
    ``wamid``) changes nothing and counts in ``duplicates``. With
    ``phone_number_id`` only messages to that number are kept (one Meta app serving
    several workspaces' numbers); the others count in ``ignored``."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    out = await workspace._native.whatsapp_receive(workspace.id, app_secret, signature, raw, phone_number_id)
    return Received.from_dict(out)
