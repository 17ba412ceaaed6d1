"""The rate limiter, idempotency, the audit log, housekeeping, delivery attempts,
channel updates and Cal.com capture through Python."""

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Iterator, List

import pytest

import crm
from conftest import STRONG


async def test_rate_limiter_counts_per_policy_and_key(database_url: str) -> None:
    async with await crm.Crm.connect(database_url, rate_limits={"webhook": (2, 60)}) as c:
        first = await c.rate_limiter.check("webhook", "203.0.113.7")
        assert isinstance(first, crm.RateLimitDecision)
        assert first.allowed and first.limit == 2 and first.remaining == 1 and first.retry_after is None
        assert (await c.rate_limiter.enforce("webhook", "203.0.113.7")).remaining == 0
        refused = await c.rate_limiter.check("webhook", "203.0.113.7")
        assert not refused.allowed and refused.remaining == 0
        assert refused.retry_after is not None and 0 < refused.retry_after <= 30
        assert refused.reset_at >= first.reset_at
        with pytest.raises(crm.RateLimitedError) as e:
            await c.rate_limiter.enforce("webhook", "203.0.113.7")
        assert 0 < e.value.retry_after <= 30
        # Another key has its own budget.
        assert (await c.rate_limiter.check("webhook", "198.51.100.1")).allowed
        # A default policy is still there.
        assert (await c.rate_limiter.check("api_key", "k1")).allowed

        with pytest.raises(crm.CrmError) as err:
            await c.rate_limiter.check("nope", "k")
        assert err.value.code == "configuration_error"
        with pytest.raises(crm.ValidationError):
            await c.rate_limiter.check("webhook", "")
        with pytest.raises(crm.ValidationError):
            await c.rate_limiter.check("webhook", "k" * 257)


BAD_POLICIES = [
    (0, 60), (5, 0), (5, -1.0), (1.5, 60), "10/min", (True, 60), (5, float("nan")), (5, float("inf")),
    (5, 10**400), (5, 400 * 86400),
    # These pass the Python checks and are refused by the native module.
    (1, 1e-7), (2**32 - 1, 1),
]


@pytest.mark.parametrize("bad", BAD_POLICIES, ids=repr)
async def test_rate_limit_policies_are_checked_at_connect(database_url: str, bad: object) -> None:
    with pytest.raises(crm.ValidationError) as e:
        await crm.Crm.connect(database_url, rate_limits={"webhook": bad})  # type: ignore[dict-item]
    assert e.value.errors[0].field == "rate_limits.webhook"


@pytest.mark.parametrize("name", ["", "a:b", "n" * 65])
async def test_rate_limit_policy_names_are_checked_at_connect(database_url: str, name: str) -> None:
    with pytest.raises(crm.ValidationError) as e:
        await crm.Crm.connect(database_url, rate_limits={name: (1, 60)})
    assert e.value.errors[0].field == f"rate_limits.{name}"


async def test_audit_log_pages_and_stays_in_its_workspace(client: crm.Crm) -> None:
    first = await client.api_keys.create("bot", ["leads:read"])
    await client.api_keys.revoke(first.key.id)
    log = await client.audit_log()
    assert [e.action for e in log] == ["api_key.created", "api_key.revoked"]
    entry = log[0]
    assert isinstance(entry, crm.AuditEntry) and entry.target_type == "api_key"
    assert entry.target_id == first.key.id and entry.workspace_id == client.id
    assert first.secret not in repr(log) and first.secret not in str([e.to_dict() for e in log])
    assert [e.id for e in await client.audit_log(after=entry.id)] == [log[1].id]
    assert [e.id for e in await client.audit_log(limit=1)] == [entry.id]
    other = await client.create_workspace("Other")
    assert await other.audit_log() == []
    with pytest.raises(crm.ValidationError):
        await client.audit_log(limit=0)
    with pytest.raises(crm.ValidationError) as e:
        await client.audit_log(after="not-an-id")
    assert e.value.errors[0].field == "after"
    # Newest first, paged backwards.
    recent = await client.recent_audit_log()
    assert [e.id for e in recent] == [log[1].id, log[0].id]
    assert [e.id for e in await client.recent_audit_log(limit=1)] == [log[1].id]
    assert [e.id for e in await client.recent_audit_log(before=log[1].id)] == [log[0].id]
    assert await other.recent_audit_log() == []
    with pytest.raises(crm.ValidationError) as e:
        await client.recent_audit_log(before="nope")
    assert e.value.errors[0].field == "before"


class _Receiver(BaseHTTPRequestHandler):
    bodies: List[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("content-length", "0"))
        _Receiver.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def other_ws_attempts(c: crm.Crm, endpoint: str) -> List[crm.Attempt]:
    other = await c.create_workspace("Elsewhere")
    return await other.webhooks.recent_attempts(endpoint)


