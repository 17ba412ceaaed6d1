"""A FastAPI backend on crm: a WhatsApp lead bot plus a small leads API.

- ``GET /webhook`` answers Meta's verification handshake;
- ``POST /webhook`` verifies ``X-Hub-Signature-256`` on the raw body and turns each
  inbound text message into a lead (captured by phone) with a ``message`` activity;
  a message Meta delivers twice (same ``wamid``) changes nothing;
- ``/leads`` routes take a crm API key (``Authorization: Bearer crm_…``) and enforce
  its scopes;
- one exception handler maps every ``crm.CrmError`` to a problem+json response.

Run it (SQLite in ./crm.db by default)::

    WHATSAPP_APP_SECRET=… WHATSAPP_VERIFY_TOKEN=… uvicorn app:app --reload
"""

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict

import crm

# One status per crm error kind; anything else is a 500 that says nothing more.
STATUS = {
    crm.ValidationError: 422,
    crm.NotFoundError: 404,
    crm.ConflictError: 409,
    crm.UnauthorizedError: 401,
    crm.WebhookVerificationError: 401,
    crm.ForbiddenError: 403,
    crm.RateLimitedError: 429,
    crm.IntegrationError: 502,
}


class LeadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    email: Optional[str] = None
    phone: Optional[str] = None
    company: Optional[str] = None
    message: Optional[str] = None
    source: Optional[str] = None
    tags: List[str] = []


class ActivityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    description: Optional[str] = None


def create_app(
    database_url: Optional[str] = None,
    *,
    app_secret: Optional[str] = None,
    verify_token: Optional[str] = None,
) -> FastAPI:
    """The app; arguments default to the environment (``DATABASE_URL``,
    ``WHATSAPP_APP_SECRET``, ``WHATSAPP_VERIFY_TOKEN``, ``CRM_MASTER_KEY``)."""
    url = database_url or os.environ.get("DATABASE_URL", "sqlite://crm.db?mode=rwc")
    secret = app_secret if app_secret is not None else os.environ.get("WHATSAPP_APP_SECRET", "")
    token = verify_token if verify_token is not None else os.environ.get("WHATSAPP_VERIFY_TOKEN", "")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # An empty app secret would make every signature check meaningless (HMAC with
        # a key anyone knows): the app refuses to start instead.
        if not secret.strip() or not token.strip():
            raise RuntimeError("WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN must be set and not blank")
        client = await crm.Crm.connect(url, master_key=os.environ.get("CRM_MASTER_KEY"))
        app.state.crm = client
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(title="crm + FastAPI", lifespan=lifespan)

    def get_crm(request: Request) -> crm.Crm:
        client: crm.Crm = request.app.state.crm
        return client

    def require(scope: str) -> Any:
        """A dependency: the request's API key, verified, holding ``scope``."""

        async def check(request: Request, client: crm.Crm = Depends(get_crm)) -> crm.VerifiedKey:
            auth = request.headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not key:
                raise crm.UnauthorizedError("an API key is required", "malformed_key")
            return await client.api_keys.verify(key.strip(), scope=scope)

        return Depends(check)

    @app.exception_handler(crm.CrmError)
    async def crm_error(request: Request, exc: crm.CrmError) -> JSONResponse:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        body: Dict[str, Any] = {
            "title": exc.message if status < 500 else "internal error",
            "status": status,
            "code": exc.code,
        }
        headers: Dict[str, str] = {}
        if isinstance(exc, crm.ValidationError):
            body["errors"] = [e._asdict() for e in exc.errors]
        if isinstance(exc, crm.ConflictError) and exc.existing_id:
            body["existing_id"] = exc.existing_id
        if isinstance(exc, crm.RateLimitedError):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if isinstance(exc, crm.UnauthorizedError):
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(body, status, headers=headers, media_type="application/problem+json")

    @app.get("/webhook", response_class=PlainTextResponse)
    async def whatsapp_handshake(
        mode: Optional[str] = Query(None, alias="hub.mode"),
        verify: Optional[str] = Query(None, alias="hub.verify_token"),
        challenge: Optional[str] = Query(None, alias="hub.challenge"),
    ) -> str:
        return crm.whatsapp.handshake(mode, verify, challenge, token)

    @app.post("/webhook")
    async def whatsapp_inbound(request: Request, client: crm.Crm = Depends(get_crm)) -> Dict[str, Any]:
        # crm verifies X-Hub-Signature-256 over the raw bytes before it reads them;
        # a bad signature raises WebhookVerificationError (401 below), writing nothing.
        signature = request.headers.get("x-hub-signature-256")
        received = await crm.whatsapp.receive(client, secret, signature, await request.body())
        return received.to_dict()

    @app.get("/leads", dependencies=[require("leads:read")])
    async def list_leads(
        client: crm.Crm = Depends(get_crm),
        status: Optional[str] = None,
        q: Optional[str] = None,
        cursor: Optional[str] = None,
        limit: int = 20,
    ) -> Dict[str, Any]:
        page = await client.leads.list(status=status, q=q, cursor=cursor, limit=limit)
        return page.to_dict()

    @app.post("/leads", status_code=201, dependencies=[require("leads:write")])
    async def create_lead(lead: LeadIn, client: crm.Crm = Depends(get_crm)) -> Dict[str, Any]:
        created = await client.leads.create(**lead.model_dump(exclude_none=True))
        return created.to_dict()

    @app.get("/leads/{lead_id}", dependencies=[require("leads:read")])
    async def get_lead(lead_id: str, client: crm.Crm = Depends(get_crm)) -> Dict[str, Any]:
        return (await client.leads.get(lead_id)).to_dict()

    @app.post("/leads/{lead_id}/activities", status_code=201, dependencies=[require("leads:write")])
    async def add_activity(
        lead_id: str, activity: ActivityIn, client: crm.Crm = Depends(get_crm)
    ) -> Dict[str, Any]:
        added = await client.leads.add_activity(lead_id, activity.kind, activity.description)
        return added.to_dict()

    @app.delete("/leads/{lead_id}", status_code=204, dependencies=[require("leads:delete")])
    async def delete_lead(lead_id: str, client: crm.Crm = Depends(get_crm)) -> Response:
        await client.leads.delete(lead_id)
        return Response(status_code=204)

    return app


app = create_app()
