"""crm.fastapi: the API-key, session and rate-limit dependencies, the problem-details
handler and the inbound routers, through a real app (httpx over ASGI) on SQLite and,
when CRM_TEST_PG_URL is set, Postgres. Bodies are compared whole: they are crm-http's."""

import hashlib
import hmac
import json
import subprocess
import sys
import time
from typing import Any, AsyncIterator, Dict, Optional, Type

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response

import crm
import crm.fastapi as cf
from conftest import STRONG
from crm import _native

WA_SECRET, WA_TOKEN, CAL_SECRET = "wa-app-secret", "wa-verify-token", "cal-secret"
ORIGIN = "https://app.example.com"


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> Dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code, **extra}


def missing_key() -> Dict[str, Any]:
    message = "must be `Bearer <API key>`"
    return problem(401, "Unauthorized", f"Authorization: {message}", "unauthorized",
                   errors=[{"field": "Authorization", "message": message}])


FORBIDDEN = problem(403, "Forbidden", "the credential does not allow this action", "forbidden")
CSRF_MESSAGE = "a state-changing request must come from an allowed origin or carry X-CRM-CSRF"
CSRF_FAILED = problem(403, "Forbidden", f"Origin: {CSRF_MESSAGE}", "csrf_failed",
                      errors=[{"field": "Origin", "message": CSRF_MESSAGE}])
NOT_CONFIGURED = problem(503, "Service Unavailable", "this server is not configured for this request",
                         "configuration_error")


def is_problem(r: httpx.Response, status: int, body: Dict[str, Any]) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == body


def bearer(secret: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def session_cookie(token: str, name: str = cf.SESSION_COOKIE) -> Dict[str, str]:
    return {"Cookie": f"{name}={token}"}


# -------------------------------------------------------------------- the app


@pytest.fixture
async def c(database_url: str, master_key: str) -> AsyncIterator[crm.Crm]:
    client = await crm.Crm.connect(
        database_url, master_key=master_key, rate_limits={"burst": (2, 60), "wide": (100, 60)}
    )
    try:
        yield client
    finally:
        await client.close()


def make_app(client: Optional[crm.Crm]) -> FastAPI:
    app = FastAPI()
    cf.install(app)
    if client is not None:
        app.state.crm = client

    def key_body(key: crm.VerifiedKey) -> Dict[str, Any]:
        return {"key_id": key.key_id, "workspace_id": key.workspace_id, "scopes": key.scopes}

    @app.get("/read")
    async def read(request: Request, key: crm.VerifiedKey = Depends(cf.crm_api_key("leads:read"))) -> Dict[str, Any]:
        assert request.state.crm_api_key is key
        return key_body(key)

    @app.get("/read-write")
    async def read_write(key: crm.VerifiedKey = Depends(cf.crm_api_key("leads:read", "leads:write"))) -> Dict[str, Any]:
        return key_body(key)

    @app.get("/any-key")
    async def any_key(key: crm.VerifiedKey = Depends(cf.crm_api_key())) -> Dict[str, Any]:
        return key_body(key)

    in_path = cf.crm_api_key("leads:read", workspace=lambda r: str(r.path_params["workspace_id"]))

    @app.get("/ws/{workspace_id}/read")
    async def ws_read(workspace_id: str, key: crm.VerifiedKey = Depends(in_path)) -> Dict[str, Any]:
        return key_body(key)

    @app.get("/keyed-limit")
    async def keyed_limit(key: crm.VerifiedKey = Depends(cf.crm_api_key("leads:read", rate_limit="burst"))) -> Dict[str, Any]:
        return key_body(key)

    def session_body(s: crm.SessionUser) -> Dict[str, Any]:
        return {"user_id": s.user.id, "role": s.user.role, "session_id": s.session.id}

    me = cf.crm_session(allowed_origins=[ORIGIN + "/"])

    @app.get("/me")
    async def get_me(request: Request, s: crm.SessionUser = Depends(me)) -> Dict[str, Any]:
        assert request.state.crm_session is s
        return session_body(s)

    @app.post("/me")
    async def post_me(s: crm.SessionUser = Depends(me)) -> Dict[str, Any]:
        return session_body(s)

    @app.get("/admin")
    async def admin(s: crm.SessionUser = Depends(cf.crm_session(roles={"owner", "admin"}))) -> Dict[str, Any]:
        return session_body(s)

    @app.get("/cookie-only")
    async def cookie_only(s: crm.SessionUser = Depends(cf.crm_session(cookie="sid", bearer=False))) -> Dict[str, Any]:
        return session_body(s)

    @app.post("/login")
    async def login(request: Request, response: Response) -> Dict[str, Any]:
        body = await request.json()
        done = await cf.get_crm(request).auth.login(body["email"], body["password"])
        cf.set_session_cookie(response, done.token)
        return {"user_id": done.user.id}

    @app.post("/logout")
    async def logout(response: Response) -> None:
        cf.clear_session_cookie(response)

    @app.get("/limited")
    async def limited(decision: crm.RateLimitDecision = Depends(cf.crm_rate_limit("burst"))) -> Dict[str, Any]:
        return {"remaining": decision.remaining}

    by_user = cf.crm_rate_limit("burst", key=lambda r: "user:" + r.headers.get("x-user", "anon"))

    @app.get("/limited-by-user", dependencies=[Depends(by_user)])
    async def limited_by_user() -> Dict[str, Any]:
        return {}

    async def async_key(request: Request) -> str:
        return "async:" + request.headers.get("x-user", "anon")

    @app.get("/limited-async", dependencies=[Depends(cf.crm_rate_limit("burst", key=async_key))])
    async def limited_async() -> Dict[str, Any]:
        return {}

    @app.get("/limited-raw", dependencies=[Depends(cf.crm_rate_limit("wide", key=lambda r: "raw"))])
    async def limited_raw() -> Response:
        return Response(status_code=204)

    @app.get("/limited-then-404", dependencies=[Depends(cf.crm_rate_limit("wide", key=lambda r: "404"))])
    async def limited_then_404() -> Dict[str, Any]:
        raise crm.NotFoundError("lead not found", "lead")

    @app.get("/unknown-policy", dependencies=[Depends(cf.crm_rate_limit("nope"))])
    async def unknown_policy() -> Dict[str, Any]:
        return {}

    @app.get("/raise/{code}")
    async def raise_native(code: str) -> None:
        _native.sample_error(code)

    @app.get("/raise-py/{name}")
    async def raise_python(name: str) -> None:
        raise PYTHON_ERRORS[name][0]

    app.include_router(cf.whatsapp_router(app_secret=WA_SECRET, verify_token=WA_TOKEN))
    app.include_router(cf.whatsapp_router(app_secret=" ", verify_token="", path="/blank/whatsapp", integrations=False))
    app.include_router(cf.whatsapp_router(app_secret=WA_SECRET, verify_token=WA_TOKEN, path="/small/whatsapp",
                                          integrations=False, max_body=1024))
    app.include_router(cf.calcom_router(secret=CAL_SECRET))
    app.include_router(cf.calcom_router(path="/blank/cal", integrations=False))
    app.include_router(cf.calcom_router(secret=CAL_SECRET, path="/limited/cal", integrations=False, rate_limit="burst"))
    return app


@pytest.fixture
async def http(c: crm.Crm) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(c))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as h:
        yield h