async def test_delivery_attempts_are_listed(database_url: str, master_key: str, receiver: str) -> None:
    async with await crm.Crm.connect(
        database_url, master_key=master_key, webhook_allow_networks="127.0.0.1"  # one network, not its characters
    ) as c:
        ep = (await c.webhooks.create_endpoint(receiver, event_types=["lead.created"])).endpoint
        c.start_dispatcher()
        lead = await c.leads.create("Ana", email="ana@example.com")
        attempts: List[crm.Attempt] = []
        deadline = time.monotonic() + 15
        while not attempts and time.monotonic() < deadline:
            await asyncio.sleep(0.025)
            attempts = await c.webhooks.attempts(ep.id)
        assert len(attempts) == 1, "the lead's event was delivered once"
        a = attempts[0]
        assert isinstance(a, crm.Attempt) and a.kind == "webhook" and a.target_id == ep.id
        assert a.status_code == 200 and a.response_body == "ok" and a.error_kind is None
        assert a.attempt == 1 and a.next_attempt_at is None
        assert lead.id.encode() in b"".join(_Receiver.bodies)
        assert await c.webhooks.attempts(ep.id, after=a.id) == []
        await c.webhooks.resend(ep.id, a.event_id)
        both: List[crm.Attempt] = []
        deadline = time.monotonic() + 15
        while len(both) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.025)
            both = await c.webhooks.recent_attempts(ep.id)
        assert [x.id for x in both][1] == a.id, "newest first"
        assert [x.id for x in await c.webhooks.recent_attempts(ep.id, before=both[0].id)] == [a.id]
        assert len(await c.webhooks.recent_attempts(ep.id, limit=1)) == 1
        with pytest.raises(crm.NotFoundError):
            await other_ws_attempts(c, ep.id)
        with pytest.raises(crm.ValidationError):
            await c.webhooks.attempts(ep.id, limit=1001)
        with pytest.raises(crm.NotFoundError):
            await c.webhooks.attempts("00000000-0000-7000-8000-000000000000")
        other = await c.create_workspace("Other")
        with pytest.raises(crm.NotFoundError):
            await other.webhooks.attempts(ep.id)


async def test_channels_are_updated(client: crm.Crm) -> None:
    url = "https://discord.com/api/webhooks/1/abc"
    ch = await client.notifications.create_channel("discord", "Sales", {"webhook_url": url})
    renamed = await client.notifications.update_channel(ch.id, name="Sales EU", event_types=["lead.*"])
    assert renamed.name == "Sales EU" and renamed.event_types == ["lead.*"] and renamed.enabled
    off = await client.notifications.update_channel(ch.id, enabled=False)
    assert not off.enabled and off.name == "Sales EU"
    moved = await client.notifications.update_channel(
        ch.id, config={"webhook_url": "https://discord.com/api/webhooks/2/def"}
    )
    assert moved.updated_at >= off.updated_at and "webhook_url" not in moved.to_dict()
    with pytest.raises(crm.ValidationError) as e:
        await client.notifications.update_channel(ch.id, config={"webhook_url": "http://x"}, name="Bad")
    assert e.value.errors[0].field.startswith("config")
    assert (await client.notifications.get_channel(ch.id)).name == "Sales EU", "nothing was written"
    assert await client.notifications.attempts(ch.id) == []
    other = await client.create_workspace("Other")
    with pytest.raises(crm.NotFoundError):
        await other.notifications.update_channel(ch.id, name="Taken")
    with pytest.raises(crm.NotFoundError):
        await other.notifications.attempts(ch.id)


async def test_idempotency_replays_and_refuses_another_request(client: crm.Crm) -> None:
    keys = client.idempotency
    request = ["POST", "/leads", b'{"name": "Ana"}']
    first = await keys.claim("key_1", "order-1", request)
    assert isinstance(first, crm.IdempotencyClaim) and first.outcome == "new"
    assert (await keys.claim("key_1", "order-1", request)).outcome == "in_flight"
    await keys.complete("key_1", "order-1", 201, '{"id": "l1"}')
    replay = await keys.claim("key_1", "order-1", request)
    assert (replay.outcome, replay.status, replay.body) == ("replay", 201, '{"id": "l1"}')
    other = ["POST", "/leads", b'{"name": "Bo"}']
    assert (await keys.claim("key_1", "order-1", other)).outcome == "mismatch"
    # The parts are length-prefixed: a different split is a different request.
    assert (await keys.claim("key_1", "order-1", ["POST", "/leads{", b'"name": "Ana"}'])).outcome == "mismatch"
    # Scopes and workspaces keep their own keys.
    assert (await keys.claim("key_2", "order-1", request)).outcome == "new"
    acme = await client.create_workspace("Acme")
    assert (await acme.idempotency.claim("key_1", "order-1", request)).outcome == "new"
    # A released claim runs again.
    assert (await keys.claim("key_1", "order-2", request)).outcome == "new"
    await keys.release("key_1", "order-2")
    assert (await keys.claim("key_1", "order-2", request)).outcome == "new"

    with pytest.raises(crm.ValidationError) as e:
        await keys.claim("key_1", "has space", request)
    assert e.value.errors[0].field == "Idempotency-Key"
    with pytest.raises(crm.ValidationError):
        await keys.claim("key_1", "k" * 256, request)
    for status in (99, 600, -1, 2**40):
        with pytest.raises(crm.ValidationError) as e:
            await keys.complete("key_1", "order-3", status, "{}")
        assert e.value.errors[0].field == "status"


