"""FastAPI helpers: crm's API keys, sessions and rate limits as dependencies, its
errors as RFC 9457 problem details, and ready routes for WhatsApp and Cal.com.

Needs FastAPI (``pip install 'crmkit[fastapi]'``)::

    from contextlib import asynccontextmanager
    from fastapi import Depends, FastAPI
    import crm
    from crm.fastapi import crm_api_key, get_crm, install, whatsapp_router

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with await crm.Crm.connect(URL, master_key=KEY) as client:
            app.state.crm = client          # where every helper looks for it
            yield

    app = FastAPI(lifespan=lifespan)
    install(app)                            # CrmError -> application/problem+json
    app.include_router(whatsapp_router(app_secret=SECRET, verify_token=TOKEN))

    @app.get("/leads")
    async def leads(
        key: crm.VerifiedKey = Depends(crm_api_key("leads:read", rate_limit="api_key")),
        client: crm.Crm = Depends(get_crm),
    ) -> dict:
        return (await client.leads.list()).to_dict()

Every helper finds the :class:`crm.Crm` on ``request.app.state.crm`` unless given
one with ``crm=``. Refusals are :class:`crm.CrmError` s; :func:`install` renders
them (and any other ``CrmError`` a route raises) the way crm's HTTP router
(crm-http) does: the same statuses, problem bodies and headers (``Retry-After``,
``WWW-Authenticate: Bearer`` for API keys, ``X-RateLimit-*``).

What the dependencies found is also on ``request.state``: ``crm_api_key`` (the
:class:`crm.VerifiedKey`), ``crm_session`` (the :class:`crm.SessionUser`) and
``crm_rate_limit`` (the last :class:`crm.RateLimitDecision`).
"""

try:
    import fastapi as _fastapi  # noqa: F401  (only to say what is missing)
except ModuleNotFoundError as _missing:  # pragma: no cover - tested in a subprocess
    if _missing.name not in ("fastapi", "starlette", "pydantic"):
        raise
    raise ImportError(
        "crm.fastapi needs FastAPI: pip install 'crmkit[fastapi]' (or fastapi>=0.110)"
    ) from _missing

