"""What crm returns: frozen dataclasses whose attributes are the Rust fields.

Ids are UUID strings, datetimes are timezone-aware (UTC). ``to_dict()`` gives the
JSON shape the HTTP API serves (datetimes as RFC 3339 strings), ready for a JSON
response. Secrets (a session token, a new API key, an endpoint's signing secret)
are attributes of the one result that carries them and never appear in ``repr``.
"""

import dataclasses
from dataclasses import dataclass
import re
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple, Type, TypeVar, Union, get_type_hints

from .errors import CrmError

__all__ = [
    "Model",
    "Lead",
    "Activity",
    "LeadDetail",
    "LeadPage",
    "Captured",
    "DuplicateGroup",
    "Merged",
    "Contact",
    "ContactPage",
    "Organization",
    "OrganizationPage",
    "Converted",
    "Attachment",
    "SignedLink",
    "ExternalIdentity",
    "RowError",
    "ImportReport",
    "ImportProgress",
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
    "LeadStats",
    "StatusCount",
    "SourceCount",
    "Series",
    "Point",
]

M = TypeVar("M", bound="Model")

_FRACTION = re.compile(r"\.(\d+)")


def _parse_datetime_compat(text: str) -> datetime:
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


#: ``fromisoformat`` takes crm's timestamps as they are from Python 3.11 on.
_fromisoformat: Callable[[str], datetime] = (
    datetime.fromisoformat if sys.version_info >= (3, 11) else _parse_datetime_compat
)


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 timestamp as crm writes it (``…Z``, 0–9 fraction digits) as an
    aware ``datetime``; ``fromisoformat`` before Python 3.11 takes neither form."""
    value = _fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _converter(hint: Any) -> Optional[Callable[[Any], Any]]:
    """How one value from the native module becomes the attribute typed ``hint``
    (``None``: as it is). ``None`` stays ``None``."""
    args = getattr(hint, "__args__", ())
    if getattr(hint, "__origin__", None) is Union and type(None) in args:
        return _converter(next(a for a in args if a is not type(None)))
    if hint is datetime:
        return parse_datetime
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint.from_dict
    if getattr(hint, "__origin__", None) is list and args:
        item = _converter(args[0])
        if item is None:
            return None
        return lambda v: [item(x) for x in v]
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class Model:
    """Base of every result."""

    __slots__ = ()
    _plan: Tuple[FrozenSet[str], List[Tuple[str, Callable[[Any], Any]]]]

    @classmethod
    def from_dict(cls: Type[M], data: Dict[str, Any]) -> M:
        """Builds the result from the native module's shape of it (the HTTP body).
        Strict: a key missing or one too many is a ``CrmError`` (``internal_error``),
        so a field renamed on the Rust side fails loudly instead of reading as
        ``None``."""
        plan = cls.__dict__.get("_plan")
        if plan is None:
            hints = get_type_hints(cls)
            names = frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            convert = [(n, c) for n in names for c in [_converter(hints[n])] if c is not None]
            plan = (names, convert)
            setattr(cls, "_plan", plan)
        names, convert = plan
        if data.keys() != names:
            missing = sorted(names - data.keys())
            extra = sorted(data.keys() - names)
            raise CrmError(
                f"crm returned a {cls.__name__} that does not match it (missing {missing}, unknown {extra})",
                "internal_error",
            )
        kw = dict(data)
        for name, c in convert:
            v = kw[name]
            if v is not None:
                kw[name] = c(v)
        return cls(**kw)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON shape (as the HTTP API serves it)."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }




@dataclass(frozen=True)
class Lead(Model):
    """A lead."""

    id: str
    workspace_id: str
    name: str
    email: Optional[str]
    phone: Optional[str]
    company: Optional[str]
    budget: Optional[str]
    project_type: Optional[str]
    message: Optional[str]
    source: Optional[str]
    status: str
    notes: Optional[str]
    tags: List[str]
    custom: Dict[str, Any]
    raw_input: Optional[str]
    ai_parsed: bool
    created_at: datetime
    updated_at: datetime
    #: When it was archived (hidden from listings unless asked for); ``None`` when not.
    archived_at: Optional[datetime]
    #: The user of the workspace it is assigned to.
    owner_id: Optional[str]
    #: The contact it was converted into (``leads.convert``).
    contact_id: Optional[str]


@dataclass(frozen=True)
class Activity(Model):
    """One entry of a lead's timeline (``kind``: ``note``, ``message``, ``status_change``, …)."""

    id: str
    lead_id: str
    kind: str
    description: Optional[str]
    old_status: Optional[str]
    new_status: Optional[str]
    actor: Optional[str]
    message: Optional[Dict[str, Any]]
    created_at: datetime


