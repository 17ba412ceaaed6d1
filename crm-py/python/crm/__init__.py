"""crm: an embeddable CRM core (leads, auth, API keys, webhooks, notifications)
over SQLite or Postgres, shared with Rust apps on the same database.

Async services::

    client = await crm.Crm.connect("sqlite://crm.db?mode=rwc", master_key=KEY)
    lead = await client.leads.create("Ada", email="ada@example.com")
    other = client.workspace(workspace_id)

Synchronous helpers (no database, GIL released): :mod:`crm.webhooks`,
:mod:`crm.whatsapp`, :mod:`crm.calcom`, :mod:`crm.passwords`. FastAPI helpers
(the ``fastapi`` extra, imported on its own): :mod:`crm.fastapi`. Every error is
a :class:`CrmError`, which knows its HTTP status and problem details.
"""

import atexit as _atexit

from . import _native, calcom, passwords, webhooks, whatsapp
from ._native import __version__
from .client import (
    DEFAULT_WORKSPACE,
    UNSET,
    ApiKeys,
    Auth,
    Crm,
    Leads,
    Notifications,
    Integrations,
    RateLimiter,
    Idempotency,
    Webhooks,
    Workspace,
)
from .errors import (
    ConflictError,
    CrmError,
    FieldError,
    ForbiddenError,
    IntegrationError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    ValidationError,
    WebhookVerificationError,
)
from .models import (
    Activity,
    ApiKey,
    Attempt,
    AuditEntry,
    Booking,
    Captured,
    Channel,
    Integration,
    CreatedApiKey,
    CreatedEndpoint,
    Endpoint,
    IdempotencyClaim,
    Lead,
    LeadDetail,
    LeadPage,
    LeadStats,
    DuplicateGroup,
    Merged,
    ImportProgress,
    ImportReport,
    RowError,
    Point,
    Series,
    SourceCount,
    StatusCount,
    LoggedIn,
    Model,
    ParsedLead,
    Purged,
    RateLimitDecision,
    Received,
    Session,
    SessionUser,
    User,
    VerifiedKey,
    WorkspaceChoice,
    WorkspaceInfo,
)

__all__ = [
    "__version__",
    "calcom",
    "passwords",
    "webhooks",
    "whatsapp",
    "DEFAULT_WORKSPACE",
    "UNSET",
    "Crm",
    "Workspace",
    "Leads",
    "Auth",
    "ApiKeys",
    "Webhooks",
    "Notifications",
    "Integrations",
    "RateLimiter",
    "Idempotency",
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
    "Model",
    "Lead",
    "Activity",
    "LeadDetail",
    "LeadPage",
    "LeadStats",
    "DuplicateGroup",
    "Merged",
    "ImportProgress",
    "ImportReport",
    "RowError",
    "Point",
    "Series",
    "SourceCount",
    "StatusCount",
    "Captured",
    "ParsedLead",
    "User",
    "Session",
    "LoggedIn",
    "SessionUser",
    "ApiKey",
    "CreatedApiKey",
    "VerifiedKey",
    "Endpoint",
    "CreatedEndpoint",
    "Channel",
    "Integration",
    "WorkspaceInfo",
    "WorkspaceChoice",
    "Received",
    "Attempt",
    "AuditEntry",
    "RateLimitDecision",
    "IdempotencyClaim",
    "Purged",
    "Booking",
]

# Results still being handed over when the interpreter shuts down would crash it:
# wait (at most two seconds) for the calls in flight.
_atexit.register(_native.quiesce)
