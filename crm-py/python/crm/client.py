"""The async API: :class:`Crm` and the services hanging off each workspace.

Every method is a coroutine (``async def``), so it can be awaited, passed to
``asyncio.create_task`` or run in a ``TaskGroup``. The work runs on the module's
own tokio runtime, off the event loop; awaiting never blocks the loop.
"""

import asyncio
import os
import uuid
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from . import _native
from .errors import ValidationError
from .models import (
    Activity,
    ApiKey,
    Attachment,
    Attempt,
    AuditEntry,
    IdempotencyClaim,
    Purged,
    Captured,
    DuplicateGroup,
    Merged,
    ImportProgress,
    ImportReport,
    Channel,
    Contact,
    ContactPage,
    Converted,
    CreatedApiKey,
    CreatedEndpoint,
    Endpoint,
    Integration,
    Lead,
    LeadDetail,
    LeadPage,
    LeadStats,
    LoggedIn,
    Organization,
    OrganizationPage,
    ParsedLead,
    RateLimitDecision,
    Session,
    SessionUser,
    SignedLink,
    ExternalIdentity,
    User,
    VerifiedKey,
    WorkspaceChoice,
    WorkspaceInfo,
)

__all__ = [
    "DEFAULT_WORKSPACE",
    "UNSET",
    "Crm",
    "Workspace",
    "Leads",
    "Contacts",
    "Organizations",
    "Attachments",
    "Auth",
    "ApiKeys",
    "Webhooks",
    "Notifications",
    "RateLimiter",
    "Idempotency",
]

#: The workspace of single-tenant apps (the nil UUID).
DEFAULT_WORKSPACE = "00000000-0000-0000-0000-000000000000"

Id = Union[str, uuid.UUID]


class _Unset:
    """The value of an update argument that was not given (``None`` clears a field)."""

    _instance: Optional["_Unset"] = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: Default of update arguments: the field stays as it is.
UNSET: Any = _Unset()


def _when(value: Optional[datetime], field: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"invalid input: {field}: must be a datetime", [(field, "must be a datetime")])
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"invalid input: {field}: must be timezone-aware", [(field, "must be timezone-aware")]
        )
    return value.isoformat()


def _given(**fields: Any) -> Dict[str, Any]:
    """The arguments that were given (not ``None``)."""
    return {k: v for k, v in fields.items() if v is not None}


def _changed(**fields: Any) -> Dict[str, Any]:
    """The update arguments that were given (not ``UNSET``); ``None`` clears."""
    return {k: v for k, v in fields.items() if v is not UNSET}


def _strings(value: Any, field: str) -> List[Any]:
    """A list argument as a list; one string is refused (``list("vip")`` would be its
    characters)."""
    message = "must be a list of strings, not one string"
    if not isinstance(value, (str, bytes)):
        try:
            return list(value)
        except TypeError:
            message = "must be a list of strings"
    raise ValidationError(f"invalid input: {field}: {message}", [(field, message)])


def _object(value: Any) -> Any:
    """A mapping argument as a dict; anything else goes as it is, for the native
    module to refuse with the field's name."""
    return dict(value) if isinstance(value, Mapping) else value


def _networks(given: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``webhook_allow_networks`` as a list (one string is one network, not its
    characters)."""
    if given is None:
        return None
    return [given] if isinstance(given, str) else [str(n) for n in _strings(given, "webhook_allow_networks")]


#: The longest rate-limit period ``Crm.connect`` takes, in seconds (a year).
_PERIOD_MAX = 366 * 24 * 3600


def _policies(given: Mapping[str, Tuple[int, float]]) -> Dict[str, Tuple[int, float]]:
    """``rate_limits`` as the native module takes them, or ``ValidationError``."""
    out: Dict[str, Tuple[int, float]] = {}
    for name, policy in given.items():
        field = f"rate_limits.{name}"
        ok = isinstance(name, str) and 1 <= len(name) <= 64 and ":" not in name
        ok = ok and isinstance(policy, tuple) and len(policy) == 2
        limit, period = policy if ok else (0, 0.0)
        ok = ok and isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit < 2**32
        ok = ok and isinstance(period, (int, float)) and not isinstance(period, bool)
        ok = ok and 0 < period <= _PERIOD_MAX
        if not ok:
            message = (
                "must be (limit, period in seconds): a limit of at least 1 over a period of up to a year, "
                "named by 1-64 characters without ':'"
            )
            raise ValidationError(f"invalid input: {field}: {message}", [(field, message)])
        out[name] = (limit, float(period))
    return out

def _list_payload(
    *,
    status: Union[str, Sequence[str], None],
    source: Optional[str],
    tags: Optional[Sequence[str]],
    created_after: Optional[datetime],
    created_before: Optional[datetime],
    q: Optional[str],
    sort: str,
    order: str,
    archived: Union[bool, Literal["any"], None],
) -> Dict[str, Any]:
    """The filters and sort of a listing (``list``, ``export_csv``)."""
    if archived is None or archived is False:
        archived_text = "false"
    elif archived is True:
        archived_text = "true"
    elif archived == "any":
        archived_text = "any"
    else:
        message = "must be True, False or 'any'"
        raise ValidationError(f"invalid input: archived: {message}", [("archived", message)])
    statuses = [status] if isinstance(status, str) else _strings(status or [], "status")
    return _given(
        status=statuses, source=source, tags=_strings(tags or [], "tags"),
        created_after=_when(created_after, "created_after"),
        created_before=_when(created_before, "created_before"),
        q=q, sort=sort, order=order, archived=archived_text,
    )


def _source(source: Union[str, "os.PathLike[str]", bytes]) -> Tuple[Optional[str], Optional[bytes]]:
    """A file to import: its path, or its bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), None
    message = "must be a path or bytes"
    raise ValidationError(f"invalid input: source: {message}", [("source", message)])


def _open_for_writing(path: Union[str, "os.PathLike[str]"]) -> BinaryIO:
    """``path`` opened for writing bytes (for a worker thread)."""
    return open(path, "wb")


def _import_options(
    dry_run: bool, mapping: Optional[Mapping[str, str]], delimiter: Optional[str], skip_rows: int,
    lead_events: bool,
) -> Dict[str, Any]:
    return _given(
        dry_run=dry_run, mapping=None if mapping is None else _object(mapping), delimiter=delimiter,
        skip_rows=skip_rows, lead_events=lead_events,
    )


def _id_or_none(value: Any) -> Any:
    """An id argument of an update: ``UNSET`` and ``None`` as they are, else a string."""
    return value if value is UNSET or value is None else str(value)


def _people_list(
    *,
    q: Optional[str],
    owner_id: Optional[Id],
    sort: str,
    order: str,
    limit: Optional[int],
    cursor: Optional[str],
    include_total: bool,
    **more: Any,
) -> Dict[str, Any]:
    """The filters, sort and page of a contact or organization listing."""
    payload = _given(
        q=q, owner_id=None if owner_id is None else str(owner_id), sort=sort, order=order,
        limit=limit, cursor=cursor, **more,
    )
    payload["include_total"] = include_total
    return payload


class _Service:
    __slots__ = ("_native", "_ws")

    def __init__(self, native: "_native.Client", workspace: str) -> None:
        self._native = native
        self._ws = workspace