# -------------------------------------------------------------------- API keys


async def test_api_key_passes_with_its_scopes(c: crm.Crm, http: httpx.AsyncClient) -> None:
    made = await c.api_keys.create("reader", ["leads:read"])
    r = await http.get("/read", headers=bearer(made.secret))
    assert r.status_code == 200
    assert r.json() == {"key_id": made.key.id, "workspace_id": crm.DEFAULT_WORKSPACE, "scopes": ["leads:read"]}
    assert "x-ratelimit-limit" not in r.headers, "no rate limit unless asked for"
    # The scheme is case-insensitive and the key may be padded, as in crm-http.
    assert (await http.get("/read", headers={"Authorization": f"bearer   {made.secret} "})).status_code == 200
    # No scope asked: any valid key.
    assert (await http.get("/any-key", headers=bearer(made.secret))).status_code == 200
    # Every scope must be held; wildcards count as crm's own check counts them.
    wide = await c.api_keys.create("writer", ["leads:*"])
    assert (await http.get("/read-write", headers=bearer(wide.secret))).json()["key_id"] == wide.key.id


async def test_api_key_refusals(c: crm.Crm, http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"X-Api-Key": "crm_x"}):
        r = await http.get("/read", headers=headers)
        is_problem(r, 401, missing_key())
        assert r.headers["www-authenticate"] == "Bearer", headers

    r = await http.get("/read", headers=bearer("crm_nope"))
    is_problem(r, 401, problem(401, "Unauthorized", "malformed API key", "unauthorized"))
    assert r.headers["www-authenticate"] == "Bearer"

    reader = await c.api_keys.create("reader", ["leads:read"])
    r = await http.get("/read-write", headers=bearer(reader.secret))
    is_problem(r, 403, FORBIDDEN)
    assert "www-authenticate" not in r.headers

    acme = await c.create_workspace("Acme")
    foreign = await acme.api_keys.create("acme", ["*"])
    r = await http.get("/read", headers=bearer(foreign.secret))
    is_problem(r, 401, problem(401, "Unauthorized", "unknown API key", "unauthorized"))

    revoked = await c.api_keys.create("gone", ["leads:read"])
    assert (await http.get("/read", headers=bearer(revoked.secret))).status_code == 200
    await c.api_keys.revoke(revoked.key.id)
    r = await http.get("/read", headers=bearer(revoked.secret))
    is_problem(r, 401, problem(401, "Unauthorized", "revoked API key", "unauthorized"))
    assert r.headers["www-authenticate"] == "Bearer"


