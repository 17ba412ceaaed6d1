"""Auth, API keys, webhook endpoints and notification channels through Python."""

from datetime import datetime, timedelta, timezone

import pytest

import crm
from conftest import STRONG


async def test_users_login_sessions(client: crm.Crm) -> None:
    user = await client.auth.create_user("Owner@Example.com", "Owner", STRONG, role="owner")
    assert isinstance(user, crm.User) and user.email == "Owner@example.com" and user.role == "owner"
    member = await client.auth.create_user("m@example.com", "Member", STRONG)
    assert member.role == "member"
    assert {u.id for u in await client.auth.users()} == {user.id, member.id}
    assert (await client.auth.user(member.id)).display_name == "Member"
    assert (await client.auth.set_role(member.id, "admin")).role == "admin"

    logged = await client.auth.login("Owner@example.com", STRONG, remember_me=True, ip="203.0.113.7")
    assert isinstance(logged, crm.LoggedIn) and logged.user.id == user.id and logged.session.remember
    assert logged.token not in repr(logged) and "token" not in repr(logged)
    me = await client.authenticate_session(logged.token)
    assert isinstance(me, crm.SessionUser) and me.user.id == user.id
    await client.logout(logged.token)
    with pytest.raises(crm.UnauthorizedError) as e:
        await client.authenticate_session(logged.token)
    assert e.value.reason == "invalid_token"
    with pytest.raises(crm.UnauthorizedError) as e:
        await client.authenticate_session("short")
    assert e.value.reason == "malformed_token"

    await client.auth.change_password(user.id, STRONG, STRONG + "x")
    with pytest.raises(crm.UnauthorizedError):
        await client.auth.change_password(user.id, STRONG, STRONG + "y")
    assert (await client.auth.login("Owner@example.com", STRONG + "x")).user.id == user.id


async def test_users_are_disabled_deleted_and_signed_out(client: crm.Crm) -> None:
    owner = await client.auth.create_user("o@example.com", "Owner", STRONG, role="owner")
    member = await client.auth.create_user("m@example.com", "Member", STRONG)
    phone = await client.auth.login("m@example.com", STRONG, user_agent="Phone/1")
    await client.auth.login("m@example.com", STRONG)
    sessions = await client.auth.sessions(member.id)
    assert len(sessions) == 2 and {s.user_agent for s in sessions} == {"Phone/1", None}
    assert await client.auth.end_user_sessions(member.id) == 2
    with pytest.raises(crm.UnauthorizedError):
        await client.authenticate_session(phone.token)

    disabled = await client.auth.disable_user(member.id)
    assert disabled.disabled_at is not None
    with pytest.raises(crm.UnauthorizedError) as e:
        await client.auth.login("m@example.com", STRONG)
    assert e.value.reason == "invalid_credentials"
    assert (await client.auth.enable_user(member.id)).disabled_at is None
    await client.auth.login("m@example.com", STRONG)
    # The last owner stays, whoever asks.
    with pytest.raises(crm.ConflictError):
        await client.auth.disable_user(owner.id)
    with pytest.raises(crm.ConflictError):
        await client.auth.delete_user(owner.id)
    await client.auth.delete_user(member.id)
    with pytest.raises(crm.NotFoundError):
        await client.auth.user(member.id)


async def test_login_failures_are_generic_then_locked(client: crm.Crm) -> None:
    await client.auth.create_user("lock@example.com", "L", STRONG)
    for email in ("lock@example.com", "nobody@example.com"):
        with pytest.raises(crm.UnauthorizedError) as e:
            await client.auth.login(email, "Wrong-Password-123!")
        assert e.value.reason == "invalid_credentials" and str(e.value) == "unauthorized: invalid credentials"
    with pytest.raises(crm.RateLimitedError) as r:
        for _ in range(30):
            with pytest.raises(crm.UnauthorizedError):
                await client.auth.login("lock@example.com", "Wrong-Password-123!")
    assert r.value.retry_after > 0 and r.value.code == "rate_limited"