class Leads(_Service):
    """Leads of one workspace: fields, statuses, activities, search, cursor pages, dedup."""

    __slots__ = ()

    async def create(
        self,
        name: str,
        *,
        email: Optional[str] = None,
        phone: Optional[str] = None,
        company: Optional[str] = None,
        budget: Optional[str] = None,
        project_type: Optional[str] = None,
        message: Optional[str] = None,
        source: Optional[str] = None,
        status: Optional[str] = None,
        notes: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Optional[Mapping[str, Any]] = None,
        raw_input: Optional[str] = None,
        ai_parsed: bool = False,
        owner_id: Optional[Id] = None,
    ) -> Lead:
        """Creates a lead (``ConflictError`` with ``existing_id`` when the email or
        phone is taken). Email and phone are normalised; status defaults to ``new``;
        ``owner_id`` must be a user of the workspace."""
        payload = _given(
            name=name, email=email, phone=phone, company=company, budget=budget,
            project_type=project_type, message=message, source=source, status=status,
            notes=notes, tags=None if tags is None else _strings(tags, "tags"),
            custom=None if custom is None else _object(custom), raw_input=raw_input,
            owner_id=None if owner_id is None else str(owner_id),
        )
        payload["ai_parsed"] = ai_parsed
        return Lead.from_dict(await self._native.leads_create(self._ws, payload))

    async def capture(
        self,
        name: str,
        *,
        email: Optional[str] = None,
        phone: Optional[str] = None,
        company: Optional[str] = None,
        budget: Optional[str] = None,
        project_type: Optional[str] = None,
        message: Optional[str] = None,
        source: Optional[str] = None,
        notes: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Optional[Mapping[str, Any]] = None,
    ) -> Captured:
        """Creates the lead from an anonymous submission (a contact form), or, when a lead
        has this email (then phone), records the submission on it without changing any
        of its fields; either way a ``form_submission`` activity records it (on a known
        lead with what was submitted). ``created`` says which."""
        payload = _given(
            name=name, email=email, phone=phone, company=company, budget=budget,
            project_type=project_type, message=message, source=source, notes=notes,
            tags=None if tags is None else _strings(tags, "tags"), custom=None if custom is None else _object(custom),
        )
        return Captured.from_dict(await self._native.leads_capture(self._ws, payload))

    async def get(self, id: Id) -> LeadDetail:
        """The lead with its activities (``NotFoundError`` when absent)."""
        return LeadDetail.from_dict(await self._native.leads_get(self._ws, str(id)))

    async def list(
        self,
        *,
        status: Union[str, Sequence[str], None] = None,
        source: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        created_after: Optional[datetime] = None,
        created_before: Optional[datetime] = None,
        q: Optional[str] = None,
        sort: str = "created_at",
        order: str = "desc",
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        include_total: bool = False,
        archived: Union[bool, Literal["any"], None] = False,
        owner_id: Optional[Id] = None,
    ) -> LeadPage:
        """One page (``limit`` 1–100, default 20): any of ``status``, that ``source``,
        all ``tags``, created in ``[created_after, created_before)``, every word of ``q``
        prefix-matching, assigned to ``owner_id``; sorted by ``created_at``,
        ``updated_at``, ``name`` or
        ``status``. Archived leads are left out unless ``archived`` is ``True`` (only
        them) or ``"any"``. The cursor is bound to the filters and sort it came from."""
        payload = _list_payload(
            status=status, source=source, tags=tags, created_after=created_after,
            created_before=created_before, q=q, sort=sort, order=order, archived=archived,
        )
        payload.update(
            _given(limit=limit, cursor=cursor, owner_id=None if owner_id is None else str(owner_id))
        )
        payload["include_total"] = include_total
        return LeadPage.from_dict(await self._native.leads_list(self._ws, payload))

    async def update(
        self,
        id: Id,
        *,
        name: Any = UNSET,
        email: Any = UNSET,
        phone: Any = UNSET,
        company: Any = UNSET,
        budget: Any = UNSET,
        project_type: Any = UNSET,
        message: Any = UNSET,
        source: Any = UNSET,
        status: Any = UNSET,
        notes: Any = UNSET,
        tags: Any = UNSET,
        custom: Any = UNSET,
        owner_id: Any = UNSET,
    ) -> Lead:
        """Changes the given fields only; ``None`` clears an optional one. A status
        change records a ``status_change`` activity. ``owner_id`` must be a user of
        the workspace (``None``: nobody)."""
        payload = _changed(
            name=name, email=email, phone=phone, company=company, budget=budget,
            project_type=project_type, message=message, source=source, status=status,
            notes=notes, tags=tags if tags is UNSET or tags is None else _strings(tags, "tags"),
            custom=custom if custom is UNSET or custom is None else _object(custom),
            owner_id=_id_or_none(owner_id),
        )
        return Lead.from_dict(await self._native.leads_update(self._ws, str(id), payload))

    async def delete(self, id: Id) -> None:
        """Deletes the lead and its activities (``NotFoundError`` when absent)."""
        await self._native.leads_delete(self._ws, str(id))

    async def duplicates(self, *, limit: int = 50) -> List[DuplicateGroup]:
        """Groups of leads that look like one person (one mailbox, or one name at one
        company; archived leads left out), the likeliest first: at most ``limit``
        (1–100)."""
        groups = await self._native.leads_duplicates(self._ws, {"limit": limit})
        return [DuplicateGroup.from_dict(g) for g in groups]

    async def merge(
        self,
        id: Id,
        from_ids: Sequence[Id],
        *,
        dry_run: bool = False,
        prefer: Optional[Mapping[str, Id]] = None,
    ) -> Merged:
        """Merges the leads ``from_ids`` into ``id``: their timelines move to it, a
        ``merged`` entry names them, they are deleted (``lead.merged``); all or
        nothing. The target keeps its values and fills its blanks from them in
        order; ``prefer`` takes a field (``name``, ``email``, ``phone``, ``company``,
        ``budget``, ``project_type``, ``message``, ``source``, ``status``, ``notes``)
        from a named lead. ``dry_run`` answers the same and writes nothing."""
        payload = {
            "from": [str(i) for i in _strings(from_ids, "from")],
            "dry_run": dry_run,
            "prefer": (
                {k: str(v) for k, v in prefer.items()} if isinstance(prefer, Mapping) else prefer or {}
            ),
        }
        return Merged.from_dict(await self._native.leads_merge(self._ws, str(id), payload))

    async def archive(self, id: Id) -> Lead:
        """Archives the lead: left out of listings unless ``archived`` asks for it,
        its timeline kept (``lead.archived``). It still counts for duplicates and in
        the statistics. Archiving an archived lead changes nothing."""
        return Lead.from_dict(await self._native.leads_archive(self._ws, str(id)))

    async def restore(self, id: Id) -> Lead:
        """Restores an archived lead to the listings (``lead.restored``)."""
        return Lead.from_dict(await self._native.leads_restore(self._ws, str(id)))

    async def convert(self, id: Id, *, organization: bool = True) -> Converted:
        """Converts the lead into a contact, in one transaction: the contact with its
        email (first) or phone is reused, else one is made from the lead (its name
        split at the first space). With ``organization`` the contact (when it has
        none) gets the organization with the lead's company-mail domain, else the
        one named like its company, else a new one. The lead keeps its timeline,
        gets a ``converted`` entry and ``contact_id`` (``lead.converted``).
        Converting it again answers its contact and writes nothing; an archived lead
        raises ``InvalidStateError`` (``lead_archived``)."""
        payload = {"organization": organization}
        return Converted.from_dict(await self._native.leads_convert(self._ws, str(id), payload))

    async def import_csv(
        self,
        source: Union[str, "os.PathLike[str]", bytes],
        *,
        dry_run: bool = False,
        mapping: Optional[Mapping[str, str]] = None,
        delimiter: Optional[str] = None,
        skip_rows: int = 0,
        lead_events: bool = False,
        on_progress: Optional[Callable[[ImportProgress], None]] = None,
    ) -> ImportReport:
        """Imports leads from a CSV file (a path, read as it goes, or bytes): its
        header names the fields (``mapping`` maps the others: ``{"E-mail": "email",
        "Plan": "custom.plan", "Notes 2": ""}``), a row is a new lead or the lead with
        its email (else phone) updated with its non-empty cells. One transaction per
        1,000 rows; a bad row is reported in ``errors`` and the rest goes in.
        ``on_progress`` is called after each batch (in order, on a worker thread,
        all before this returns; its exceptions are reported as unraisable).
        ``skip_rows`` resumes an interrupted import at its ``rows_done``. One
        ``leads.imported`` event; per-lead events with ``lead_events``. A header that
        cannot be used raises ``ValidationError`` and writes nothing."""
        path, data = _source(source)
        options = _import_options(dry_run, mapping, delimiter, skip_rows, lead_events)
        callback: Optional[Callable[[Any], None]] = None
        if on_progress is not None:
            report_to = on_progress

            def callback(d: Any) -> None:
                report_to(ImportProgress.from_dict(d))

        return ImportReport.from_dict(
            await self._native.leads_import(self._ws, path, data, options, callback)
        )

    async def start_import(
        self,
        source: Union[str, "os.PathLike[str]", bytes],
        *,
        dry_run: bool = False,
        mapping: Optional[Mapping[str, str]] = None,
        delimiter: Optional[str] = None,
        skip_rows: int = 0,
        lead_events: bool = False,
    ) -> ImportReport:
        """Starts :meth:`import_csv` in the background and answers at once with the
        running import; :meth:`import_report` reads how far it got (saved with every
        batch). The rows are counted first (``total_rows``)."""
        path, data = _source(source)
        options = _import_options(dry_run, mapping, delimiter, skip_rows, lead_events)
        return ImportReport.from_dict(
            await self._native.leads_start_import(self._ws, path, data, options)
        )

    async def import_report(self, id: Id) -> ImportReport:
        """A tracked import (:meth:`start_import`) as it stands: ``interrupted`` when
        its process stopped before the end."""
        return ImportReport.from_dict(await self._native.leads_import_report(self._ws, str(id)))

    async def export_csv(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        status: Union[str, Sequence[str], None] = None,
        source: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        created_after: Optional[datetime] = None,
        created_before: Optional[datetime] = None,
        q: Optional[str] = None,
        sort: str = "created_at",
        order: str = "desc",
        archived: Union[bool, Literal["any"], None] = False,
    ) -> int:
        """Writes the leads a listing selects (the filters of :meth:`list`) to the CSV
        file ``path``, a page at a time, and returns how many: every field, then a
        ``custom.KEY`` column per custom-field key; a cell a spreadsheet would run as
        a formula (``= + - @``) starts with ``'`` (an import takes it off)."""
        payload = _list_payload(
            status=status, source=source, tags=tags, created_after=created_after,
            created_before=created_before, q=q, sort=sort, order=order, archived=archived,
        )
        stream = await self._native.leads_export(self._ws, payload)
        # The file is opened, written and closed on a worker thread: a slow disk
        # never holds up the event loop.
        out = await asyncio.to_thread(_open_for_writing, path)
        try:
            while True:
                chunk = await stream.next_chunk()
                if chunk is None:
                    return stream.rows()
                await asyncio.to_thread(out.write, chunk)
        finally:
            await asyncio.to_thread(out.close)

    async def add_activity(self, id: Id, kind: str, description: Optional[str] = None) -> Activity:
        """Adds an activity (``note``, ``call``, ``email``, ``meeting``, ``message``, …)."""
        payload = _given(kind=kind, description=description)
        return Activity.from_dict(await self._native.leads_add_activity(self._ws, str(id), payload))

    async def send_message(
        self,
        id: Id,
        text: Optional[str] = None,
        *,
        template: Optional[str] = None,
        language: str = "en_US",
        parameters: Optional[Sequence[str]] = None,
    ) -> Activity:
        """Sends a WhatsApp message to the lead with the workspace's ``whatsapp``
        integration: ``text`` (only within 24 hours of the lead's last message, else
        ``ConflictError`` with code ``window_closed``) or a ``template`` (its
        ``language`` and body ``parameters``). Recorded as a ``message`` activity
        whose ``message["status"]`` the provider's webhooks move forward. A lead
        without a phone raises ``ValidationError`` on ``phone``; a message WhatsApp
        refuses ``CrmError`` with code ``provider_error``."""
        payload: Dict[str, Any] = {}
        if text is not None:
            payload["text"] = text
        if template is not None:
            payload["template"] = {
                "name": template, "language": language, "parameters": _strings(parameters or [], "parameters"),
            }
        return Activity.from_dict(await self._native.leads_send_message(self._ws, str(id), payload))

    async def activities(self, id: Id) -> List[Activity]:
        """The lead's activities, newest first."""
        return [Activity.from_dict(a) for a in await self._native.leads_activities(self._ws, str(id))]

    async def stats(
        self, *, start: Optional[datetime] = None, end: Optional[datetime] = None, bucket: str = "day"
    ) -> LeadStats:
        """The workspace's lead statistics (what a dashboard draws): counts by status
        and by source, new leads per ``bucket`` (``day``, ``week`` from Monday, or
        ``month``, in UTC) over ``[start, end)`` (default ``end``: now; default
        ``start``: 30 days before ``end``), the funnel and the median time to
        contact. The range bounds the series only; one that is backwards, outside
        1970–9999 or holds more than 400 buckets is a ``ValidationError``."""
        payload = _given(start=_when(start, "start"), end=_when(end, "end"), bucket=bucket)
        return LeadStats.from_dict(await self._native.leads_stats(self._ws, payload))

    async def parse(self, text: str, *, auto_save: bool = False) -> ParsedLead:
        """Reads a lead out of free text with the configured parser (the built-in one
        unless the app set another); with ``auto_save`` creates it too."""
        return ParsedLead.from_dict(
            await self._native.leads_parse(self._ws, {"text": text, "auto_save": auto_save})
        )