async def test_api_key_in_a_workspace_named_by_the_request(c: crm.Crm, http: httpx.AsyncClient) -> None:
    acme = await c.create_workspace("Acme")
    key = await acme.api_keys.create("acme", ["leads:read"])
    r = await http.get(f"/ws/{acme.id}/read", headers=bearer(key.secret))
    assert r.status_code == 200 and r.json()["workspace_id"] == acme.id
    r = await http.get(f"/ws/{crm.DEFAULT_WORKSPACE}/read", headers=bearer(key.secret))
    is_problem(r, 401, problem(401, "Unauthorized", "unknown API key", "unauthorized"))
    # Credentials come first: no key is a 401 whatever the path says.
    is_problem(await http.get("/ws/not-a-uuid/read"), 401, missing_key())
    r = await http.get("/ws/not-a-uuid/read", headers=bearer(key.secret))
    is_problem(r, 422, problem(422, "Unprocessable Entity", "invalid input: workspace_id: must be a UUID",
                               "validation_failed", errors=[{"field": "workspace_id", "message": "must be a UUID"}]))


async def test_api_key_rate_limit_counts_per_key(c: crm.Crm, http: httpx.AsyncClient) -> None:
    one = await c.api_keys.create("one", ["leads:read"])
    two = await c.api_keys.create("two", ["leads:read"])
    first = await http.get("/keyed-limit", headers=bearer(one.secret))
    assert first.status_code == 200
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("2", "1")
    assert (await http.get("/keyed-limit", headers=bearer(one.secret))).headers["x-ratelimit-remaining"] == "0"
    refused = await http.get("/keyed-limit", headers=bearer(one.secret))
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert refused.headers["x-ratelimit-remaining"] == "0" and int(refused.headers["retry-after"]) >= 1
    other = await http.get("/keyed-limit", headers=bearer(two.secret))
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "1"


async def test_explicit_crm_and_a_missing_one(c: crm.Crm) -> None:
    key = await c.api_keys.create("k", ["leads:read"])
    bare = FastAPI()
    cf.install(bare)

    @bare.get("/implicit")
    async def implicit(k: crm.VerifiedKey = Depends(cf.crm_api_key("leads:read"))) -> str:
        return k.key_id

    @bare.get("/explicit")
    async def explicit(k: crm.VerifiedKey = Depends(cf.crm_api_key("leads:read", crm=c))) -> str:
        return k.key_id

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://testserver") as h:
        r = await h.get("/implicit", headers=bearer(key.secret))
        is_problem(r, 503, NOT_CONFIGURED)
        assert "request.app.state.crm" not in r.text, "a 5xx body says nothing of its cause"
        r = await h.get("/explicit", headers=bearer(key.secret))
        assert r.status_code == 200 and r.json() == key.key.id


def test_the_routes_document_themselves() -> None:
    spec = make_app(None).openapi()
    assert {"/api/webhooks/whatsapp", "/api/webhooks/whatsapp/{inbound_id}", "/api/webhooks/cal",
            "/api/webhooks/cal/{inbound_id}"} <= set(spec["paths"])
    handshake = spec["paths"]["/api/webhooks/whatsapp"]["get"]
    assert [p["name"] for p in handshake["parameters"]] == ["hub.mode", "hub.verify_token", "hub.challenge"]
    assert spec["paths"]["/api/webhooks/cal"]["post"]["tags"] == ["inbound"]


def test_factories_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        cf.crm_api_key("")
    with pytest.raises(ValueError):
        cf.crm_rate_limit("")
    with pytest.raises(ValueError):
        cf.crm_session(cookie=None, bearer=False)