async def test_policy_registration_and_tokens(client: crm.Crm) -> None:
    with pytest.raises(crm.ValidationError) as e:
        await client.auth.create_user("weak@example.com", "W", "password")
    assert {f.field for f in e.value.errors} == {"password"} and len(e.value.errors) >= 3
    assert (await client.auth.users()) == []
    owner = await client.register("Acme", "boss@acme.test", "Boss", STRONG)
    assert owner.role == "owner" and owner.workspace_id != crm.DEFAULT_WORKSPACE
    assert (await client.workspace(owner.workspace_id).info()).name == "Acme"
    # Sign-in needs no workspace id: the email's one account is found.
    signed = await client.sign_in("BOSS@acme.test", STRONG)
    assert isinstance(signed, crm.LoggedIn)
    assert signed.session.workspace_id == owner.workspace_id and signed.user.id == owner.id
    with pytest.raises(crm.UnauthorizedError) as u:
        await client.sign_in("boss@acme.test", "Wrong-Password-9!")
    assert u.value.reason == "invalid_credentials"
    with pytest.raises(crm.UnauthorizedError) as u:
        await client.sign_in("nobody@acme.test", STRONG)
    assert u.value.reason == "invalid_credentials"
    # The same email cannot register a second workspace.
    with pytest.raises(crm.CrmError) as t:
        await client.register("Copy", "Boss@Acme.test", "Boss", STRONG)
    assert t.value.code == "email_taken"
    # Added to a second workspace with the same password: a choice, and no session.
    beta = await client.create_workspace("Beta")
    await beta.auth.create_user("boss@acme.test", "Boss", STRONG)
    choices = await client.sign_in("boss@acme.test", STRONG)
    assert isinstance(choices, list)
    assert [(c.id, c.name) for c in choices] == [(owner.workspace_id, "Acme"), (beta.id, "Beta")]
    # Connected without a mailer (and no email integration): asking is a configuration error.
    with pytest.raises(crm.CrmError) as m:
        await client.workspace(owner.workspace_id).auth.request_password_reset("boss@acme.test")
    assert m.value.code == "configuration_error"
    with pytest.raises(crm.UnauthorizedError):
        await client.confirm_password_reset("A" * 43, STRONG)
    with pytest.raises(crm.UnauthorizedError):
        await client.confirm_email("B" * 43)
    with pytest.raises(crm.CrmError):
        await client.auth.request_email_verification(owner.id)


async def test_api_keys(client: crm.Crm) -> None:
    expires = datetime.now(timezone.utc) + timedelta(days=1)
    created = await client.api_keys.create("bot", ["leads:read", "leads:write"], expires_at=expires)
    assert isinstance(created, crm.CreatedApiKey) and created.secret.startswith("crm_")
    assert created.secret not in repr(created) and created.key.expires_at is not None
    key = created.key
    assert created.secret not in repr(await client.api_keys.list())
    assert (await client.api_keys.get(key.id)).name == "bot"
    v = await client.api_keys.verify(created.secret, scope="leads:read")
    assert isinstance(v, crm.VerifiedKey) and v.key_id == key.id and v.scopes == ["leads:read", "leads:write"]
    with pytest.raises(crm.ForbiddenError):
        await client.api_keys.verify(created.secret, scope="leads:delete")
    updated = await client.api_keys.update(key.id, name="bot2", scopes=["leads:*"])
    assert updated.name == "bot2" and updated.scopes == ["leads:*"]
    await client.api_keys.verify(created.secret, scope="leads:delete")

    rotated = await client.api_keys.rotate(key.id, grace_seconds=0)
    assert rotated.secret != created.secret
    await client.api_keys.verify(rotated.secret)
    revoked = await client.api_keys.revoke(rotated.key.id)
    assert revoked.revoked_at is not None
    reasons = []
    for bad in (rotated.secret, "crm_nope", "", "crm_" + "A" * 38):
        with pytest.raises(crm.UnauthorizedError) as e:
            await client.api_keys.verify(bad)
        reasons.append(e.value.reason)
    assert reasons[0] == "revoked_key" and set(reasons[1:]) == {"malformed_key"}

    other = await client.create_workspace("Other")
    foreign = await other.api_keys.create("x", ["leads:read"])
    with pytest.raises(crm.UnauthorizedError) as e:
        await client.api_keys.verify(foreign.secret)
    assert e.value.reason == "unknown_key"
    with pytest.raises(crm.ValidationError) as ve:
        await client.api_keys.create("bad", ["leads:fly"])
    assert ve.value.errors[0].field.startswith("scopes")
    with pytest.raises(crm.ValidationError):
        await client.api_keys.create("naive", ["leads:read"], expires_at=datetime(2030, 1, 1))
    with pytest.raises(crm.NotFoundError):
        await client.api_keys.revoke("00000000-0000-7000-8000-000000000000")