class Auth(_Service):
    """Users, logins and passwords of one workspace (Argon2id, lockout, audit)."""

    __slots__ = ()

    async def create_user(
        self, email: str, display_name: str, password: str, *, role: Optional[str] = None
    ) -> User:
        """Adds a user (``role`` ``member`` unless given); the password must pass the policy."""
        payload = _given(email=email, display_name=display_name, password=password, role=role)
        return User.from_dict(await self._native.auth_create_user(self._ws, payload))

    async def users(self) -> List[User]:
        """Every user of the workspace."""
        return [User.from_dict(u) for u in await self._native.auth_users(self._ws)]

    async def user(self, id: Id) -> User:
        """One user."""
        return User.from_dict(await self._native.auth_user(self._ws, str(id)))

    async def set_role(self, id: Id, role: str) -> User:
        """Changes a user's role (the last owner cannot be demoted)."""
        return User.from_dict(await self._native.auth_set_role(self._ws, str(id), {"role": role}))

    async def disable_user(self, id: Id) -> User:
        """Disables a user: their sessions and mailed links end at once, and they cannot
        sign in or reset their password until enabled. The last active owner cannot
        be disabled (``ConflictError``)."""
        return User.from_dict(await self._native.auth_disable_user(self._ws, str(id)))

    async def enable_user(self, id: Id) -> User:
        """Enables a disabled user again."""
        return User.from_dict(await self._native.auth_enable_user(self._ws, str(id)))

    async def delete_user(self, id: Id) -> None:
        """Deletes a user with their sessions and tokens (never the last active
        owner)."""
        await self._native.auth_delete_user(self._ws, str(id))

    async def sessions(self, user_id: Id) -> List[Session]:
        """A user's live sessions, newest first (never their tokens)."""
        return [Session.from_dict(s) for s in await self._native.auth_sessions(self._ws, str(user_id))]

    async def end_session(self, user_id: Id, session_id: Id) -> None:
        """Ends one session of the user (``NotFoundError`` when it is not theirs)."""
        await self._native.auth_end_session(self._ws, str(user_id), {"session_id": str(session_id)})

    async def lift_lockout(self, user_id: Id) -> None:
        """Lets a user locked out after failed logins try again now (audited)."""
        await self._native.auth_lift_lockout(self._ws, str(user_id))

    async def resend_email_verification(self, email: str) -> None:
        """Mails a new verification token to the account with this email, if there
        is one not yet verified; an unknown email is not an error (no account
        discovery)."""
        await self._native.auth_resend_email_verification(self._ws, {"email": email})

    async def end_user_sessions(self, user_id: Id) -> int:
        """Ends every session of a user; returns how many ended."""
        return int(await self._native.auth_end_user_sessions(self._ws, str(user_id)))

    async def login(
        self,
        email: str,
        password: str,
        *,
        remember_me: bool = False,
        ip: Optional[str] = None,
        user_agent: Optional[str] = None,
    ) -> LoggedIn:
        """Signs in. Wrong email or password (or a disabled user) is
        ``UnauthorizedError`` with reason ``invalid_credentials`` either way; too many
        attempts ``RateLimitedError``; an ``ip`` that is not an IP address
        ``ValidationError``."""
        payload = _given(
            email=email, password=password, remember_me=remember_me, ip=ip, user_agent=user_agent
        )
        return LoggedIn.from_dict(await self._native.auth_login(self._ws, payload))

    async def change_password(self, user_id: Id, current: str, new: str) -> None:
        """Changes a password after checking the current one; other sessions and earlier
        reset and verification links end. Wrong current passwords count like failed
        logins (``RateLimitedError`` once the account is locked)."""
        await self._native.auth_change_password(self._ws, str(user_id), {"current": current, "new": new})

    async def request_password_reset(self, email: str) -> None:
        """Mails a reset token when the account exists, in the background and at most 5
        times an hour per account (says nothing either way)."""
        await self._native.auth_request_password_reset(self._ws, {"email": email})

    async def request_email_verification(self, user_id: Id) -> None:
        """Mails a verification token to the user."""
        await self._native.auth_request_email_verification(self._ws, str(user_id))


