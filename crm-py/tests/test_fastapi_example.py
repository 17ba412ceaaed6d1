"""examples/fastapi end to end through its TestClient (lifespan, real SQLite file)."""

import asyncio
import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from fastapi.testclient import TestClient

import crm
from conftest import ROOT

SECRET, TOKEN = "app-secret", "verify-me"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_example", ROOT / "examples" / "fastapi" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'bot.db'}?mode=rwc"


@pytest.fixture
def http(db: str) -> Iterator[TestClient]:
    app = load_example().create_app(db, app_secret=SECRET, verify_token=TOKEN)
    with TestClient(app) as c:
        yield c


def test_the_example_refuses_to_start_with_a_blank_secret(db: str) -> None:
    """Issue 15, item 14: the example defaulted the app secret to "" (any HMAC made with
    an empty key would have verified)."""
    for secret, token in (("", TOKEN), ("  ", TOKEN), (SECRET, "")):
        app = load_example().create_app(db, app_secret=secret, verify_token=token)
        with pytest.raises(RuntimeError, match="must be set"):
            with TestClient(app):
                pass


def message(wamid: str, text: str, phone: str = "15551234567", name: str = "Grace") -> bytes:
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "contacts": [{"wa_id": phone, "profile": {"name": name}}],
            "messages": [{"id": wamid, "from": phone, "timestamp": "1763800000", "type": "text",
                          "text": {"body": text}}],
        }}]}],
    }).encode()


def signed(body: bytes, secret: str = SECRET) -> Dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def api_key(db: str, scopes: list) -> str:
    async def make() -> str:
        async with await crm.Crm.connect(db) as c:
            return (await c.api_keys.create("test", scopes)).secret
    return asyncio.run(make())


def test_handshake(http: TestClient) -> None:
    ok = http.get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "4242"})
    assert ok.status_code == 200 and ok.text == "4242"
    bad = http.get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    assert http.get("/webhook").status_code == 401


def test_messages_become_leads_once(http: TestClient, db: str) -> None:
    key = api_key(db, ["leads:read"])
    auth = {"Authorization": f"Bearer {key}"}
    body = message("wamid.A1", "Hi, I need a website")
    first = http.post("/webhook", content=body, headers=signed(body))
    assert first.status_code == 200 and len(first.json()["captured"]) == 1
    again = http.post("/webhook", content=body, headers=signed(body))
    assert again.status_code == 200 and again.json() == {"captured": [], "duplicates": 1, "statuses": 0, "ignored": 0}
    later = message("wamid.A2", "Budget is 5k")
    assert http.post("/webhook", content=later, headers=signed(later)).json()["duplicates"] == 0

    page = http.get("/leads", headers=auth).json()
    assert [(lead["name"], lead["phone"], lead["source"]) for lead in page["items"]] == [("Grace", "+15551234567", "whatsapp")]
    detail = http.get(f"/leads/{page['items'][0]['id']}", headers=auth).json()
    assert sorted(a["description"] for a in detail["activities"] if a["kind"] == "message") == [
        "Budget is 5k", "Hi, I need a website"]


def test_bad_signatures_write_nothing(http: TestClient, db: str) -> None:
    body = message("wamid.B1", "hello")
    for headers in ({}, signed(body, "wrong-secret"), {"X-Hub-Signature-256": "sha256=zz"},
                    {"X-Hub-Signature-256": "garbage"}, signed(body + b" ")):
        r = http.post("/webhook", content=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "webhook_verification_failed"
    not_whatsapp = b'{"hello": "world"}'
    assert http.post("/webhook", content=not_whatsapp, headers=signed(not_whatsapp)).status_code == 422
    key = api_key(db, ["leads:read"])
    assert http.get("/leads", headers={"Authorization": f"Bearer {key}"}).json()["items"] == []


def test_leads_routes_check_keys_and_scopes(http: TestClient, db: str) -> None:
    reader = {"Authorization": f"Bearer {api_key(db, ['leads:read'])}"}
    writer = {"Authorization": f"Bearer {api_key(db, ['leads:read', 'leads:write'])}"}
    assert http.get("/leads").status_code == 401
    r = http.get("/leads", headers={"Authorization": "Bearer crm_nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    # crm.fastapi renders problems as crm-http does (the example used to put the
    # message in `title`).
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Unauthorized", "status": 401,
                        "detail": "malformed API key", "code": "unauthorized"}
    assert http.post("/leads", json={"name": "X"}, headers=reader).status_code == 403

    created = http.post("/leads", json={"name": "Hopper", "email": "grace@navy.mil", "tags": ["vip"]}, headers=writer)
    assert created.status_code == 201
    lead = created.json()
    assert lead["email"] == "grace@navy.mil" and lead["created_at"].endswith("Z")
    dup = http.post("/leads", json={"name": "Again", "email": "grace@navy.mil"}, headers=writer)
    assert dup.status_code == 409 and dup.json()["existing_id"] == lead["id"]
    bad = http.post("/leads", json={"name": "", "email": "nope"}, headers=writer)
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"name", "email"}
    assert http.get("/leads/not-a-uuid", headers=reader).status_code == 422
    assert http.get("/leads/00000000-0000-7000-8000-000000000000", headers=reader).status_code == 404
    act = http.post(f"/leads/{lead['id']}/activities", json={"kind": "note", "description": "met"}, headers=writer)
    assert act.status_code == 201 and act.json()["lead_id"] == lead["id"]
    assert http.delete(f"/leads/{lead['id']}", headers=writer).status_code == 403
    listed = http.get("/leads", params={"q": "hopper"}, headers=reader)
    assert [item["id"] for item in listed.json()["items"]] == [lead["id"]]
    # Keys are counted under the `api_key` policy (100 a minute), as crm-http counts them.
    assert listed.headers["x-ratelimit-limit"] == "100" and int(listed.headers["x-ratelimit-remaining"]) < 100