async def test_webhook_endpoints(client: crm.Crm) -> None:
    created = await client.webhooks.create_endpoint(
        "https://1.1.1.1/crm", description="CRM", event_types=["lead.created"]
    )
    ep = created.endpoint
    assert isinstance(created, crm.CreatedEndpoint) and created.secret.startswith("whsec_")
    assert created.secret not in repr(created) and ep.enabled and ep.event_types == ["lead.created"]
    assert [e.id for e in await client.webhooks.list_endpoints()] == [ep.id]
    assert (await client.webhooks.get_endpoint(ep.id)).url == "https://1.1.1.1/crm"
    assert await client.webhooks.endpoint_secret(ep.id) == created.secret
    limited = await client.webhooks.update_endpoint(ep.id, rate_limit_per_minute=60)
    assert limited.rate_limit_per_minute == 60 and limited.description == "CRM"
    changed = await client.webhooks.update_endpoint(
        ep.id, description=None, rate_limit_per_minute=None, enabled=False
    )
    assert changed.description is None and changed.rate_limit_per_minute is None
    assert not changed.enabled and changed.url == ep.url
    new_secret = await client.webhooks.rotate_secret(ep.id)
    assert new_secret != created.secret and await client.webhooks.endpoint_secret(ep.id) == new_secret
    await client.webhooks.update_endpoint(ep.id, enabled=True)
    event = await client.webhooks.test(ep.id)
    await client.webhooks.resend(ep.id, event)
    with pytest.raises(crm.NotFoundError):
        await client.webhooks.resend(ep.id, "00000000-0000-7000-8000-000000000000")
    for url in ("http://10.0.0.1/hook", "not a url", "ftp://example.com/"):
        with pytest.raises(crm.ValidationError) as e:
            await client.webhooks.create_endpoint(url)
        assert e.value.errors[0].field == "url"
    await client.webhooks.delete_endpoint(ep.id)
    assert await client.webhooks.list_endpoints() == []


async def test_webhooks_need_a_master_key(database_url: str) -> None:
    async with await crm.Crm.connect(database_url) as c:
        with pytest.raises(crm.CrmError) as e:
            await c.webhooks.create_endpoint("https://1.1.1.1/crm")
        assert type(e.value) is crm.CrmError and e.value.code == "configuration_error"