class ApiKeys(_Service):
    """Scoped API keys of one workspace, stored hashed and shown once."""

    __slots__ = ()

    async def create(
        self, name: str, scopes: Sequence[str], *, expires_at: Optional[datetime] = None
    ) -> CreatedApiKey:
        """A new key; ``secret`` on the result is the key, shown this once."""
        payload = _given(name=name, scopes=_strings(scopes, "scopes"), expires_at=_when(expires_at, "expires_at"))
        return CreatedApiKey.from_dict(await self._native.api_keys_create(self._ws, payload))

    async def list(self) -> List[ApiKey]:
        """Every key's record (never the key)."""
        return [ApiKey.from_dict(k) for k in await self._native.api_keys_list(self._ws)]

    async def get(self, id: Id) -> ApiKey:
        """One key's record."""
        return ApiKey.from_dict(await self._native.api_keys_get(self._ws, str(id)))

    async def update(
        self, id: Id, *, name: Optional[str] = None, scopes: Optional[Sequence[str]] = None
    ) -> ApiKey:
        """Renames a key or replaces its scopes."""
        payload = _given(name=name, scopes=None if scopes is None else _strings(scopes, "scopes"))
        return ApiKey.from_dict(await self._native.api_keys_update(self._ws, str(id), payload))

    async def revoke(self, id: Id) -> ApiKey:
        """Revokes a key at once (cached verifications are dropped too)."""
        return ApiKey.from_dict(await self._native.api_keys_revoke(self._ws, str(id)))

    async def rotate(self, id: Id, *, grace_seconds: Optional[int] = None) -> CreatedApiKey:
        """A replacement key; the old one keeps working for ``grace_seconds`` (24 h by default)."""
        payload = _given(grace_seconds=grace_seconds)
        return CreatedApiKey.from_dict(await self._native.api_keys_rotate(self._ws, str(id), payload))

    async def verify(self, key: str, *, scope: Optional[str] = None) -> VerifiedKey:
        """Checks a presented key: ``UnauthorizedError`` when it is malformed, unknown
        (or of another workspace), revoked or expired; ``ForbiddenError`` when
        ``scope`` is given and the key lacks it."""
        payload = _given(key=key, scope=scope)
        return VerifiedKey.from_dict(await self._native.api_keys_verify(self._ws, payload))


class Webhooks(_Service):
    """Outgoing webhook endpoints of one workspace (Standard Webhooks, durable outbox)."""

    __slots__ = ()

    async def create_endpoint(
        self,
        url: str,
        *,
        description: Optional[str] = None,
        event_types: Optional[Sequence[str]] = None,
        enabled: Optional[bool] = None,
        rate_limit_per_minute: Optional[int] = None,
        secret: Optional[str] = None,
    ) -> CreatedEndpoint:
        """A new endpoint (HTTPS, public address unless allowed); ``secret`` on the
        result is its signing secret. ``event_types`` default to every event."""
        payload = _given(
            url=url, description=description,
            event_types=None if event_types is None else _strings(event_types, "event_types"),
            enabled=enabled, rate_limit_per_minute=rate_limit_per_minute, secret=secret,
        )
        return CreatedEndpoint.from_dict(await self._native.webhooks_create_endpoint(self._ws, payload))

    async def list_endpoints(self) -> List[Endpoint]:
        """Every endpoint."""
        return [Endpoint.from_dict(e) for e in await self._native.webhooks_list_endpoints(self._ws)]

    async def get_endpoint(self, id: Id) -> Endpoint:
        """One endpoint."""
        return Endpoint.from_dict(await self._native.webhooks_get_endpoint(self._ws, str(id)))

    async def update_endpoint(
        self,
        id: Id,
        *,
        url: Any = UNSET,
        description: Any = UNSET,
        event_types: Any = UNSET,
        enabled: Any = UNSET,
        rate_limit_per_minute: Any = UNSET,
    ) -> Endpoint:
        """Changes the given fields; ``None`` clears ``description`` or the rate limit.
        Enabling an endpoint resets its failure count."""
        payload = _changed(
            url=url, description=description,
            event_types=event_types if event_types is UNSET else _strings(event_types, "event_types"),
            enabled=enabled, rate_limit_per_minute=rate_limit_per_minute,
        )
        return Endpoint.from_dict(await self._native.webhooks_update_endpoint(self._ws, str(id), payload))

    async def delete_endpoint(self, id: Id) -> None:
        """Deletes the endpoint and its pending deliveries."""
        await self._native.webhooks_delete_endpoint(self._ws, str(id))

    async def endpoint_secret(self, id: Id) -> str:
        """The endpoint's current signing secret (``whsec_…``)."""
        secret: str = await self._native.webhooks_endpoint_secret(self._ws, str(id))
        return secret

    async def rotate_secret(self, id: Id) -> str:
        """A new signing secret; the old one still signs for 24 hours."""
        secret: str = await self._native.webhooks_rotate_secret(self._ws, str(id))
        return secret

    async def test(self, id: Id) -> str:
        """Queues a ``webhook.test`` event for this endpoint only; its event id."""
        event: str = await self._native.webhooks_test(self._ws, str(id))
        return event

    async def resend(self, id: Id, event_id: Id) -> None:
        """Queues the event again for this endpoint (same ``webhook-id``)."""
        await self._native.webhooks_resend(self._ws, str(id), {"event_id": str(event_id)})

    async def message_attempts(self, id: Id, event_id: Id) -> List[Attempt]:
        """Every attempt to deliver one event to the endpoint, oldest first."""
        found = await self._native.webhooks_message_attempts(self._ws, str(id), {"event_id": str(event_id)})
        return [Attempt.from_dict(a) for a in found]

    async def attempts(self, id: Id, *, after: Optional[Id] = None, limit: int = 100) -> List[Attempt]:
        """The endpoint's delivery attempts, oldest first: at most ``limit`` (1–1000)
        after the attempt ``after`` (pass the last id of a page for the next)."""
        payload = _given(after=None if after is None else str(after), limit=limit)
        return [Attempt.from_dict(a) for a in await self._native.webhooks_attempts(self._ws, str(id), payload)]

    async def recent_attempts(self, id: Id, *, before: Optional[Id] = None, limit: int = 100) -> List[Attempt]:
        """The endpoint's delivery attempts, newest first: at most ``limit`` (1–1000)
        before the attempt ``before`` (pass the last id of a page for the next, older
        one)."""
        payload = _given(before=None if before is None else str(before), limit=limit)
        return [Attempt.from_dict(a) for a in await self._native.webhooks_recent_attempts(self._ws, str(id), payload)]