async def test_housekeeping_runs_and_refuses_a_negative_retention(client: crm.Crm) -> None:
    purged = await client.housekeep()
    assert isinstance(purged, crm.Purged) and purged.total == 0
    assert (await client.housekeep(retention=None)).total == 0
    with pytest.raises(crm.ValidationError) as e:
        await client.housekeep(retention=timedelta(seconds=-1))
    assert e.value.errors[0].field == "retention"
    with pytest.raises(crm.ValidationError):
        await client.housekeep(retention=30)  # type: ignore[arg-type]


def _cal_body(trigger: str, uid: str = "bk-1") -> bytes:
    return json.dumps(
        {
            "triggerEvent": trigger,
            "payload": {
                "uid": uid,
                "title": "Intro call",
                "startTime": "2026-01-02T10:00:00Z",
                "attendees": [{"name": "Cal Person", "email": "cal@example.com"}],
            },
        }
    ).encode()


def _cal_sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_calcom_bookings_become_leads(client: crm.Crm) -> None:
    secret = "cal-secret"
    body = _cal_body("BOOKING_CREATED")
    booked = await crm.calcom.receive(client, secret, _cal_sign(secret, body), body)
    assert isinstance(booked, crm.Booking) and booked.outcome == "captured" and booked.created
    assert booked.lead_id is not None
    lead = await client.leads.get(booked.lead_id)
    assert lead.email == "cal@example.com" and lead.source == "cal_com"
    assert [a.kind for a in lead.activities] == ["booking"]
    again = await crm.calcom.receive(client, secret, _cal_sign(secret, body), body)
    assert again.outcome == "duplicate" and again.lead_id is None
    moved = _cal_body("BOOKING_RESCHEDULED")
    r = await crm.calcom.receive(client, secret, _cal_sign(secret, moved), moved)
    assert r.outcome == "captured" and r.lead_id == booked.lead_id and not r.created
    ping = _cal_body("PING")
    ignored = await crm.calcom.receive(client, secret, _cal_sign(secret, ping), ping.decode())
    assert ignored.outcome == "ignored" and ignored.trigger == "PING"

    other = _cal_body("BOOKING_CREATED", uid="bk-2")
    for signature in (None, "00" * 32, _cal_sign("wrong", other), "no-secret-provided"):
        with pytest.raises(crm.WebhookVerificationError):
            await crm.calcom.receive(client, secret, signature, other)
    with pytest.raises(crm.ValidationError):
        await crm.calcom.receive(client, secret, _cal_sign(secret, b"[]"), b"[]")
    page = await client.leads.list()
    assert len(page.items) == 1, "refused payloads wrote nothing"