async def test_notification_channels(client: crm.Crm) -> None:
    url = "https://discord.com/api/webhooks/1/abc"
    ch = await client.notifications.create_channel("discord", "Sales", {"webhook_url": url})
    assert isinstance(ch, crm.Channel) and ch.kind == "discord" and ch.event_types == ["lead.created"]
    assert url not in repr(ch) and "webhook_url" not in ch.to_dict()
    assert [c.id for c in await client.notifications.list_channels()] == [ch.id]
    assert (await client.notifications.get_channel(ch.id)).name == "Sales"
    assert await client.notifications.test_channel(ch.id)
    with pytest.raises(crm.ValidationError) as e:
        await client.notifications.create_channel("discord", "Bad", {"webhook_url": "http://x"})
    assert e.value.errors[0].field.startswith("config")
    with pytest.raises(crm.ValidationError):
        await client.notifications.create_channel("pager", "Nope", {})
    await client.notifications.delete_channel(ch.id)
    with pytest.raises(crm.NotFoundError):
        await client.notifications.get_channel(ch.id)


async def test_integrations(client: crm.Crm) -> None:
    acme = await client.create_workspace("Acme")
    saved = await acme.integrations.save(
        "calcom", {"webhook_secret": "cal-secret-acme", "booking_link": "https://cal.com/acme"}
    )
    assert isinstance(saved, crm.Integration) and saved.kind == "calcom"
    assert saved.settings == {"booking_link": "https://cal.com/acme"} and saved.secrets == ["webhook_secret"]
    assert saved.inbound_id is not None and len(saved.inbound_id) == 32
    assert "cal-secret-acme" not in repr(saved) and "cal-secret-acme" not in str(saved.to_dict())
    # A save without the secret keeps it; the inbound id stays.
    again = await acme.integrations.save("calcom", {})
    assert again.settings == {} and again.inbound_id == saved.inbound_id
    assert await acme.integrations.settings("calcom") == {"webhook_secret": "cal-secret-acme"}
    assert [i.kind for i in await acme.integrations.list()] == ["calcom"]
    assert await client.integrations.list() == [], "another workspace sees none"
    ws, settings = await client.inbound_integration("calcom", saved.inbound_id)
    assert ws.id == acme.id and settings["webhook_secret"] == "cal-secret-acme"
    with pytest.raises(crm.NotFoundError):
        await client.inbound_integration("whatsapp", saved.inbound_id)
    # Refused before the provider is asked: nothing saved.
    with pytest.raises(crm.ValidationError) as e:
        await acme.integrations.save("calcom", {"webhook_secret": "x" * 9, "colour": "red"})
    assert e.value.errors[0].field == "settings.colour"
    with pytest.raises(crm.ValidationError) as e:
        await acme.integrations.save(
            "whatsapp",
            {"access_token": "t", "phone_number_id": "not-a-number", "app_secret": "s", "verify_token": "v"},
        )
    assert e.value.errors[0].field == "settings.phone_number_id"
    with pytest.raises(crm.NotFoundError):
        await acme.integrations.get("whatsapp")
    await acme.integrations.delete("calcom")
    with pytest.raises(crm.NotFoundError):
        await acme.integrations.get("calcom")


async def test_send_message_refusals(client: crm.Crm) -> None:
    mail_only = await client.leads.create("Mail Only", email="m@example.com")
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.send_message(mail_only.id, "Hello")
    assert e.value.errors[0].field == "phone"
    ana = await client.leads.create("Ana", phone="+34600111222")
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.send_message(ana.id, "Hello", template="follow_up")
    assert e.value.errors[0].field == "text"
    # Ana never wrote: free text is outside the 24-hour window.
    with pytest.raises(crm.ConflictError) as c:
        await client.leads.send_message(ana.id, "Hello")
    assert c.value.code == "window_closed"
    # A template may go, but the workspace has no WhatsApp integration.
    with pytest.raises(crm.CrmError) as err:
        await client.leads.send_message(ana.id, template="follow_up", parameters=["Ana"])
    assert err.value.code == "configuration_error"
    assert await client.leads.activities(ana.id) == [], "nothing was recorded"


async def test_dispatcher_starts_and_stops(client: crm.Crm) -> None:
    client.start_dispatcher()
    client.start_dispatcher()  # a second call does nothing
    await client.leads.create("Dispatched", email="d@example.com")
