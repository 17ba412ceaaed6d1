"""External JWTs through Python: `Crm.verify_jwt` and the `crm.fastapi.crm_jwt`
dependency, with HS256 tokens made here (the RS256/ES256 and JWKS cases are in the
Rust suite, tests/it/jwt.rs)."""

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, AsyncIterator, Dict

import httpx
import pytest
from fastapi import Depends, FastAPI

import crm
import crm.fastapi as cf

SECRET = "a-supabase-jwt-secret-of-32-bytes-or-more"
ISSUER = "https://project.supabase.co/auth/v1"
WORKSPACE = str(uuid.uuid4())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims: Dict[str, Any], *, alg: str = "HS256", secret: str = SECRET) -> str:
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    if alg == "none":
        return f"{head}.{body}."
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def claims(**over: Any) -> Dict[str, Any]:
    now = int(time.time())
    c: Dict[str, Any] = {
        "sub": "user-1", "email": "ana@example.com", "iss": ISSUER, "aud": "authenticated",
        "exp": now + 3600, "app_metadata": {"crm_workspace": WORKSPACE, "crm_role": "owner"},
    }
    c.update(over)
    return c


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[crm.Crm]:
    c = await crm.Crm.connect(
        database_url,
        jwt={
            "secret": SECRET, "issuer": ISSUER, "audience": ["authenticated"],
            "workspace_claim": "app_metadata.crm_workspace", "role_claim": "app_metadata.crm_role",
        },
    )
    try:
        yield c
    finally:
        await c.close()


async def test_tokens_verify_and_refusals_say_why(client: crm.Crm) -> None:
    who = await client.verify_jwt(token(claims()))
    assert isinstance(who, crm.ExternalIdentity)
    assert (who.subject, who.email, who.workspace_id, who.role) == ("user-1", "ana@example.com", WORKSPACE, "owner")
    now = int(time.time())
    for bad, reason in [
        (token(claims(exp=now - 3600)), "jwt_expired"),
        (token(claims(nbf=now + 3600)), "jwt_not_yet_valid"),
        (token(claims(aud="anon")), "jwt_audience"),
        (token(claims(iss="https://evil.example")), "jwt_issuer"),
        (token(claims(), secret="another-secret-of-at-least-32-bytes!!"), "jwt_signature"),
        (token(claims(), alg="none"), "jwt_algorithm"),
        (token(claims(), alg="RS256"), "jwt_algorithm"),
        (token(claims(app_metadata={})), "jwt_claims"),
        ("not.a.jwt", "jwt_malformed"),
    ]:
        with pytest.raises(crm.UnauthorizedError) as e:
            await client.verify_jwt(bad)
        assert e.value.reason == reason, bad
        assert e.value.status == 401


async def test_without_a_jwt_configuration_it_says_so(database_url: str) -> None:
    async with await crm.Crm.connect(database_url) as c:
        with pytest.raises(crm.CrmError) as e:
            await c.verify_jwt(token(claims()))
        assert e.value.code == "configuration_error"
    with pytest.raises(crm.CrmError):
        await crm.Crm.connect(database_url, jwt={"secret": "short", "issuer": ISSUER, "audience": "a"})
    with pytest.raises(crm.ValidationError) as v:
        await crm.Crm.connect(database_url, jwt={"issuer": ISSUER, "audience": "a"})
    assert v.value.errors[0].field == "jwt.secret"


async def test_the_fastapi_dependency(client: crm.Crm) -> None:
    app = FastAPI()
    cf.install(app)
    app.state.crm = client

    @app.get("/me")
    async def me(who: crm.ExternalIdentity = Depends(cf.crm_jwt())) -> Dict[str, str]:
        return {"subject": who.subject, "workspace_id": who.workspace_id}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.get("/me", headers={"Authorization": f"Bearer {token(claims())}"})
        assert r.status_code == 200 and r.json() == {"subject": "user-1", "workspace_id": WORKSPACE}
        for headers in [{}, {"Authorization": f"Bearer {token(claims(), alg='none')}"}]:
            r = await http.get("/me", headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.headers["content-type"] == "application/problem+json"