@dataclass(frozen=True)
class LeadDetail(Lead):
    """A lead with its activities, newest first."""

    activities: List[Activity]


@dataclass(frozen=True)
class LeadPage(Model):
    """One page of leads; pass ``next_cursor`` back for the next (``None`` at the end).
    ``total`` is set when it was asked for."""

    items: List[Lead]
    next_cursor: Optional[str]
    total: Optional[int]


@dataclass(frozen=True)
class Captured(Model):
    """The lead a capture created (``created``) or recorded the submission on."""

    lead: Lead
    created: bool


@dataclass(frozen=True)
class ParsedLead(Model):
    """What the lead parser found in free text: ``fields``, the values found by
    field name (``name``, ``email``, ``phone``, ``company``, ``budget``,
    ``project_type``, ``message``, ``source``; the input for ``leads.create``), the
    names of the ``found`` fields, ``field_confidence`` (how sure the parser is of
    each value, 0–1), the overall ``confidence``, the ``parser`` that read the text
    (``builtin``, ``openai``, …), ``fallback`` (the configured parser failed and the
    builtin one stood in), and the ``lead`` when ``auto_save`` created it."""

    fields: Dict[str, str]
    found: List[str]
    field_confidence: Dict[str, float]
    confidence: float
    parser: str
    fallback: bool
    lead: Optional[Lead]


@dataclass(frozen=True)
class User(Model):
    """A user (``role``: ``owner``, ``admin`` or ``member``)."""

    id: str
    workspace_id: str
    email: str
    display_name: str
    role: str
    email_verified_at: Optional[datetime]
    disabled_at: Optional[datetime]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Session(Model):
    """A sign-in session (its token is only in :class:`LoggedIn`)."""

    id: str
    workspace_id: str
    user_id: str
    remember: bool
    ip: Optional[str]
    user_agent: Optional[str]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    absolute_expires_at: datetime


@dataclass(frozen=True)
class LoggedIn(Model):
    """A successful login: the session ``token`` to hand the client (shown once, never
    in ``repr``), the session and the user."""

    token: str = dataclasses.field(repr=False)
    session: Session
    user: User


@dataclass(frozen=True)
class SessionUser(Model):
    """Who a session token belongs to."""

    session: Session
    user: User


@dataclass(frozen=True)
class ApiKey(Model):
    """An API key's record; the key itself is never stored."""

    id: str
    workspace_id: str
    name: str
    display_prefix: str
    scopes: List[str]
    created_by: Optional[str]
    created_at: datetime
    updated_at: datetime
    expires_at: Optional[datetime]
    revoked_at: Optional[datetime]
    last_used_at: Optional[datetime]
    replaced_by: Optional[str]


@dataclass(frozen=True)
class CreatedApiKey(Model):
    """A new API key: ``secret`` is the key, shown this once (never in ``repr``)."""

    key: ApiKey
    secret: str = dataclasses.field(repr=False)


@dataclass(frozen=True)
class VerifiedKey(Model):
    """A valid API key: its id, workspace, scopes and expiry."""

    key_id: str
    workspace_id: str
    scopes: List[str]
    expires_at: Optional[datetime]