# -------------------------------------------------------------------- sessions


async def signed_in(c: crm.Crm, email: str, role: str) -> crm.LoggedIn:
    await c.auth.create_user(email, "Someone", STRONG, role=role)
    return await c.auth.login(email, STRONG)


async def test_session_by_cookie_and_by_bearer(c: crm.Crm, http: httpx.AsyncClient) -> None:
    ada = await signed_in(c, "ada@example.com", "owner")
    want = {"user_id": ada.user.id, "role": "owner", "session_id": ada.session.id}
    assert (await http.get("/me", headers=session_cookie(ada.token))).json() == want
    assert (await http.get("/me", headers=bearer(ada.token))).json() == want
    assert (await http.get("/admin", headers=session_cookie(ada.token))).json() == want
    assert (await http.get("/cookie-only", headers=session_cookie(ada.token, "sid"))).json() == want


async def test_session_refusals(c: crm.Crm, http: httpx.AsyncClient) -> None:
    no_cookie = "sign in first: no session cookie"
    r = await http.get("/me")
    is_problem(r, 401, problem(401, "Unauthorized", f"Cookie: {no_cookie}", "unauthorized",
                               errors=[{"field": "Cookie", "message": no_cookie}]))
    assert "www-authenticate" not in r.headers
    # An empty cookie is none; a cookie of another name too.
    assert (await http.get("/me", headers=session_cookie(""))).status_code == 401
    assert (await http.get("/me", headers=session_cookie("x" * 43, "other"))).status_code == 401

    malformed = problem(401, "Unauthorized", "malformed token", "unauthorized")
    invalid = problem(401, "Unauthorized", "invalid or expired token", "unauthorized")
    is_problem(await http.get("/me", headers=session_cookie("nope")), 401, malformed)
    r = await http.get("/me", headers=bearer("nope"))
    is_problem(r, 401, malformed)
    assert r.headers["www-authenticate"] == "Bearer"
    is_problem(await http.get("/me", headers=session_cookie("A" * 43)), 401, invalid)

    ada = await signed_in(c, "ada@example.com", "owner")
    await c.logout(ada.token)
    is_problem(await http.get("/me", headers=session_cookie(ada.token)), 401, invalid)

    bob = await signed_in(c, "bob@example.com", "member")
    assert (await http.get("/me", headers=session_cookie(bob.token))).status_code == 200
    is_problem(await http.get("/admin", headers=session_cookie(bob.token)), 403, FORBIDDEN)

    # Bearer tokens are not read where only the cookie counts.
    r = await http.get("/cookie-only", headers=bearer(bob.token))
    assert r.status_code == 401 and r.json()["errors"] == [{"field": "Cookie", "message": no_cookie}]


async def test_session_csrf(c: crm.Crm, http: httpx.AsyncClient) -> None:
    ada = await signed_in(c, "ada@example.com", "owner")
    cookie = session_cookie(ada.token)
    is_problem(await http.post("/me", headers=cookie), 403, CSRF_FAILED)
    is_problem(await http.post("/me", headers={**cookie, "Origin": "https://evil.example"}), 403, CSRF_FAILED)
    is_problem(await http.post("/me", headers={**cookie, "Origin": "null"}), 403, CSRF_FAILED)
    for passes in ({"X-CRM-CSRF": "1"}, {"Origin": ORIGIN}, {"Origin": "http://testserver"}):
        r = await http.post("/me", headers={**cookie, **passes})
        assert r.status_code == 200 and r.json()["user_id"] == ada.user.id, passes
    # A bearer token cannot be sent by a foreign page: no CSRF check.
    assert (await http.post("/me", headers=bearer(ada.token))).status_code == 200
    # Reads are not checked.
    assert (await http.get("/me", headers={**cookie, "Origin": "https://evil.example"})).status_code == 200


async def test_session_cookie_helpers(c: crm.Crm, http: httpx.AsyncClient) -> None:
    await c.auth.create_user("ada@example.com", "Ada", STRONG)
    r = await http.post("/login", json={"email": "ada@example.com", "password": STRONG})
    assert r.status_code == 200
    name, _, rest = r.headers["set-cookie"].partition("=")
    token, _, attributes = rest.partition(";")
    assert name == cf.SESSION_COOKIE and attributes == " Path=/; HttpOnly; SameSite=Lax; Secure"
    assert (await http.get("/me", headers=session_cookie(token))).json()["user_id"] == r.json()["user_id"]
    out = await http.post("/logout")
    assert out.headers["set-cookie"] == f"{cf.SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"