class Notifications(_Service):
    """Notification channels of one workspace (``discord``, ``telegram``, ``whatsapp``)."""

    __slots__ = ()

    async def create_channel(
        self,
        kind: str,
        name: str,
        config: Mapping[str, Any],
        *,
        event_types: Optional[Sequence[str]] = None,
        enabled: Optional[bool] = None,
    ) -> Channel:
        """A new channel; the plugin of ``kind`` checks ``config`` (which is stored
        sealed). ``event_types`` default to ``["lead.created"]``."""
        payload = _given(
            kind=kind, name=name, config=_object(config),
            event_types=None if event_types is None else _strings(event_types, "event_types"), enabled=enabled,
        )
        return Channel.from_dict(await self._native.notifications_create_channel(self._ws, payload))

    async def list_channels(self) -> List[Channel]:
        """Every channel."""
        return [Channel.from_dict(c) for c in await self._native.notifications_list_channels(self._ws)]

    async def channel_config(self, id: Id) -> Dict[str, Any]:
        """The channel's opened configuration (its webhook URL or bot token): for an
        admin who edits it. Keep it out of logs and responses."""
        config: Dict[str, Any] = await self._native.notifications_config(self._ws, str(id))
        return config

    async def get_channel(self, id: Id) -> Channel:
        """One channel."""
        return Channel.from_dict(await self._native.notifications_get_channel(self._ws, str(id)))

    async def update_channel(
        self,
        id: Id,
        *,
        name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        event_types: Optional[Sequence[str]] = None,
        enabled: Optional[bool] = None,
    ) -> Channel:
        """Changes the given fields (nothing of a channel can be cleared); a new
        ``config`` is checked by the channel's plugin first (its kind never
        changes), and if it is refused nothing is written."""
        payload = _given(
            name=name,
            config=None if config is None else _object(config),
            event_types=None if event_types is None else _strings(event_types, "event_types"),
            enabled=enabled,
        )
        return Channel.from_dict(await self._native.notifications_update_channel(self._ws, str(id), payload))

    async def attempts(self, id: Id, *, after: Optional[Id] = None, limit: int = 100) -> List[Attempt]:
        """The channel's send attempts, oldest first: at most ``limit`` (1–1000) after
        the attempt ``after``."""
        payload = _given(after=None if after is None else str(after), limit=limit)
        return [Attempt.from_dict(a) for a in await self._native.notifications_attempts(self._ws, str(id), payload)]

    async def delete_channel(self, id: Id) -> None:
        """Deletes the channel."""
        await self._native.notifications_delete_channel(self._ws, str(id))

    async def test_channel(self, id: Id) -> str:
        """Queues a test notification to this channel only; its event id."""
        event: str = await self._native.notifications_test_channel(self._ws, str(id))
        return event


class Integrations(_Service):
    """Provider credentials and settings of one workspace (``openai``, ``resend``,
    ``smtp``, ``whatsapp``, ``calcom``, ``telegram``, ``discord``): sealed with the
    master key, secrets never shown again. The workspace's own come before the
    server's defaults (its auth mails, its lead parsing, its inbound routes)."""

    __slots__ = ()

    async def list(self) -> List[Integration]:
        """Every integration of the workspace (secrets as names only)."""
        return [Integration.from_dict(i) for i in await self._native.integrations_list(self._ws)]

    async def get(self, kind: str) -> Integration:
        """The integration of ``kind`` (``NotFoundError`` when there is none)."""
        return Integration.from_dict(await self._native.integrations_get(self._ws, kind))

    async def save(self, kind: str, settings: Mapping[str, str]) -> Integration:
        """Saves the settings of ``kind`` after the provider accepted them: credentials
        it refuses raise ``ValidationError`` naming ``settings.<field>``, a provider
        that cannot be asked ``IntegrationError``; nothing is saved then. Values
        that are not secret are replaced by ``settings``; a secret left out keeps
        its saved value."""
        payload = {"settings": _object(settings)}
        return Integration.from_dict(await self._native.integrations_save(self._ws, kind, payload))

    async def settings(self, kind: str) -> Optional[Dict[str, str]]:
        """The opened settings of ``kind``, secrets included (for your own calls to
        the provider; never show them), or ``None``."""
        found: Optional[Dict[str, str]] = await self._native.integrations_settings(self._ws, kind)
        return found

    async def delete(self, kind: str) -> None:
        """Deletes the integration; the server's defaults apply again."""
        await self._native.integrations_delete(self._ws, kind)


class Idempotency(_Service):
    """Idempotency keys of one workspace (Stripe's ``Idempotency-Key`` contract),
    stored in the database so every process on it sees the same keys: a response is
    replayed for 24 hours to a request with the same key and the same request, and a
    claim left by a process that died is taken over after 5 minutes."""

    __slots__ = ()

    async def claim(self, scope: str, key: str, request: Sequence[Union[bytes, str]]) -> IdempotencyClaim:
        """Claims ``key`` within ``scope`` (e.g. an API key id) for a request made of
        the parts ``request`` (say its method, path and body; ``str`` parts count as
        UTF-8): a later claim replays only when the parts are equal. A key that is
        not 1–255 visible ASCII characters raises ``ValidationError`` naming
        ``Idempotency-Key``."""
        parts = [p.encode() if isinstance(p, str) else bytes(p) for p in request]
        outcome, status, body = await self._native.idempotency_claim(self._ws, scope, key, parts)
        return IdempotencyClaim(outcome=outcome, status=status, body=body)

    async def complete(self, scope: str, key: str, status: int, body: str) -> None:
        """Stores the response of a claimed key for replay (``status`` 100–599)."""
        await self._native.idempotency_complete(self._ws, scope, key, status, body)

    async def release(self, scope: str, key: str) -> None:
        """Gives a claim up without a response (the request failed with nothing
        worth replaying), so the next request with the key runs."""
        await self._native.idempotency_release(self._ws, scope, key)


class RateLimiter:
    """The rate limiter of a :class:`Crm`: named policies (the defaults, plus those
    given to ``Crm.connect(rate_limits=…)``), each counting per key. On SQLite the
    count lives in this process; on Postgres every process on the database shares
    it."""

    __slots__ = ("_native",)

    def __init__(self, native: "_native.Client") -> None:
        self._native = native

    async def _decide(self, enforce: bool, policy: str, key: str) -> RateLimitDecision:
        decide = self._native.crm_rate_limit_enforce if enforce else self._native.crm_rate_limit_check
        return RateLimitDecision.from_dict(await decide({"policy": policy, "key": key}))

    async def check(self, policy: str, key: str) -> RateLimitDecision:
        """Decides one request for ``key`` (a client address, an API key id, an
        account) under ``policy``; a refusal is a decision with ``allowed`` false.
        An unknown policy raises ``CrmError`` (``configuration_error``); an empty
        key, one over 256 bytes or one with a NUL ``ValidationError``. Use policies
        of your own: the built-in ones (``messages``, ``login_ip``, …) count crm's
        own budgets, which a check spends."""
        return await self._decide(False, policy, key)

    async def enforce(self, policy: str, key: str) -> RateLimitDecision:
        """As :meth:`check`, but a refusal raises ``RateLimitedError`` with its
        ``retry_after``."""
        return await self._decide(True, policy, key)