@dataclass(frozen=True)
class Endpoint(Model):
    """A webhook endpoint."""

    id: str
    workspace_id: str
    url: str
    description: Optional[str]
    event_types: List[str]
    enabled: bool
    rate_limit_per_minute: Optional[int]
    consecutive_failures: int
    last_success_at: Optional[datetime]
    last_failure_at: Optional[datetime]
    disabled_reason: Optional[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CreatedEndpoint(Model):
    """A new endpoint and its signing ``secret`` (``whsec_…``, never in ``repr``)."""

    endpoint: Endpoint
    secret: str = dataclasses.field(repr=False)


@dataclass(frozen=True)
class Channel(Model):
    """A notification channel (its configuration stays sealed in the database)."""

    id: str
    workspace_id: str
    kind: str
    name: str
    event_types: List[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Integration(Model):
    """A workspace's settings for one provider, as reads show them: the values that
    are not secret, and only the names of the secrets that are set."""

    kind: str
    settings: Dict[str, str]
    secrets: List[str]
    inbound_id: Optional[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WorkspaceInfo(Model):
    """A workspace's id, name and creation time."""

    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class WorkspaceChoice(Model):
    """A workspace to choose at sign-in: sign in again with its ``id``."""

    id: str
    name: str


@dataclass(frozen=True)
class Received(Model):
    """What an inbound WhatsApp payload did: the ids of the leads ``captured`` (one per
    new message, text or media), the messages seen before (``duplicates``), the
    delivery ``statuses`` that moved a sent message forward, and what was
    ``ignored`` (statuses that changed nothing, reactions and other types)."""

    captured: List[str]
    duplicates: int
    statuses: int
    ignored: int


@dataclass(frozen=True)
class Attempt(Model):
    """One recorded delivery attempt to a webhook endpoint or notification channel."""

    id: str
    job_id: str
    #: ``webhook`` or ``notification``.
    kind: str
    target_id: str
    #: The event (its id is the ``webhook-id``).
    event_id: str
    #: 1 for the first attempt of the job.
    attempt: int
    status_code: Optional[int]
    #: The response body, cut at 4 KiB.
    response_body: Optional[str]
    duration_ms: int
    #: Why it failed (``http_status``, ``timeout``, ``connect``, … or the plugin's
    #: reason); ``None`` on success.
    error_kind: Optional[str]
    next_attempt_at: Optional[datetime]
    created_at: datetime


@dataclass(frozen=True)
class AuditEntry(Model):
    """One audit-log entry: who did what to which thing, when."""

    id: str
    workspace_id: str
    actor: Optional[str]
    #: What happened, e.g. ``api_key.created``.
    action: str
    target_type: Optional[str]
    target_id: Optional[str]
    ip: Optional[str]
    #: Action-specific details (never secrets).
    details: Any
    created_at: datetime


@dataclass(frozen=True)
class RateLimitDecision(Model):
    """A rate limiter's answer for one request: what an HTTP layer puts in
    ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` and
    (when refused) ``Retry-After``."""

    allowed: bool
    limit: int
    #: Requests left right now (0 when refused).
    remaining: int
    #: When the full budget is back.
    reset_at: datetime
    #: Seconds until a refused request may try again; ``None`` when allowed.
    retry_after: Optional[float]


@dataclass(frozen=True)
class IdempotencyClaim(Model):
    """What claiming an idempotency key found: ``outcome`` is ``new`` (run the
    request, then complete or release the key), ``replay`` (answer with the stored
    ``status`` and ``body``), ``in_flight`` (the first request with the key still
    runs: answer 409) or ``mismatch`` (the key was used for another request: 422)."""

    outcome: str
    status: Optional[int]
    body: Optional[str]


@dataclass(frozen=True)
class Purged(Model):
    """How many rows one housekeeping pass deleted, by kind."""

    sessions: int
    auth_tokens: int
    login_throttles: int
    idempotency_keys: int
    #: Idle rate-limit rows (Postgres).
    rate_limit_rows: int
    #: Events past the retention period (with their finished jobs).
    events: int
    attempts: int
    #: Tracked import reports past the retention period.
    imports: int
    #: Stored files no attachment names, an hour old or more: found and deleted.
    orphaned_files: int

    @property
    def total(self) -> int:
        """All rows deleted."""
        return (
            self.sessions + self.auth_tokens + self.login_throttles + self.idempotency_keys
            + self.rate_limit_rows + self.events + self.attempts + self.imports + self.orphaned_files
        )


@dataclass(frozen=True)
class Booking(Model):
    """What an inbound Cal.com payload did: ``outcome`` is ``captured`` (the
    attendee's lead ``lead_id``, ``created`` or updated), ``duplicate`` (this booking
    and trigger were handled before) or ``ignored`` (a ``trigger`` crm does not act
    on)."""

    outcome: str
    lead_id: Optional[str]
    created: bool
    trigger: Optional[str]


@dataclass(frozen=True)
class StatusCount(Model):
    """A number of leads with one status."""

    status: str
    count: int


@dataclass(frozen=True)
class SourceCount(Model):
    """A number of leads with one source (``None``: none given)."""

    source: Optional[str]
    count: int


@dataclass(frozen=True)
class Point(Model):
    """One bucket of a series: where it starts, and the leads created in it."""

    start: datetime
    count: int


@dataclass(frozen=True)
class Series(Model):
    """New leads over ``[start, end)``, one point per ``bucket`` (``day``, ``week``
    or ``month``), zero-filled, oldest first."""

    bucket: str
    start: datetime
    end: datetime
    points: List[Point]


@dataclass(frozen=True)
class DuplicateGroup(Model):
    """Leads that look like one person: ``reason`` ``email`` (one mailbox, score
    0.95) or ``name_company`` (one name at one company, 0.8); oldest first."""

    reason: str
    score: float
    size: int
    leads: List[Lead]


@dataclass(frozen=True)
class Merged(Model):
    """What a merge did (or, when ``dry_run``, would do): the target ``lead`` after
    it, the ``absorbed`` ids and the timeline entries moved."""

    lead: Lead
    absorbed: List[str]
    moved_activities: int
    dry_run: bool


@dataclass(frozen=True)
class Contact(Model):
    """A contact (a person): ``first_name`` and ``last_name``, ``name`` the two
    joined; up to ten ``emails`` and ``phones`` (E.164), each belonging to one
    contact of the workspace; ``social`` links by network; the ``organization_id``
    it belongs to and the ``owner_id`` it is assigned to."""

    id: str
    workspace_id: str
    first_name: str
    last_name: Optional[str]
    name: str
    emails: List[str]
    phones: List[str]
    title: Optional[str]
    address: Optional[str]
    social: Dict[str, str]
    organization_id: Optional[str]
    owner_id: Optional[str]
    notes: Optional[str]
    tags: List[str]
    custom: Dict[str, Any]
    last_contacted_at: Optional[datetime]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ContactPage(Model):
    """One page of contacts; pass ``next_cursor`` back for the next."""

    items: List[Contact]
    next_cursor: Optional[str]
    total: Optional[int]


@dataclass(frozen=True)
class Organization(Model):
    """An organization (a company contacts belong to); ``domain`` is a lower-case
    host, unique in the workspace."""

    id: str
    workspace_id: str
    name: str
    domain: Optional[str]
    industry: Optional[str]
    size: Optional[str]
    address: Optional[str]
    owner_id: Optional[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OrganizationPage(Model):
    """One page of organizations; pass ``next_cursor`` back for the next."""

    items: List[Organization]
    next_cursor: Optional[str]
    total: Optional[int]


@dataclass(frozen=True)
class Converted(Model):
    """What ``leads.convert`` did: the ``lead`` (linked by ``contact_id``), its
    ``contact`` and ``organization``, and whether this conversion made them."""

    lead: Lead
    contact: Contact
    organization: Optional[Organization]
    contact_created: bool
    organization_created: bool


@dataclass(frozen=True)
class Attachment(Model):
    """A file attached to a lead (``lead_id``) or a contact (``contact_id``): its
    ``name`` (no directory part), ``size`` in bytes, ``content_type`` as sniffed
    from its bytes, ``sha256`` (hex) and who uploaded it."""

    id: str
    lead_id: Optional[str]
    contact_id: Optional[str]
    name: str
    size: int
    content_type: str
    sha256: str
    uploaded_by: Optional[str]
    created_at: datetime


@dataclass(frozen=True)
class SignedLink(Model):
    """A download link anyone holding it may use until ``expires_at``: crm's own
    ``/api/files?token=…`` (a path from the router's root, unless a
    ``link_base`` was given), or the storage's presigned URL."""

    url: str
    expires_at: datetime


@dataclass(frozen=True)
class ExternalIdentity(Model):
    """Who a token of an outside sign-in service names, verified
    (:meth:`crm.Crm.verify_jwt`): its ``subject`` (``sub``), ``email``, the
    ``workspace_id`` and ``role`` it maps to, and when it expires."""

    subject: str
    email: Optional[str]
    workspace_id: str
    role: str
    expires_at: datetime


@dataclass(frozen=True)
class RowError(Model):
    """A row an import did not take (``row`` 1 is the row after the header; ``line``
    the file's line it starts on), or what stopped the file (``error``)."""

    row: int
    line: int
    field: Optional[str]
    message: str


@dataclass(frozen=True)
class ImportReport(Model):
    """What a CSV import did (or, when ``dry_run``, would do): rows ``created``,
    ``updated``, ``skipped`` (nothing new) and ``failed`` (the first 100 in
    ``errors``). ``status`` is ``running``, ``completed``, ``failed`` (``error`` says
    where the file could not be read on) or ``interrupted``; ``rows_done`` is what is
    committed, the ``skip_rows`` that resumes it."""

    id: str
    status: str
    dry_run: bool
    total_rows: Optional[int]
    rows_done: int
    created: int
    updated: int
    skipped: int
    failed: int
    errors: List[RowError]
    ignored_columns: List[str]
    error: Optional[RowError]
    created_at: datetime
    updated_at: datetime
    finished_at: Optional[datetime]


@dataclass(frozen=True)
class ImportProgress(Model):
    """How far an import is, after each batch of rows."""

    rows_done: int
    total_rows: Optional[int]
    created: int
    updated: int
    skipped: int
    failed: int
    rows_per_sec: float


@dataclass(frozen=True)
class LeadStats(Model):
    """A workspace's lead statistics: ``total``; ``by_status`` (every status, in
    pipeline order) and ``by_source`` (most first) now; the ``series`` of new leads
    over the range; the ``funnel`` (leads that were ever in each status); and
    ``median_seconds_to_contacted`` (creation to the first change from ``new`` to
    ``contacted``; ``None`` when no lead made it)."""

    total: int
    by_status: List[StatusCount]
    by_source: List[SourceCount]
    series: Series
    funnel: List[StatusCount]
    median_seconds_to_contacted: Optional[float]