# -------------------------------------------------------------------- rate limits


async def test_rate_limit_headers_and_refusal(http: httpx.AsyncClient) -> None:
    before = int(time.time())
    first = await http.get("/limited")
    assert first.status_code == 200 and first.json() == {"remaining": 1}
    assert first.headers["x-ratelimit-limit"] == "2" and first.headers["x-ratelimit-remaining"] == "1"
    reset = int(first.headers["x-ratelimit-reset"])
    assert before <= reset <= int(time.time()) + 61
    assert "retry-after" not in first.headers
    second = await http.get("/limited")
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining"] == "0"

    refused = await http.get("/limited")
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 30
    is_problem(refused, 429, problem(429, "Too Many Requests", f"too many requests; retry after {wait} s",
                                     "rate_limited", retry_after=wait))
    assert refused.headers["x-ratelimit-limit"] == "2" and refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= reset


async def test_rate_limit_keys(http: httpx.AsyncClient) -> None:
    for path in ("/limited-by-user", "/limited-async"):
        alice = {"x-user": "alice"}
        assert [(await http.get(path, headers=alice)).status_code for _ in range(3)] == [200, 200, 429]
        bob = await http.get(path, headers={"x-user": "bob"})
        assert bob.status_code == 200 and bob.headers["x-ratelimit-remaining"] == "1"
    # The client-address key of /limited is another bucket again.
    assert (await http.get("/limited")).headers["x-ratelimit-remaining"] == "1"


async def test_rate_limit_headers_on_every_response(http: httpx.AsyncClient) -> None:
    raw = await http.get("/limited-raw")
    assert raw.status_code == 204
    assert (raw.headers["x-ratelimit-limit"], raw.headers["x-ratelimit-remaining"]) == ("100", "99")
    failed = await http.get("/limited-then-404")
    is_problem(failed, 404, problem(404, "Not Found", "lead not found", "not_found"))
    assert (failed.headers["x-ratelimit-limit"], failed.headers["x-ratelimit-remaining"]) == ("100", "99")
    assert "retry-after" not in failed.headers
    is_problem(await http.get("/unknown-policy"), 503, NOT_CONFIGURED)


def test_client_ip_keys() -> None:
    assert cf._ip_key("192.0.2.1") == "192.0.2.1"
    assert cf._ip_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert cf._ip_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert cf._ip_key("2001:db8:1:2:aaaa::1") == cf._ip_key("2001:db8:1:2:bbbb:cccc:dddd:2")
    assert cf._ip_key("testclient") == "testclient"


# -------------------------------------------------------------------- problem details

NATIVE = {
    "validation_failed": (422, problem(
        422, "Unprocessable Entity", "invalid input: email: is not an email; tags[1]: is empty", "validation_failed",
        errors=[{"field": "email", "message": "is not an email"}, {"field": "tags[1]", "message": "is empty"}])),
    "not_found": (404, problem(404, "Not Found", "lead not found", "not_found")),
    "conflict": (409, problem(
        409, "Conflict", "a lead with this email already exists", "conflict",
        errors=[{"field": "email", "message": "a lead with this email already exists"}],
        existing_id="00000000-0000-0000-0000-000000000000")),
    "key_revoked": (409, problem(409, "Conflict", "a revoked API key cannot be changed", "key_revoked")),
    "quota_exceeded": (409, problem(
        409, "Conflict", "the workspace has reached its quota of 20 webhook endpoints", "quota_exceeded")),
    "unauthorized": (401, problem(401, "Unauthorized", "revoked API key", "unauthorized")),
    "forbidden": (403, FORBIDDEN),
    "rate_limited": (429, problem(429, "Too Many Requests", "too many requests; retry after 2 s", "rate_limited",
                                  retry_after=2)),
    "integration_failed": (502, problem(502, "Bad Gateway", "a third-party provider failed", "integration_failed")),
    "provider_error": (422, problem(422, "Unprocessable Entity",
                                    "the provider refused: 132001: template name does not exist", "provider_error")),
    "webhook_verification_failed": (401, problem(401, "Unauthorized", "invalid timestamp",
                                                 "webhook_verification_failed")),
    "configuration_error": (503, NOT_CONFIGURED),
    "internal_error": (500, problem(500, "Internal Server Error", "internal error", "internal_error")),
}