class Contacts(_Service):
    """Contacts (people) of one workspace: names, emails, phones, organization, owner."""

    __slots__ = ()

    async def create(
        self,
        first_name: str,
        *,
        last_name: Optional[str] = None,
        emails: Optional[Sequence[str]] = None,
        phones: Optional[Sequence[str]] = None,
        title: Optional[str] = None,
        address: Optional[str] = None,
        social: Optional[Mapping[str, str]] = None,
        organization_id: Optional[Id] = None,
        owner_id: Optional[Id] = None,
        notes: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        custom: Optional[Mapping[str, Any]] = None,
        last_contacted_at: Optional[datetime] = None,
    ) -> Contact:
        """Creates a contact (``ConflictError`` naming the contact that has one of
        its emails or phones). ``organization_id`` and ``owner_id`` must be of the
        workspace; ``social`` maps a network (``linkedin``) to an ``https`` URL."""
        payload = _given(
            first_name=first_name, last_name=last_name,
            emails=None if emails is None else _strings(emails, "emails"),
            phones=None if phones is None else _strings(phones, "phones"),
            title=title, address=address, social=None if social is None else _object(social),
            organization_id=None if organization_id is None else str(organization_id),
            owner_id=None if owner_id is None else str(owner_id), notes=notes,
            tags=None if tags is None else _strings(tags, "tags"),
            custom=None if custom is None else _object(custom),
            last_contacted_at=_when(last_contacted_at, "last_contacted_at"),
        )
        return Contact.from_dict(await self._native.contacts_create(self._ws, payload))

    async def get(self, id: Id) -> Contact:
        """A contact (``NotFoundError`` when the workspace has none with this id)."""
        return Contact.from_dict(await self._native.contacts_get(self._ws, str(id)))

    async def list(
        self,
        *,
        q: Optional[str] = None,
        owner_id: Optional[Id] = None,
        organization_id: Optional[Id] = None,
        tags: Optional[Sequence[str]] = None,
        sort: str = "created_at",
        order: str = "desc",
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        include_total: bool = False,
    ) -> ContactPage:
        """One page (``limit`` 1–100, default 20): every word of ``q`` prefix-matching
        the name, emails, title or notes, assigned to ``owner_id``, of
        ``organization_id``, with all ``tags``; sorted by ``created_at``,
        ``updated_at`` or ``name``."""
        payload = _people_list(
            q=q, owner_id=owner_id, sort=sort, order=order, limit=limit, cursor=cursor,
            include_total=include_total,
            organization_id=None if organization_id is None else str(organization_id),
            tags=None if tags is None else _strings(tags, "tags"),
        )
        return ContactPage.from_dict(await self._native.contacts_list(self._ws, payload))

    async def update(
        self,
        id: Id,
        *,
        first_name: Any = UNSET,
        last_name: Any = UNSET,
        emails: Any = UNSET,
        phones: Any = UNSET,
        title: Any = UNSET,
        address: Any = UNSET,
        social: Any = UNSET,
        organization_id: Any = UNSET,
        owner_id: Any = UNSET,
        notes: Any = UNSET,
        tags: Any = UNSET,
        custom: Any = UNSET,
        last_contacted_at: Any = UNSET,
    ) -> Contact:
        """Changes the given fields only (``contact.updated``); ``None`` clears an
        optional text, id or time. Lists, ``social`` and ``custom`` are replaced
        whole: pass ``[]`` or ``{}`` to empty them (``None`` leaves them)."""
        def many(value: Any, field: str) -> Any:
            return value if value is UNSET or value is None else _strings(value, field)

        payload = _changed(
            first_name=first_name, last_name=last_name, emails=many(emails, "emails"),
            phones=many(phones, "phones"), title=title, address=address,
            social=social if social is UNSET or social is None else _object(social),
            organization_id=_id_or_none(organization_id), owner_id=_id_or_none(owner_id),
            notes=notes, tags=many(tags, "tags"),
            custom=custom if custom is UNSET or custom is None else _object(custom),
            last_contacted_at=(
                last_contacted_at if last_contacted_at is UNSET
                else _when(last_contacted_at, "last_contacted_at")
            ),
        )
        return Contact.from_dict(await self._native.contacts_update(self._ws, str(id), payload))

    async def delete(self, id: Id) -> None:
        """Deletes the contact (``contact.deleted``); leads converted into it keep
        their timeline and lose the link."""
        await self._native.contacts_delete(self._ws, str(id))


class Organizations(_Service):
    """Organizations (companies) of one workspace: name, domain, industry, size, owner."""

    __slots__ = ()

    async def create(
        self,
        name: str,
        *,
        domain: Optional[str] = None,
        industry: Optional[str] = None,
        size: Optional[str] = None,
        address: Optional[str] = None,
        owner_id: Optional[Id] = None,
    ) -> Organization:
        """Creates an organization (``ConflictError`` naming the one that has its
        domain). A URL as ``domain`` is cut to its host, ``www.`` dropped."""
        payload = _given(
            name=name, domain=domain, industry=industry, size=size, address=address,
            owner_id=None if owner_id is None else str(owner_id),
        )
        return Organization.from_dict(await self._native.organizations_create(self._ws, payload))

    async def get(self, id: Id) -> Organization:
        """An organization (``NotFoundError`` when the workspace has none with this id)."""
        return Organization.from_dict(await self._native.organizations_get(self._ws, str(id)))

    async def list(
        self,
        *,
        q: Optional[str] = None,
        owner_id: Optional[Id] = None,
        sort: str = "created_at",
        order: str = "desc",
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        include_total: bool = False,
    ) -> OrganizationPage:
        """One page (``limit`` 1–100, default 20): every word of ``q`` prefix-matching
        the name, domain or industry, assigned to ``owner_id``; sorted by
        ``created_at``, ``updated_at`` or ``name``."""
        payload = _people_list(
            q=q, owner_id=owner_id, sort=sort, order=order, limit=limit, cursor=cursor,
            include_total=include_total,
        )
        return OrganizationPage.from_dict(await self._native.organizations_list(self._ws, payload))

    async def update(
        self,
        id: Id,
        *,
        name: Any = UNSET,
        domain: Any = UNSET,
        industry: Any = UNSET,
        size: Any = UNSET,
        address: Any = UNSET,
        owner_id: Any = UNSET,
    ) -> Organization:
        """Changes the given fields only; ``None`` clears an optional one."""
        payload = _changed(
            name=name, domain=domain, industry=industry, size=size, address=address,
            owner_id=_id_or_none(owner_id),
        )
        return Organization.from_dict(
            await self._native.organizations_update(self._ws, str(id), payload)
        )

    async def delete(self, id: Id) -> None:
        """Deletes the organization (``organization.deleted``); its contacts stay, unlinked."""
        await self._native.organizations_delete(self._ws, str(id))


def _parent(lead_id: Optional[Id], contact_id: Optional[Id]) -> Tuple[str, str]:
    """The (kind, id) a file belongs to: exactly one of a lead and a contact."""
    if (lead_id is None) == (contact_id is None):
        raise ValidationError(
            "invalid input: lead_id: give exactly one of lead_id and contact_id",
            [("lead_id", "give exactly one of lead_id and contact_id")],
        )
    return ("lead", str(lead_id)) if lead_id is not None else ("contact", str(contact_id))


class Attachments(_Service):
    """Files on leads and contacts (IDs, contracts, photos, voice notes): each call
    names the file's lead (``lead_id=``) or contact (``contact_id=``). A file's
    type is sniffed from its bytes and must be allowed (``CrmError``
    ``unsupported_media_type`` naming it); over the size limit is ``CrmError``
    ``file_too_large``; past the workspace's quota ``ConflictError``-like
    ``CrmError`` ``storage_quota_exceeded``; a storage that fails ``CrmError``
    ``storage_unavailable``. Each writes nothing."""

    __slots__ = ()

    async def add(
        self,
        *,
        lead_id: Optional[Id] = None,
        contact_id: Optional[Id] = None,
        data: Optional[bytes] = None,
        path: Union[str, "os.PathLike[str]", None] = None,
        name: Optional[str] = None,
        actor: Optional[str] = None,
    ) -> Attachment:
        """Attaches ``data`` (bytes, named ``name``) or the file at ``path`` (named
        ``name`` or as the file is); ``attachment.added``, and on a lead a timeline
        entry. ``actor`` (``whatsapp``, ``user:…``) is recorded as the uploader."""
        kind, parent = _parent(lead_id, contact_id)
        if (data is None) == (path is None):
            raise ValidationError(
                "invalid input: data: give exactly one of data and path",
                [("data", "give exactly one of data and path")],
            )
        if data is not None:
            if name is None:
                raise ValidationError("invalid input: name: is required with data", [("name", "is required with data")])
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ValidationError("invalid input: data: must be bytes", [("data", "must be bytes")])
            raw = await self._native.attachments_add(self._ws, kind, parent, name, bytes(data), actor)
        else:
            raw = await self._native.attachments_add_file(
                self._ws, kind, parent, os.fspath(path), name, actor  # type: ignore[arg-type]
            )
        return Attachment.from_dict(raw)

    async def list(self, *, lead_id: Optional[Id] = None, contact_id: Optional[Id] = None) -> List[Attachment]:
        """The files of a lead or contact, oldest first."""
        kind, parent = _parent(lead_id, contact_id)
        return [Attachment.from_dict(a) for a in await self._native.attachments_list(self._ws, kind, parent)]

    async def get(self, id: Id, *, lead_id: Optional[Id] = None, contact_id: Optional[Id] = None) -> Attachment:
        """One file's metadata (``NotFoundError`` unless it is the lead's or contact's)."""
        kind, parent = _parent(lead_id, contact_id)
        return Attachment.from_dict(await self._native.attachments_get(self._ws, kind, parent, str(id)))

    async def read(self, id: Id, *, lead_id: Optional[Id] = None, contact_id: Optional[Id] = None) -> bytes:
        """One file's bytes."""
        kind, parent = _parent(lead_id, contact_id)
        data: bytes = await self._native.attachments_read(self._ws, kind, parent, str(id))
        return data

    async def delete(
        self,
        id: Id,
        *,
        lead_id: Optional[Id] = None,
        contact_id: Optional[Id] = None,
        actor: Optional[str] = None,
    ) -> None:
        """Deletes a file and its bytes (``attachment.removed``)."""
        kind, parent = _parent(lead_id, contact_id)
        await self._native.attachments_delete(self._ws, kind, parent, str(id), actor)

    async def link(
        self,
        id: Id,
        *,
        lead_id: Optional[Id] = None,
        contact_id: Optional[Id] = None,
        expires_in: Optional[int] = None,
    ) -> SignedLink:
        """A download link that works for ``expires_in`` seconds (1 to 604800;
        default 900). Needs the master key."""
        kind, parent = _parent(lead_id, contact_id)
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0):
            raise ValidationError("invalid input: expires_in: must be a whole number of seconds", [("expires_in", "must be a whole number of seconds")])
        raw = await self._native.attachments_link(self._ws, kind, parent, str(id), expires_in)
        return SignedLink.from_dict(raw)

    async def usage(self) -> int:
        """The bytes the workspace's files take (what counts against its quota)."""
        n: int = await self._native.attachments_usage(self._ws)
        return n


