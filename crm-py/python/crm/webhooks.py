"""Standard Webhooks signatures, a drop-in for the ``standardwebhooks`` package.

``Webhook(secret).sign(msg_id, timestamp, data)`` and ``.verify(data, headers)``
take and return what that package's do; ``headers`` may be any mapping (a ``dict``,
Starlette's ``Headers``), read case-insensitively. Anything wrong with a signature
(a header missing, malformed or stale) raises :class:`WebhookVerificationError`.
Runs in Rust; long bodies are hashed with the GIL released.
"""

from ._native import Webhook
from .errors import WebhookVerificationError

__all__ = ["Webhook", "WebhookVerificationError"]