@pytest.mark.parametrize("code", NATIVE)
async def test_every_native_error_renders_as_crm_http_does(code: str, http: httpx.AsyncClient) -> None:
    status, body = NATIVE[code]
    r = await http.get(f"/raise/{code}")
    is_problem(r, status, body)
    if code == "rate_limited":
        assert r.headers["retry-after"] == "2"
    else:
        assert "retry-after" not in r.headers
    assert "www-authenticate" not in r.headers, "only the API-key dependency challenges"
    for secret_ish in ("no master key", "sealed", "discord: 500"):
        assert secret_ish not in r.text, "5xx causes stay in the logs"


PYTHON_ERRORS = {
    "validation": (crm.ValidationError("invalid input: name: is empty", [("name", "is empty")]), 422, problem(
        422, "Unprocessable Entity", "invalid input: name: is empty", "validation_failed",
        errors=[{"field": "name", "message": "is empty"}])),
    "validation_bare": (crm.ValidationError(), 422, problem(422, "Unprocessable Entity", "invalid input",
                                                            "validation_failed")),
    "not_found": (crm.NotFoundError("lead not found", "lead"), 404, problem(404, "Not Found", "lead not found",
                                                                             "not_found")),
    "conflict_bare": (crm.ConflictError("taken"), 409, problem(409, "Conflict", "taken", "conflict")),
    "window_closed": (crm.ConflictError("window closed", code="window_closed"), 409,
                      problem(409, "Conflict", "window closed", "window_closed")),
    "login": (crm.UnauthorizedError("unauthorized: invalid credentials", "invalid_credentials"), 401,
              problem(401, "Unauthorized", "invalid credentials", "unauthorized")),
    "unauthorized_custom": (crm.UnauthorizedError("sign in again", "session_gone"), 401,
                            problem(401, "Unauthorized", "sign in again", "unauthorized")),
    "forbidden": (crm.ForbiddenError(), 403, FORBIDDEN),
    "csrf": (crm.ForbiddenError(CSRF_MESSAGE, code="csrf_failed", field="Origin"), 403, CSRF_FAILED),
    "rate_limited": (crm.RateLimitedError("slow down", 0.2), 429, problem(
        429, "Too Many Requests", "too many requests; retry after 1 s", "rate_limited", retry_after=1)),
    "integration": (crm.IntegrationError("telegram: token 123:abc refused"), 502,
                    problem(502, "Bad Gateway", "a third-party provider failed", "integration_failed")),
    "webhook": (crm.WebhookVerificationError("no matching signature"), 401,
                problem(401, "Unauthorized", "no matching signature", "webhook_verification_failed")),
    "internal": (crm.CrmError("database password=hunter2 refused"), 500,
                 problem(500, "Internal Server Error", "internal error", "internal_error")),
    "too_large": (crm.CrmError("the body must be at most 10 bytes", "body_too_large"), 413,
                  problem(413, "Payload Too Large", "the body must be at most 10 bytes", "body_too_large")),
}


@pytest.mark.parametrize("name", PYTHON_ERRORS)
async def test_every_error_class_renders(name: str, http: httpx.AsyncClient) -> None:
    exc, status, body = PYTHON_ERRORS[name]
    assert exc.status == status and exc.to_problem() == body
    r = await http.get(f"/raise-py/{name}")
    is_problem(r, status, body)
    assert "hunter2" not in r.text and "123:abc" not in r.text
    assert ("retry-after" in r.headers) == (name == "rate_limited")


def test_status_is_on_the_classes() -> None:
    expected: Dict[Type[crm.CrmError], int] = {
        crm.ValidationError: 422, crm.NotFoundError: 404, crm.ConflictError: 409, crm.UnauthorizedError: 401,
        crm.ForbiddenError: 403, crm.RateLimitedError: 429, crm.IntegrationError: 502,
        crm.WebhookVerificationError: 401, crm.CrmError: 500,
    }
    assert {cls: cls.status for cls in expected} == expected
    assert crm.CrmError("x", "configuration_error").status == 503
    assert crm.CrmError("x", "provider_error").status == 422
    challenged = crm.UnauthorizedError("x", "unknown_key")
    assert challenged.http_headers() == {}
    challenged.challenge = "Bearer"
    assert challenged.http_headers() == {"WWW-Authenticate": "Bearer"}


# -------------------------------------------------------------------- inbound routes


def wa_message(wamid: str, text: str = "Hi, I need a website", phone: str = "15551234567") -> bytes:
    return json.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "contacts": [{"wa_id": phone, "profile": {"name": "Grace"}}],
            "messages": [{"id": wamid, "from": phone, "timestamp": "1763800000", "type": "text",
                          "text": {"body": text}}],
        }}]}],
    }).encode()