async def test_the_rest_of_the_surface(database_url: str, master_key: str, receiver: str) -> None:
    """The operations the surface test asked for: sessions, lockouts, keys of any
    workspace, a channel's config, one event's attempts, providers."""
    async with await crm.Crm.connect(database_url, master_key=master_key, webhook_allow_networks=["127.0.0.1"]) as c:
        user = await c.auth.create_user("m@example.com", "Member", STRONG)
        first = await c.auth.login("m@example.com", STRONG)
        second = await c.auth.login("m@example.com", STRONG)
        await c.auth.end_session(user.id, first.session.id)
        with pytest.raises(crm.UnauthorizedError):
            await c.authenticate_session(first.token)
        assert (await c.authenticate_session(second.token)).user.id == user.id
        with pytest.raises(crm.NotFoundError):
            await c.auth.end_session(user.id, first.session.id)
        third = await c.auth.login("m@example.com", STRONG)
        assert await c.logout_everywhere(third.token) == 2
        with pytest.raises(crm.UnauthorizedError):
            await c.authenticate_session(second.token)
        await c.auth.lift_lockout(user.id)
        with pytest.raises(crm.NotFoundError):
            await c.auth.lift_lockout(str(uuid.uuid4()))
        # Without a mailer, a workspace's mail-sending call says so; the calls across
        # workspaces answer the same whatever the email (a workspace may have an
        # email integration of its own), and refuse only a malformed email.
        with pytest.raises(crm.CrmError) as e:
            await c.auth.resend_email_verification("m@example.com")
        assert e.value.code == "configuration_error"
        for ask in (c.request_password_reset, c.resend_email_verification):
            assert await ask("m@example.com") is None
            assert await ask("nobody@example.com") is None
            with pytest.raises(crm.ValidationError):
                await ask("not an email")

        # A key of another workspace verifies across workspaces, and says whose it is.
        other = await c.create_workspace("Other")
        created = await other.api_keys.create("bot", ["leads:read"])
        found = await c.verify_api_key(created.secret, scope="leads:read")
        assert (found.workspace_id, found.key_id) == (other.id, created.key.id)
        with pytest.raises(crm.UnauthorizedError):
            await c.api_keys.verify(created.secret)
        with pytest.raises(crm.ForbiddenError):
            await c.verify_api_key(created.secret, scope="leads:write")
        assert (await c.api_key_me(created.secret)).id == created.key.id
        with pytest.raises(crm.UnauthorizedError):
            await c.verify_api_key("crm_nope")

        url = "https://discord.com/api/webhooks/1/abc"
        ch = await c.notifications.create_channel("discord", "Sales", {"webhook_url": url})
        assert await c.notifications.channel_config(ch.id) == {"webhook_url": url}
        assert "discord" in {p["kind"] for p in await c.providers()}

        ep = (await c.webhooks.create_endpoint(receiver, event_types=["lead.created"])).endpoint
        c.start_dispatcher()
        await c.leads.create("Ana", email="ana@example.com")
        deadline = time.monotonic() + 15
        listed: List[crm.Attempt] = []
        while not listed and time.monotonic() < deadline:
            listed = await c.webhooks.attempts(ep.id)
            await asyncio.sleep(0.05)
        assert len(listed) == 1 and listed[0].status_code == 200
        assert await c.webhooks.message_attempts(ep.id, listed[0].event_id) == listed
        assert await c.webhooks.message_attempts(ep.id, str(uuid.uuid4())) == []


async def test_inputs_are_held_to_what_json_allows(client: crm.Crm) -> None:
    """The bridge reads inputs as the HTTP API does: nothing runs, nothing is
    written, and the field is named."""
    cycle: List[object] = []
    cycle.append(cycle)
    deep: List[object] = []
    for _ in range(200):
        deep = [deep]
    cases = [
        ({"custom": {"x": cycle}}, "custom.x"),
        ({"custom": {"x": deep}}, "custom.x"),
        ({"custom": {"nan": float("nan")}}, "custom.nan"),
        ({"custom": {"when": timedelta(seconds=1)}}, "custom.when"),
        ({"custom": {1: "x"}}, "custom"),
    ]
    for extra, field in cases:
        with pytest.raises(crm.ValidationError) as e:
            await client.leads.create("Ana", email="ana@example.com", **extra)  # type: ignore[arg-type]
        assert e.value.errors[0].field.startswith(field), (extra, e.value.errors)
    # A bool is not a number, and a string is not a bool.
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.list(limit=True)
    assert e.value.errors[0].field == "limit"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.parse("Ana ana@example.com", auto_save="false")  # type: ignore[arg-type]
    assert e.value.errors[0].field == "auto_save"
    assert (await client.leads.list()).items == []


async def test_wrong_types_are_validation_errors_naming_the_field(client: crm.Crm) -> None:
    """Never a TypeError from inside the package: each wrong type names its field."""
    cases = [
        (lambda: client.leads.create("Ana", email="a@example.com", tags=5), "tags"),  # type: ignore[arg-type]
        (lambda: client.leads.create("Ana", email="a@example.com", custom=5), "custom"),  # type: ignore[arg-type]
        (lambda: client.leads.create(5, email="a@example.com"), "name"),  # type: ignore[arg-type]
        (lambda: client.leads.list(limit="10"), "limit"),  # type: ignore[arg-type]
        (lambda: client.leads.list(sort="price"), "sort"),
        (lambda: client.leads.get(5), "id"),  # type: ignore[arg-type]
        (lambda: client.leads.list(created_after=datetime(2026, 1, 1)), "created_after"),
        (lambda: client.notifications.create_channel("discord", "x", 5), "config"),  # type: ignore[arg-type]
        (lambda: client.api_keys.create("bot", 5), "scopes"),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(crm.ValidationError) as e:
            await call()
        assert e.value.errors[0].field.startswith(field), (field, e.value.errors)
    with pytest.raises(crm.ValidationError):
        await crm.Crm.connect("sqlite://never.db", webhook_allow_networks=5)  # type: ignore[arg-type]
    assert (await client.leads.list()).items == []