import inspect
import logging
import uuid
from typing import (
    Any,
    Awaitable,
    Callable,
    Collection,
    Dict,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _native
from . import calcom as _calcom
from . import whatsapp as _whatsapp
from .client import Crm, Workspace
from .errors import CrmError, ForbiddenError, RateLimitedError, UnauthorizedError
from .models import ExternalIdentity, RateLimitDecision, SessionUser, VerifiedKey

__all__ = [
    "PROBLEM_JSON",
    "SESSION_COOKIE",
    "CSRF_HEADER",
    "INBOUND_BODY_LIMIT",
    "get_crm",
    "client_ip",
    "crm_api_key",
    "crm_session",
    "crm_jwt",
    "crm_rate_limit",
    "install",
    "crm_error_handler",
    "problem_response",
    "rate_limit_headers",
    "set_session_cookie",
    "clear_session_cookie",
    "whatsapp_router",
    "calcom_router",
]

#: The media type of every error body.
PROBLEM_JSON = "application/problem+json"
#: crm-http's session cookie (``__Host-``: Secure, ``Path=/``, no ``Domain``).
SESSION_COOKIE = "__Host-crm_session"
#: The header that, like an allowed ``Origin``, lets a state-changing cookie session
#: request through the CSRF check (crm-http's ``X-CRM-CSRF``).
CSRF_HEADER = "X-CRM-CSRF"
#: The largest inbound webhook body the routers read (crm-http's limit).
INBOUND_BODY_LIMIT = 256 * 1024

_log = logging.getLogger("crm.fastapi")

#: A workspace: its id, a function of the request giving it (a path parameter,
#: say), or ``None`` for the :class:`crm.Crm`'s own (the default workspace).
WorkspaceRef = Union[str, uuid.UUID, Callable[[Request], Union[str, uuid.UUID]], None]
#: A rate-limit key: a function of the request giving it, plain or async.
KeyFunc = Callable[[Request], Union[str, Awaitable[str]]]

# --------------------------------------------------------------------------- crm


def get_crm(request: Request) -> Crm:
    """A dependency: the app's :class:`crm.Crm`, ``request.app.state.crm`` (set it in
    the lifespan). Without one, ``CrmError`` ``configuration_error`` (503)."""
    found = getattr(request.app.state, "crm", None)
    if not isinstance(found, Crm):
        raise CrmError(
            "crm.fastapi found no crm.Crm on request.app.state.crm: set it in the app's "
            "lifespan, or pass crm= to the helper",
            "configuration_error",
        )
    return found


def _client(request: Request, given: Optional[Crm]) -> Crm:
    return given if given is not None else get_crm(request)


def _workspace(client: Crm, request: Request, ref: WorkspaceRef) -> Workspace:
    if ref is None:
        return client
    found = ref(request) if callable(ref) else ref
    return client.workspace(found)


# ----------------------------------------------------------------- rate limits


#: crm's rate-limit key of an address (IPv6 by its /64), the Rust function crm-http
#: uses, so both count a client under the same key.
_ip_key = _native.rate_limit_ip_key


def client_ip(request: Request) -> str:
    """The default rate-limit key: the client's address as crm-http keys it (an
    IPv6 client by its /64), ``unknown`` when the server does not say. Behind a
    reverse proxy, run the server so that ``request.client`` is the real client
    (uvicorn's ``--proxy-headers --forwarded-allow-ips``): ``X-Forwarded-For`` is
    not read here, a client writes what it likes into it."""
    host = request.client.host if request.client else None
    return _ip_key(host) if host else "unknown"


def rate_limit_headers(decision: RateLimitDecision) -> Dict[str, str]:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (unix seconds) of a
    decision, plus ``Retry-After`` (whole seconds, rounded up) when it refused."""
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(max(0, int(decision.reset_at.timestamp()))),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(_refusal(decision).retry_after_seconds)
    return headers


def _refusal(decision: RateLimitDecision) -> RateLimitedError:
    wait = decision.retry_after or 0.0
    return RateLimitedError(f"rate limited, retry after {int(wait)} s", wait)


async def _limit(request: Request, response: Response, client: Crm, policy: str, key: str) -> RateLimitDecision:
    """Decides the request under ``policy``, records the decision for the headers,
    and raises ``RateLimitedError`` when refused."""
    decision = await client.rate_limiter.check(policy, key)
    request.state.crm_rate_limit = decision
    if not decision.allowed:
        raise _refusal(decision)
    for name, value in rate_limit_headers(decision).items():
        response.headers[name] = value
    return decision


def crm_rate_limit(
    policy: str, *, key: KeyFunc = client_ip, crm: Optional[Crm] = None
) -> Callable[[Request, Response], Awaitable[RateLimitDecision]]:
    """A dependency that counts the request under the named ``policy`` (one of
    ``Crm.connect(rate_limits=…)``, or a built-in one) for ``key(request)`` (the
    client's address by default; may be async) and gives the decision. The
    response carries ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``; a refusal
    is ``RateLimitedError``, a 429 with those and ``Retry-After`` once
    :func:`install` ran. An unknown policy is ``CrmError``
    (``configuration_error``)."""
    if not isinstance(policy, str) or not policy:
        raise ValueError("crm_rate_limit needs a policy name")

    async def rate_limit(request: Request, response: Response) -> RateLimitDecision:
        client = _client(request, crm)
        found = key(request)
        name = await found if inspect.isawaitable(found) else found
        return await _limit(request, response, client, policy, str(name))

    return rate_limit


# -------------------------------------------------------------------- API keys


def _bearer(request: Request) -> Optional[str]:
    """The credential of ``Authorization: Bearer <credential>``, ``None`` without one."""
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, space, credential = value.partition(" ")
    if not space or scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def crm_api_key(
    *scopes: str,
    workspace: WorkspaceRef = None,
    rate_limit: Optional[str] = None,
    crm: Optional[Crm] = None,
) -> Callable[[Request, Response], Awaitable[VerifiedKey]]:
    """A dependency: the request's API key (``Authorization: Bearer crm_…``),
    verified in ``workspace`` (by default the :class:`crm.Crm`'s own; an id, or a
    function of the request giving one) and holding every one of ``scopes``.

    No key, or one that is malformed, unknown, of another workspace, revoked or
    expired: ``UnauthorizedError`` (401 with ``WWW-Authenticate: Bearer``); a scope
    it lacks: ``ForbiddenError`` (403). With ``rate_limit`` (a policy name, e.g.
    crm-http's ``api_key``) the key's requests are counted under it by key id, as
    :func:`crm_rate_limit` does."""
    for scope in scopes:
        if not isinstance(scope, str) or not scope:
            raise ValueError("crm_api_key: scopes are non-empty strings such as 'leads:read'")
    wanted: Tuple[str, ...] = tuple(scopes)

    async def api_key(request: Request, response: Response) -> VerifiedKey:
        key = _bearer(request)
        try:
            if key is None:
                raise UnauthorizedError(
                    "must be `Bearer <API key>`", "missing_credentials", field="Authorization"
                )
            client = _client(request, crm)
            ws = _workspace(client, request, workspace)
            verified = await ws.api_keys.verify(key, scope=wanted[0] if wanted else None)
            for scope in wanted[1:]:
                await ws.api_keys.verify(key, scope=scope)
        except UnauthorizedError as refused:
            refused.challenge = "Bearer"
            raise
        request.state.crm_api_key = verified
        if rate_limit is not None:
            await _limit(request, response, client, rate_limit, verified.key_id)
        return verified

    return api_key


def crm_jwt(*, crm: Optional[Crm] = None) -> Callable[[Request], Awaitable[ExternalIdentity]]:
    """A dependency: who the request's ``Authorization: Bearer <JWT>`` names, a
    token of the outside sign-in service given to :meth:`crm.Crm.connect`
    (``jwt=``), verified by :meth:`crm.Crm.verify_jwt`. No token, or one refused:
    ``UnauthorizedError`` (401 with ``WWW-Authenticate: Bearer``; ``reason`` says
    why). Nothing is written."""

    async def jwt_user(request: Request) -> ExternalIdentity:
        token = _bearer(request)
        try:
            if token is None:
                raise UnauthorizedError("must be `Bearer <JWT>`", "missing_credentials", field="Authorization")
            identity = await _client(request, crm).verify_jwt(token)
        except UnauthorizedError as refused:
            refused.challenge = "Bearer"
            raise
        request.state.crm_jwt = identity
        return identity

    return jwt_user


# -------------------------------------------------------------------- sessions


def _origin(value: str) -> str:
    return value.strip().rstrip("/")


def _csrf_ok(request: Request, allowed: Collection[str]) -> bool:
    """crm-http's CSRF check: a safe method, the CSRF header, an allowed origin or
    the request's own host as its origin."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return True
    if CSRF_HEADER in request.headers:
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    if origin in allowed:
        return True
    host = request.headers.get("host")
    _, sep, origin_host = origin.partition("://")
    return bool(sep) and host is not None and origin_host == host


def crm_session(
    *,
    roles: Optional[Collection[str]] = None,
    cookie: Optional[str] = SESSION_COOKIE,
    bearer: bool = True,
    csrf: bool = True,
    allowed_origins: Sequence[str] = (),
    rate_limit: Optional[str] = None,
    workspace: Union[WorkspaceRef, Literal["any"]] = None,
    crm: Optional[Crm] = None,
) -> Callable[[Request, Response], Awaitable[SessionUser]]:
    """A dependency: the signed-in user's session (``crm.SessionUser``), from the
    session token in ``Authorization: Bearer <token>`` (when ``bearer``) or else the
    ``cookie`` (crm-http's ``__Host-crm_session`` unless named otherwise; ``None``
    for bearer tokens only). A sliding session is extended.

    No token: ``UnauthorizedError`` (401); a malformed, unknown or expired one too.
    A state-changing request (not ``GET``/``HEAD``/``OPTIONS``) authenticated by the
    cookie must, when ``csrf``, come from one of ``allowed_origins``
    (``https://app.example.com``) or the request's own host, or carry the
    ``X-CRM-CSRF`` header: else ``ForbiddenError`` with code ``csrf_failed`` (403).
    With ``roles`` (``{"owner", "admin"}``) a user of another role is
    ``ForbiddenError``. With ``rate_limit`` the user's requests are counted under
    that policy by user id.

    The session must belong to ``workspace`` (by default the :class:`crm.Crm`'s
    own; an id, or a function of the request), as keys must: a user of another
    workspace is ``UnauthorizedError`` (401), so a route that acts on the default
    workspace cannot be driven by someone who registered a workspace of their own.
    ``workspace="any"`` accepts every workspace's users; the route must then act in
    ``user.user.workspace_id`` only."""
    if cookie is None and not bearer:
        raise ValueError("crm_session needs a cookie name, bearer tokens, or both")
    allowed = frozenset(_origin(o) for o in allowed_origins if _origin(o) != "*")
    wanted_roles = None if roles is None else frozenset(roles)

    async def session(request: Request, response: Response) -> SessionUser:
        client = _client(request, crm)
        token = _bearer(request) if bearer else None
        by_cookie = token is None
        if token is None and cookie is not None:
            token = request.cookies.get(cookie) or None
        if token is None:
            field, what = ("Cookie", "no session cookie") if cookie is not None else ("Authorization", "no bearer token")
            raise UnauthorizedError(f"sign in first: {what}", "missing_credentials", field=field)
        try:
            user = await client.authenticate_session(token)
        except UnauthorizedError as refused:
            if not by_cookie:
                refused.challenge = "Bearer"
            raise
        if workspace != "any" and user.user.workspace_id != _workspace(client, request, workspace).id:
            raise UnauthorizedError("invalid or expired token", "invalid_token")
        if by_cookie and csrf and not _csrf_ok(request, allowed):
            raise ForbiddenError(
                "a state-changing request must come from an allowed origin or carry X-CRM-CSRF",
                code="csrf_failed",
                field="Origin",
            )
        if wanted_roles is not None and user.user.role not in wanted_roles:
            raise ForbiddenError()
        request.state.crm_session = user
        if rate_limit is not None:
            await _limit(request, response, client, rate_limit, user.user.id)
        return user

    return session


def set_session_cookie(
    response: Response,
    token: str,
    *,
    remember_for: Optional[int] = None,
    name: str = SESSION_COOKIE,
    secure: bool = True,
) -> None:
    """Sets the session cookie as crm-http does (``HttpOnly``, ``SameSite=Lax``,
    ``Path=/``, ``Secure`` unless ``secure`` is false, for development over plain
    HTTP with a name without the ``__Host-`` prefix): a browser session, or with
    ``remember_for`` seconds a persistent one (for a remember-me login,
    ``session.absolute_expires_at - session.created_at``)."""
    cookie = f"{name}={token}; Path=/; HttpOnly; SameSite=Lax"
    if secure:
        cookie += "; Secure"
    if remember_for is not None:
        cookie += f"; Max-Age={int(remember_for)}"
    response.headers.append("set-cookie", cookie)


def clear_session_cookie(response: Response, *, name: str = SESSION_COOKIE, secure: bool = True) -> None:
    """Clears the session cookie (after ``Crm.logout``)."""
    set_session_cookie(response, "", remember_for=0, name=name, secure=secure)


# ------------------------------------------------------------ problem details


def problem_response(exc: CrmError, request: Optional[Request] = None) -> JSONResponse:
    """The ``application/problem+json`` response of ``exc``: its ``status``, its
    ``to_problem()`` body and ``http_headers()``, plus the ``X-RateLimit-*`` headers
    of the request's rate-limit decision, if it has one."""
    headers = exc.http_headers()
    decision = getattr(request.state, "crm_rate_limit", None) if request is not None else None
    if isinstance(decision, RateLimitDecision):
        headers = {**rate_limit_headers(decision), **headers}
    return JSONResponse(exc.to_problem(), status_code=exc.status, headers=headers, media_type=PROBLEM_JSON)


async def crm_error_handler(request: Request, exc: Exception) -> Response:
    """The exception handler :func:`install` registers for ``CrmError``: the
    problem response, and a log record for a 5xx (whose body says nothing of its
    cause)."""
    if not isinstance(exc, CrmError):  # registered for CrmError only
        raise exc
    if exc.status >= 500:
        _log.error("%s %s failed: %s (%s)", request.method, request.url.path, exc.message, exc.code)
    return problem_response(exc, request)


class _RateLimitHeaders:
    """Puts the request's rate-limit headers on whatever response it gets, also one a
    route built itself (FastAPI adds a dependency's headers only to responses it
    builds from a return value)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: Dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = state.get("crm_rate_limit")
                if isinstance(decision, RateLimitDecision):
                    headers = MutableHeaders(scope=message)
                    for name, value in rate_limit_headers(decision).items():
                        if name != "Retry-After" or message["status"] == 429:
                            headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, *, rate_limit_headers: bool = True) -> None:
    """Renders every :class:`crm.CrmError` that reaches ``app`` as problem details
    (see :func:`crm_error_handler`), and (``rate_limit_headers``) puts the
    ``X-RateLimit-*`` headers of the dependencies' decisions on every response,
    also responses a route returns itself. Call it before the app starts."""
    app.add_exception_handler(CrmError, crm_error_handler)
    if rate_limit_headers:
        app.add_middleware(_RateLimitHeaders)


# ------------------------------------------------------------- inbound routes


async def _raw_body(request: Request, limit: int) -> bytes:
    """The raw body (its signature covers it byte for byte), at most ``limit`` bytes."""
    too_large = CrmError(f"the body must be at most {limit} bytes", "body_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _configured(value: Optional[str], what: str) -> str:
    if value is None or not value.strip():
        raise CrmError(f"{what} inbound is not configured", "configuration_error")
    return value


def _router(rate_limit: Optional[str], dependencies: Sequence[Any], tags: Sequence[str], crm: Optional[Crm]) -> APIRouter:
    deps = list(dependencies)
    if rate_limit is not None:
        deps.append(Depends(crm_rate_limit(rate_limit, crm=crm)))
    return APIRouter(dependencies=deps, tags=list(tags))


def whatsapp_router(
    *,
    app_secret: Optional[str] = None,
    verify_token: Optional[str] = None,
    workspace: WorkspaceRef = None,
    path: str = "/api/webhooks/whatsapp",
    integrations: bool = True,
    max_body: int = INBOUND_BODY_LIMIT,
    rate_limit: Optional[str] = None,
    dependencies: Sequence[Any] = (),
    tags: Sequence[str] = ("inbound",),
    crm: Optional[Crm] = None,
) -> APIRouter:
    """WhatsApp Cloud API inbound routes, crm-http's:

    - ``GET {path}`` answers Meta's verification handshake with ``verify_token``
      (401 for a wrong token) and ``POST {path}`` verifies ``X-Hub-Signature-256``
      with ``app_secret`` over the raw body and captures each text message as a
      lead of ``workspace`` (the default one unless given), once per ``wamid``;
      both answer 503 ``configuration_error`` while their secret is blank;
    - with ``integrations``, ``GET``/``POST {path}/{inbound_id}`` do the same for the
      workspace whose ``whatsapp`` integration has that inbound id, with its
      ``verify_token`` and ``app_secret`` (404 for an id that is not one).

    A ``POST`` answers ``crm.Received.to_dict()``; a bad signature is 401 and a body
    that is not a WhatsApp payload 422, neither writing anything; bodies over
    ``max_body`` bytes 413. ``rate_limit`` counts the routes' requests under that
    policy per client address; ``dependencies`` go on every route."""
    router = _router(rate_limit, dependencies, tags, crm)

    async def receive(
        request: Request, ws: Workspace, secret: str, phone_number_id: Optional[str] = None
    ) -> Dict[str, Any]:
        body = await _raw_body(request, max_body)
        signature = request.headers.get("x-hub-signature-256")
        found = await _whatsapp.receive(ws, secret, signature, body, phone_number_id=phone_number_id)
        return found.to_dict()

    @router.get(path, response_class=PlainTextResponse, summary="WhatsApp verification handshake")
    async def whatsapp_handshake(
        mode: Optional[str] = Query(None, alias="hub.mode"),
        token: Optional[str] = Query(None, alias="hub.verify_token"),
        challenge: Optional[str] = Query(None, alias="hub.challenge"),
    ) -> str:
        return _whatsapp.handshake(mode, token, challenge, _configured(verify_token, "WhatsApp"))

    @router.post(path, summary="WhatsApp inbound messages")
    async def whatsapp_inbound(request: Request) -> Dict[str, Any]:
        secret = _configured(app_secret, "WhatsApp")
        client = _client(request, crm)
        return await receive(request, _workspace(client, request, workspace), secret)

    if integrations:

        @router.get(
            path + "/{inbound_id}",
            response_class=PlainTextResponse,
            summary="WhatsApp verification handshake of a workspace's integration",
        )
        async def workspace_whatsapp_handshake(
            request: Request,
            inbound_id: str,
            mode: Optional[str] = Query(None, alias="hub.mode"),
            token: Optional[str] = Query(None, alias="hub.verify_token"),
            challenge: Optional[str] = Query(None, alias="hub.challenge"),
        ) -> str:
            _, settings = await _client(request, crm).inbound_integration("whatsapp", inbound_id)
            return _whatsapp.handshake(mode, token, challenge, settings.get("verify_token", ""))

        @router.post(path + "/{inbound_id}", summary="WhatsApp inbound messages of a workspace's integration")
        async def workspace_whatsapp_inbound(request: Request, inbound_id: str) -> Dict[str, Any]:
            ws, settings = await _client(request, crm).inbound_integration("whatsapp", inbound_id)
            # Only the workspace's own number: one Meta app may serve several.
            return await receive(request, ws, settings.get("app_secret", ""), settings.get("phone_number_id"))

    return router


def calcom_router(
    *,
    secret: Optional[str] = None,
    workspace: WorkspaceRef = None,
    path: str = "/api/webhooks/cal",
    integrations: bool = True,
    max_body: int = INBOUND_BODY_LIMIT,
    rate_limit: Optional[str] = None,
    dependencies: Sequence[Any] = (),
    tags: Sequence[str] = ("inbound",),
    crm: Optional[Crm] = None,
) -> APIRouter:
    """Cal.com inbound routes, crm-http's: ``POST {path}`` verifies
    ``X-Cal-Signature-256`` with the webhook ``secret`` over the raw body and
    captures the booking's attendee as a lead of ``workspace`` (the default one
    unless given), 503 ``configuration_error`` while the secret is blank; with
    ``integrations``, ``POST {path}/{inbound_id}`` does the same for the workspace
    whose ``calcom`` integration has that inbound id, with its ``webhook_secret``
    (404 for an id that is not one).

    Answers ``crm.Booking.to_dict()``; a bad signature is 401 and a body of another
    shape 422, neither writing anything; bodies over ``max_body`` bytes 413.
    ``rate_limit`` and ``dependencies`` as for :func:`whatsapp_router`."""
    router = _router(rate_limit, dependencies, tags, crm)

    async def receive(request: Request, ws: Workspace, key: str) -> Dict[str, Any]:
        body = await _raw_body(request, max_body)
        signature = request.headers.get("x-cal-signature-256")
        return (await _calcom.receive(ws, key, signature, body)).to_dict()

    @router.post(path, summary="Cal.com bookings")
    async def calcom_inbound(request: Request) -> Dict[str, Any]:
        key = _configured(secret, "Cal.com")
        client = _client(request, crm)
        return await receive(request, _workspace(client, request, workspace), key)

    if integrations:

        @router.post(path + "/{inbound_id}", summary="Cal.com bookings of a workspace's integration")
        async def workspace_calcom_inbound(request: Request, inbound_id: str) -> Dict[str, Any]:
            ws, settings = await _client(request, crm).inbound_integration("calcom", inbound_id)
            return await receive(request, ws, settings.get("webhook_secret", ""))

    return router