def wa_signed(body: bytes, secret: str = WA_SECRET) -> Dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def cal_body(trigger: str = "BOOKING_CREATED", uid: str = "bk-1", email: str = "cal@example.com") -> bytes:
    return json.dumps({"triggerEvent": trigger, "payload": {
        "uid": uid, "title": "Intro call", "startTime": "2026-01-02T10:00:00Z",
        "attendees": [{"name": "Cal Person", "email": email}]}}).encode()


def cal_signed(body: bytes, secret: str = CAL_SECRET) -> Dict[str, str]:
    return {"X-Cal-Signature-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def verification_detail(check: Any) -> str:
    """What crm itself says about a signature that does not verify."""
    with pytest.raises(crm.WebhookVerificationError) as e:
        check()
    return e.value.message


async def test_whatsapp_handshake(http: httpx.AsyncClient) -> None:
    path = "/api/webhooks/whatsapp"
    ok = await http.get(path, params={"hub.mode": "subscribe", "hub.verify_token": WA_TOKEN, "hub.challenge": "4242"})
    assert ok.status_code == 200 and ok.text == "4242" and ok.headers["content-type"].startswith("text/plain")
    invalid = problem(401, "Unauthorized", "invalid credentials", "unauthorized")
    bad = await http.get(path, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
    is_problem(bad, 401, invalid)
    is_problem(await http.get(path), 401, invalid)
    blank = await http.get("/blank/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "",
                                                       "hub.challenge": "1"})
    is_problem(blank, 503, NOT_CONFIGURED)


async def test_whatsapp_receive_signed_and_wrongly_signed(c: crm.Crm, http: httpx.AsyncClient) -> None:
    path = "/api/webhooks/whatsapp"
    body = wa_message("wamid.A1")
    wrong = wa_signed(body, "wrong-secret")
    detail = verification_detail(lambda: crm.whatsapp.verify_signature(WA_SECRET, body, wrong["X-Hub-Signature-256"]))
    r = await http.post(path, content=body, headers=wrong)
    is_problem(r, 401, problem(401, "Unauthorized", detail, "webhook_verification_failed"))
    unsigned = await http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "webhook_verification_failed"
    assert (await c.leads.list()).items == [], "refused requests write nothing"

    first = await http.post(path, content=body, headers=wa_signed(body))
    assert first.status_code == 200
    lead_ids = first.json()["captured"]
    assert first.json() == {"captured": lead_ids, "duplicates": 0, "statuses": 0, "ignored": 0} and len(lead_ids) == 1
    lead = await c.leads.get(lead_ids[0])
    assert (lead.phone, lead.source) == ("+15551234567", "whatsapp")
    again = await http.post(path, content=body, headers=wa_signed(body))
    assert again.json() == {"captured": [], "duplicates": 1, "statuses": 0, "ignored": 0}

    not_whatsapp = b'{"hello": "world"}'
    r = await http.post(path, content=not_whatsapp, headers=wa_signed(not_whatsapp))
    assert r.status_code == 422 and r.json()["errors"] == [
        {"field": "body", "message": "is not a WhatsApp Business Account payload"}]
    blank = await http.post("/blank/whatsapp", content=body, headers=wa_signed(body, " "))
    is_problem(blank, 503, NOT_CONFIGURED)


async def test_whatsapp_body_limit(c: crm.Crm, http: httpx.AsyncClient) -> None:
    big = wa_message("wamid.BIG", "x" * 2000)
    too_large = problem(413, "Payload Too Large", "the body must be at most 1024 bytes", "body_too_large")
    is_problem(await http.post("/small/whatsapp", content=big, headers=wa_signed(big)), 413, too_large)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for i in range(0, len(big), 100):
            yield big[i:i + 100]

    is_problem(await http.post("/small/whatsapp", content=chunks(), headers=wa_signed(big)), 413, too_large)
    small = wa_message("wamid.S")
    assert (await http.post("/small/whatsapp", content=small, headers=wa_signed(small))).status_code == 200
    assert len((await c.leads.list()).items) == 1


async def test_whatsapp_integration_routes_refuse_unknown_ids(c: crm.Crm, http: httpx.AsyncClient) -> None:
    body = wa_message("wamid.X")
    not_found = problem(404, "Not Found", "integration not found", "not_found")
    for inbound_id in ("0" * 32, "nope"):
        r = await http.post(f"/api/webhooks/whatsapp/{inbound_id}", content=body, headers=wa_signed(body))
        is_problem(r, 404, not_found)
        h = await http.get(f"/api/webhooks/whatsapp/{inbound_id}",
                           params={"hub.mode": "subscribe", "hub.verify_token": WA_TOKEN, "hub.challenge": "1"})
        is_problem(h, 404, not_found)
    assert (await c.leads.list()).items == []


async def test_calcom_receive_signed_and_wrongly_signed(c: crm.Crm, http: httpx.AsyncClient) -> None:
    path = "/api/webhooks/cal"
    body = cal_body()
    wrong = cal_signed(body, "wrong")
    detail = verification_detail(lambda: crm.calcom.verify_signature(CAL_SECRET, body, wrong["X-Cal-Signature-256"]))
    is_problem(await http.post(path, content=body, headers=wrong), 401,
               problem(401, "Unauthorized", detail, "webhook_verification_failed"))
    assert (await http.post(path, content=body)).status_code == 401
    assert (await c.leads.list()).items == []

    booked = await http.post(path, content=body, headers=cal_signed(body))
    assert booked.status_code == 200
    lead_id = booked.json()["lead_id"]
    assert booked.json() == {"outcome": "captured", "lead_id": lead_id, "created": True, "trigger": None}
    assert (await c.leads.get(lead_id)).email == "cal@example.com"
    again = await http.post(path, content=body, headers=cal_signed(body))
    assert again.json() == {"outcome": "duplicate", "lead_id": None, "created": False, "trigger": None}
    is_problem(await http.post("/blank/cal", content=body, headers=cal_signed(body)), 503, NOT_CONFIGURED)


async def test_calcom_integration_route_writes_to_its_workspace(c: crm.Crm, http: httpx.AsyncClient) -> None:
    acme = await c.create_workspace("Acme")
    saved = await acme.integrations.save("calcom", {"webhook_secret": "cal-secret-acme"})
    assert saved.inbound_id is not None
    path = f"/api/webhooks/cal/{saved.inbound_id}"
    body = cal_body(uid="bk-acme", email="acme-lead@example.com")
    r = await http.post(path, content=body, headers=cal_signed(body, CAL_SECRET))
    assert r.status_code == 401 and r.json()["code"] == "webhook_verification_failed"
    ok = await http.post(path, content=body, headers=cal_signed(body, "cal-secret-acme"))
    assert ok.status_code == 200 and ok.json()["outcome"] == "captured"
    assert [lead.email for lead in (await acme.leads.list()).items] == ["acme-lead@example.com"]
    assert (await c.leads.list()).items == [], "the default workspace got nothing"
    r = await http.post("/api/webhooks/cal/" + "0" * 32, content=body, headers=cal_signed(body, "cal-secret-acme"))
    is_problem(r, 404, problem(404, "Not Found", "integration not found", "not_found"))


async def test_inbound_router_rate_limit(http: httpx.AsyncClient) -> None:
    body = cal_body("PING")
    codes = [(await http.post("/limited/cal", content=body, headers=cal_signed(body))) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[0].json() == {"outcome": "ignored", "lead_id": None, "created": False, "trigger": "PING"}
    assert codes[0].headers["x-ratelimit-remaining"] == "1" and "retry-after" in codes[2].headers


# -------------------------------------------------------------------- import


def test_import_without_fastapi_says_what_to_install() -> None:
    code = "import sys; sys.modules['fastapi'] = None; import crm.fastapi"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "ImportError: crm.fastapi needs FastAPI: pip install 'crmkit[fastapi]'" in run.stderr
    plain = subprocess.run([sys.executable, "-c", "import sys; sys.modules['fastapi'] = None; import crm"],
                           capture_output=True, text=True)
    assert plain.returncode == 0, "crm itself does not need FastAPI"


async def test_a_session_of_another_workspace_is_refused(c: crm.Crm, http: httpx.AsyncClient) -> None:
    # Someone registers a workspace of their own and signs in as its owner: the
    # routes of the default workspace do not take their session.
    owner = await c.register("Intruder Inc", "eve@example.com", "Eve", STRONG)
    eve = await c.workspace(owner.workspace_id).auth.login("eve@example.com", STRONG)
    invalid = problem(401, "Unauthorized", "invalid or expired token", "unauthorized")
    is_problem(await http.get("/me", headers=session_cookie(eve.token)), 401, invalid)
    is_problem(await http.get("/admin", headers=bearer(eve.token)), 401, invalid)