class Workspace:
    """One tenant's services. Cheap to make; holds no connection of its own."""

    __slots__ = (
        "_native", "id", "leads", "contacts", "organizations", "attachments", "auth", "api_keys",
        "webhooks", "notifications", "integrations", "idempotency",
    )

    def __init__(self, native: "_native.Client", id: Id) -> None:
        ws = str(id)
        try:
            uuid.UUID(ws)
        except ValueError:
            raise ValidationError(
                "invalid input: workspace_id: must be a UUID", [("workspace_id", "must be a UUID")]
            ) from None
        self._native = native
        self.id = ws
        self.leads = Leads(native, ws)
        self.contacts = Contacts(native, ws)
        self.organizations = Organizations(native, ws)
        self.attachments = Attachments(native, ws)
        self.auth = Auth(native, ws)
        self.api_keys = ApiKeys(native, ws)
        self.webhooks = Webhooks(native, ws)
        self.notifications = Notifications(native, ws)
        self.integrations = Integrations(native, ws)
        self.idempotency = Idempotency(native, ws)

    async def info(self) -> WorkspaceInfo:
        """Its id, name and creation time (``NotFoundError`` if it does not exist)."""
        return WorkspaceInfo.from_dict(await self._native.workspace_info(self.id))

    async def rename(self, name: str) -> WorkspaceInfo:
        """Renames it (1–200 characters)."""
        return WorkspaceInfo.from_dict(await self._native.workspace_rename(self.id, {"name": name}))

    async def audit_log(self, *, after: Optional[Id] = None, limit: int = 100) -> List[AuditEntry]:
        """Its audit log, oldest first: at most ``limit`` (1–1000) entries after the
        entry ``after``."""
        payload = _given(after=None if after is None else str(after), limit=limit)
        return [AuditEntry.from_dict(e) for e in await self._native.workspace_audit_log(self.id, payload)]

    async def recent_audit_log(self, *, before: Optional[Id] = None, limit: int = 100) -> List[AuditEntry]:
        """Its audit log, newest first: at most ``limit`` (1–1000) entries before the
        entry ``before``."""
        payload = _given(before=None if before is None else str(before), limit=limit)
        return [AuditEntry.from_dict(e) for e in await self._native.workspace_recent_audit_log(self.id, payload)]

    def __repr__(self) -> str:
        return f"Workspace({self.id!r})"


