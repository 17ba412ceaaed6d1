"""A FastAPI backend on crm: a WhatsApp lead bot plus a small leads API, on the
helpers of :mod:`crm.fastapi`.

- ``GET /webhook`` answers Meta's verification handshake and ``POST /webhook``
  verifies ``X-Hub-Signature-256`` on the raw body and turns each inbound text
  message into a lead (captured by phone) with a ``message`` activity; a message
  Meta delivers twice (same ``wamid``) changes nothing (``whatsapp_router``);
- ``/leads`` routes take a crm API key (``Authorization: Bearer crm_…``), enforce
  its scopes and count its requests under the ``api_key`` policy, with
  ``X-RateLimit-*`` headers (``crm_api_key``);
- every ``crm.CrmError`` becomes an RFC 9457 problem+json response (``install``).

Run it (SQLite in ./crm.db by default)::

    WHATSAPP_APP_SECRET=… WHATSAPP_VERIFY_TOKEN=… uvicorn app:app --reload
"""

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict

import crm
from crm.fastapi import crm_api_key, get_crm, install, whatsapp_router

# Each API-key route names the scope it needs; keys are counted per key id.
READ = Depends(crm_api_key("leads:read", rate_limit="api_key"))
WRITE = Depends(crm_api_key("leads:write", rate_limit="api_key"))
DELETE = Depends(crm_api_key("leads:delete", rate_limit="api_key"))
CRM = Depends(get_crm)


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
        async with await crm.Crm.connect(url, master_key=os.environ.get("CRM_MASTER_KEY")) as client:
            app.state.crm = client  # where crm.fastapi's helpers find it
            yield

    app = FastAPI(title="crm + FastAPI", lifespan=lifespan)
    install(app)
    app.include_router(whatsapp_router(app_secret=secret, verify_token=token, path="/webhook", integrations=False))

    @app.get("/leads", dependencies=[READ])
    async def list_leads(
        client: crm.Crm = CRM,
        status: Optional[str] = None,
        q: Optional[str] = None,
        cursor: Optional[str] = None,
        limit: int = 20,
    ) -> Dict[str, Any]:
        page = await client.leads.list(status=status, q=q, cursor=cursor, limit=limit)
        return page.to_dict()

    @app.post("/leads", status_code=201, dependencies=[WRITE])
    async def create_lead(lead: LeadIn, client: crm.Crm = CRM) -> Dict[str, Any]:
        created = await client.leads.create(**lead.model_dump(exclude_none=True))
        return created.to_dict()

    @app.get("/leads/{lead_id}", dependencies=[READ])
    async def get_lead(lead_id: str, client: crm.Crm = CRM) -> Dict[str, Any]:
        return (await client.leads.get(lead_id)).to_dict()

    @app.post("/leads/{lead_id}/activities", status_code=201, dependencies=[WRITE])
    async def add_activity(lead_id: str, activity: ActivityIn, client: crm.Crm = CRM) -> Dict[str, Any]:
        added = await client.leads.add_activity(lead_id, activity.kind, activity.description)
        return added.to_dict()

    @app.delete("/leads/{lead_id}", status_code=204, dependencies=[DELETE])
    async def delete_lead(lead_id: str, client: crm.Crm = CRM) -> Response:
        await client.leads.delete(lead_id)
        return Response(status_code=204)

    return app


app = create_app()