class Crm(Workspace):
    """A connected crm; itself the default workspace (``client.leads`` …), with
    ``workspace(id)`` for the others.

    Make one per process (in FastAPI, in the lifespan) and share it: it holds the
    connection pool. ``async with`` closes it.
    """

    __slots__ = ("rate_limiter",)

    def __init__(self, native: "_native.Client", id: Id) -> None:
        super().__init__(native, id)
        self.rate_limiter = RateLimiter(native)

    @classmethod
    async def connect(
        cls,
        url: str = "sqlite://crm.db?mode=rwc",
        *,
        master_key: Optional[str] = None,
        master_key_id: str = "k1",
        max_connections: Optional[int] = None,
        rate_limits: Optional[Mapping[str, Tuple[int, float]]] = None,
        webhook_allow_networks: Optional[Sequence[str]] = None,
        mailer: Optional[Mapping[str, str]] = None,
        parser: Optional[Mapping[str, str]] = None,
        allowed_values: Optional[Mapping[str, Sequence[str]]] = None,
        default_country_code: Optional[int] = None,
        files: Optional[Mapping[str, Any]] = None,
        jwt: Optional[Mapping[str, Any]] = None,
        row_level_security: bool = False,
    ) -> "Crm":
        """Opens (and migrates) the database: ``sqlite://path?mode=rwc`` (SQLite, the
        default) or ``postgres://…``. ``master_key`` (base64 of 32 bytes) seals
        webhook and channel secrets; without one those services refuse to work.
        ``rate_limits`` adds or replaces named policies of :attr:`rate_limiter`:
        ``{"webhook": (10, 60)}`` is 10 requests a minute. Name your own policies:
        the defaults (``api_key``, ``login``, ``messages``, …) are crm's own limits,
        and replacing one changes how crm limits itself. A malformed network raises
        ``CrmError`` (``configuration_error``).
        ``webhook_allow_networks`` (``["127.0.0.1", "10.0.0.0/8"]``) lets webhooks
        reach those non-public networks, for tests and internal deployments; the
        SSRF guard refuses every other non-public address.

        ``mailer`` sends password-reset and verification mails (without one those
        flows raise ``CrmError`` ``configuration_error``, unless a workspace saved an
        email integration): ``{"kind": "resend", "api_key": …, "from": "CRM
        <crm@example.com>"}`` or ``{"kind": "smtp", "url": "smtps://user:pass@host",
        "from": …}``, each with optional ``reset_url`` and ``verify_url`` (both or
        neither; ``{token}`` is replaced by the token) and, for Resend, ``base_url``.
        ``parser`` reads lead text for ``leads.parse``: ``{"kind": "openai",
        "api_key": …}`` (optional ``model``, ``base_url``; when OpenAI fails the
        builtin parser stands in and the result says so) or ``{"kind": "builtin"}``,
        the default. ``allowed_values`` replaces the values ``budget``,
        ``project_type`` and ``source`` may take (``{"sources": ["web", "whatsapp"]}``;
        a list not given keeps its default). ``default_country_code`` (e.g. 34) reads
        phone numbers written without ``+`` as national numbers of that country.
        ``files`` turns on attachments, stored in a directory: ``{"dir":
        "./crm-files"}``, with optional ``max_file_size`` (bytes, default 25 MiB),
        ``quota`` (bytes per workspace, default 1 GiB) and ``link_base`` (the
        address download links start with, e.g. ``https://crm.example.com``).
        ``jwt`` trusts the tokens of an outside sign-in service (Supabase, Auth0):
        ``{"secret": …}`` (HS256) or ``{"jwks_url": …}`` (RS256/ES256), with
        ``issuer``, ``audience`` (one or a list), optional ``leeway`` (seconds, at
        most 300; default 60), ``workspace_claim`` (a dotted path such as
        ``app_metadata.crm_workspace``), ``default_workspace`` and ``role_claim``;
        see :meth:`verify_jwt`.
        ``row_level_security=True`` (Postgres) connects behind row-level security
        as an app role that neither owns crm's tables nor has ``BYPASSRLS``: each
        workspace's calls then see that workspace's rows only, whatever a query
        forgets. The tables' owner migrates and turns it on first (``crm migrate
        --row-level-security on``); this connection migrates nothing. Without it,
        a role that row-level security binds is refused (``configuration_error``).
        A malformed option raises ``ValidationError`` naming it (``mailer.kind``),
        or ``CrmError`` (``configuration_error``) when the value is refused."""
        for name, option in (("mailer", mailer), ("parser", parser)):
            # Checked here so that a secret passed in the wrong place is never
            # repeated in the error.
            if option is not None and not isinstance(option, Mapping):
                message = 'must be a dict with a "kind" and its settings'
                raise ValidationError(f"invalid input: {name}: {message}", [(name, message)])
        native = await _native.Client.connect(
            url,
            master_key=master_key,
            master_key_id=master_key_id,
            max_connections=max_connections,
            rate_limits=None if rate_limits is None else _policies(rate_limits),
            webhook_allow_networks=_networks(webhook_allow_networks),
            mailer=mailer,
            parser=parser,
            allowed_values=None if allowed_values is None else {
                k: _strings(v, f"allowed_values.{k}") for k, v in allowed_values.items()
            },
            default_country_code=default_country_code,
            files=None if files is None else {
                k: os.fspath(v) if k == "dir" else v for k, v in files.items()
            },
            jwt=jwt,
            row_level_security=row_level_security,
        )
        return cls(native, DEFAULT_WORKSPACE)

    def workspace(self, id: Id) -> Workspace:
        """The services of workspace ``id`` (``ValidationError`` if not a UUID)."""
        return Workspace(self._native, id)

    async def inbound_integration(self, kind: str, inbound_id: str) -> Tuple[Workspace, Dict[str, str]]:
        """The workspace whose ``kind`` integration has this inbound id, and its
        opened settings: for an inbound route of your own
        (``/webhooks/whatsapp/{inbound_id}``). ``NotFoundError`` for an id that is
        not one."""
        found = await self._native.crm_inbound_integration({"kind": kind, "inbound_id": inbound_id})
        return self.workspace(found["workspace_id"]), found["settings"]

    async def verify_jwt(self, token: str) -> ExternalIdentity:
        """Who a token of the outside sign-in service given to :meth:`connect`
        (``jwt=``) names: its subject, email, workspace and role, checked
        (signature, ``iss``, ``aud``, ``exp``/``nbf`` with the leeway). A token
        refused raises ``UnauthorizedError`` whose ``reason`` says why
        (``jwt_expired``, ``jwt_audience``, ``jwt_algorithm`` for ``alg: none`` or a
        key-confusion attempt, …); nothing is written."""
        return ExternalIdentity.from_dict(await self._native.verify_jwt(token))

    async def open_link(self, token: str) -> Tuple[Attachment, bytes]:
        """The file a signed link names (the ``token``, the value of the ``token``
        query parameter of a :class:`SignedLink` ``url``) and its bytes, for an app that serves links
        itself; ``UnauthorizedError`` (``invalid_link``) when the link is malformed,
        forged or expired."""
        raw, data = await self._native.attachments_open_link(token)
        return Attachment.from_dict(raw), data

    async def create_workspace(self, name: str) -> Workspace:
        """A new, empty workspace."""
        id: str = await self._native.crm_create_workspace({"name": name})
        return self.workspace(id)

    async def sign_in(
        self,
        email: str,
        password: str,
        *,
        remember_me: bool = False,
        ip: Optional[str] = None,
        user_agent: Optional[str] = None,
    ) -> Union[LoggedIn, List[WorkspaceChoice]]:
        """Signs in with an email and password only, in whichever workspace the email
        has an account: one account with this password gives a ``LoggedIn``; several
        give the workspaces to choose from (then ``workspace(id).auth.login``), and no
        session. An unknown email and a wrong password are the same
        ``UnauthorizedError`` (``invalid_credentials``) after the same work; too many
        attempts ``RateLimitedError``."""
        payload = _given(
            email=email, password=password, remember_me=remember_me, ip=ip, user_agent=user_agent
        )
        found = await self._native.crm_sign_in(payload)
        if "choose_workspace" in found:
            return [WorkspaceChoice.from_dict(c) for c in found["choose_workspace"]]
        return LoggedIn.from_dict(found["signed_in"])

    async def register(self, workspace_name: str, email: str, display_name: str, password: str) -> User:
        """A new workspace and its owner, in one transaction (does not sign in; an email
        with an account anywhere is ``CrmError`` with code ``email_taken``)."""
        payload = {
            "workspace_name": workspace_name, "email": email,
            "display_name": display_name, "password": password,
        }
        return User.from_dict(await self._native.crm_register(payload))

    async def authenticate_session(self, token: str) -> SessionUser:
        """The session and user of a session token (``UnauthorizedError`` when it is
        malformed, unknown or expired); extends a sliding session."""
        return SessionUser.from_dict(await self._native.crm_authenticate_session({"token": token}))

    async def verify_api_key(self, key: str, *, scope: Optional[str] = None) -> VerifiedKey:
        """Checks a presented key of any workspace (``workspace_id`` says whose):
        ``UnauthorizedError`` when it is malformed, unknown, revoked or expired;
        ``ForbiddenError`` when ``scope`` is given and the key lacks it. For a key
        that must belong to one workspace, use ``workspace(id).api_keys.verify``."""
        payload = _given(key=key, scope=scope)
        return VerifiedKey.from_dict(await self._native.crm_verify_api_key(payload))

    async def api_key_me(self, key: str) -> ApiKey:
        """The key a caller presented, as ``api_keys.get`` shows it (for a ``/me``
        route); refused as ``verify_api_key`` refuses."""
        return ApiKey.from_dict(await self._native.crm_api_key_me({"token": key}))

    async def providers(self) -> List[Dict[str, Any]]:
        """The integration providers a workspace can configure: each one's kind,
        name and settings fields."""
        found: List[Dict[str, Any]] = await self._native.crm_providers()
        return found

    async def request_password_reset(self, email: str) -> None:
        """Mails a reset token to every account with this email, in whichever
        workspace; an unknown email is not an error (no account discovery).
        ``CrmError`` (``configuration_error``) without a mailer."""
        await self._native.crm_request_password_reset({"email": email})

    async def resend_email_verification(self, email: str) -> None:
        """Mails a new verification token to every unverified account with this
        email; an unknown email is not an error."""
        await self._native.crm_resend_email_verification({"email": email})

    async def logout_everywhere(self, token: str) -> int:
        """Ends every session of the token's user; how many ended."""
        return int(await self._native.crm_logout_everywhere({"token": token}))

    async def logout(self, token: str) -> None:
        """Ends the session (an unknown token is fine)."""
        await self._native.crm_logout({"token": token})

    async def confirm_password_reset(self, token: str, new_password: str) -> User:
        """Sets a new password with a reset token; every session of the user ends."""
        payload = {"token": token, "new_password": new_password}
        return User.from_dict(await self._native.crm_confirm_password_reset(payload))

    async def confirm_email(self, token: str) -> User:
        """Marks the user's email verified with a verification token."""
        return User.from_dict(await self._native.crm_confirm_email({"token": token}))

    async def housekeep(self, *, retention: Optional[timedelta] = timedelta(days=30)) -> Purged:
        """One housekeeping pass over every workspace: expired sessions and tokens,
        quiet login throttles, old idempotency keys, idle rate-limit rows, and events
        and delivery attempts older than ``retention`` (``None`` keeps those
        forever). Run it every few minutes from one process."""
        if retention is not None and not isinstance(retention, timedelta):
            raise ValidationError(
                "invalid input: retention: must be a timedelta or None",
                [("retention", "must be a timedelta or None")],
            )
        seconds = None if retention is None else int(retention.total_seconds())
        return Purged.from_dict(await self._native.crm_housekeep({"retention_seconds": seconds}))

    async def ping(self) -> None:
        """Checks the database answers (``CrmError`` when it does not)."""
        await self._native.crm_ping()

    def start_dispatcher(self) -> None:
        """Delivers webhooks and notifications from this process until :meth:`close`.
        Any number of processes may run one against the same database."""
        self._native.start_dispatcher()

    async def close(self) -> None:
        """Stops the dispatcher (letting deliveries in flight finish) and closes the pool."""
        await self._native.close()

    async def __aenter__(self) -> "Crm":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "Crm()"
