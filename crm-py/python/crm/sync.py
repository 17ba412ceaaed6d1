"""The blocking API, for scripts, Django views, Celery tasks and other code without
an event loop: :class:`Crm` mirrors :class:`crm.Crm` method for method, and every
call returns its result instead of an awaitable::

    from crm.sync import Crm

    with Crm.connect("sqlite://crm.db?mode=rwc") as client:
        lead = client.leads.create("Ada", email="ada@example.com")
        page = client.workspace(workspace_id).leads.list(limit=20)

The types are in ``sync.pyi``, made from the async API by
``scripts/gen-sync-stub.py``. It is a thin layer over the async API: each call runs the async method on one
event loop in a background thread that the process shares, and blocks the calling
thread until it is done. Any number of threads may call at once (the work runs on
crm's own runtime). Arguments, results and errors are those of the async method.
In async code, use :class:`crm.Crm` instead: a blocking call holds up the caller's
event loop for its whole length.
"""

import asyncio
import functools
import inspect
import os
import threading
from typing import Any, Coroutine, Optional, TypeVar

from . import client as _client

__all__ = [
    "Crm", "Workspace", "Leads", "Contacts", "Organizations", "Attachments", "Auth", "ApiKeys", "Webhooks", "Notifications", "Integrations",
    "Idempotency", "RateLimiter",
]

T = TypeVar("T")

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_thread: Optional[threading.Thread] = None


def _forget_loop() -> None:
    """In a forked child: the loop's thread did not come along, start a new one."""
    global _lock, _loop, _thread
    _lock, _loop, _thread = threading.Lock(), None, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loop)


def _background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="crm-sync", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def _run(coro: Coroutine[Any, Any, T]) -> T:
    loop = _background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("crm.sync was called from its own loop (a callback of crm's): use crm.Crm there")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        # Interrupted (KeyboardInterrupt, a signal handler's exception): the call
        # is cancelled, and its Rust work dropped, rather than left running.
        future.cancel()
        raise


#: The async objects whose attributes the blocking layer wraps in turn.
_WRAPPED = (_client._Service, _client.Workspace, _client.RateLimiter)


def _blocking(result: Any) -> Any:
    """A result with each async workspace in it made blocking (``create_workspace``,
    ``inbound_integration``)."""
    if isinstance(result, _client.Workspace):
        return Workspace(result)
    if isinstance(result, tuple):
        return tuple(_blocking(r) for r in result)
    return result


class _Blocking:
    """Wraps an async service object: its coroutine methods become blocking ones,
    its service attributes blocking services, everything else passes through."""

    __slots__ = ("_async",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_async", target)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_async":
            # Not set yet (copy, pickle): no recursion through `self._async`.
            raise AttributeError(name)
        value = getattr(self._async, name)
        if isinstance(value, _client.Workspace):
            return Workspace(value)
        if isinstance(value, _WRAPPED):
            return _SERVICES[type(value).__name__](value)
        if inspect.iscoroutinefunction(value):

            @functools.wraps(value)
            def blocking(*args: Any, **kwargs: Any) -> Any:
                return _blocking(_run(value(*args, **kwargs)))

            return blocking
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __copy__(self) -> Any:
        return type(self)(self._async)

    def __deepcopy__(self, memo: Any) -> Any:
        # A copy shares the connection: there is nothing else to copy.
        return type(self)(self._async)

    def __reduce__(self) -> Any:
        raise TypeError(f"a crm {type(self).__name__} holds a connection and cannot be pickled")

    def __dir__(self) -> Any:
        return dir(self._async)

    def __repr__(self) -> str:
        return f"sync.{self._async!r}"


class Leads(_Blocking):
    """Leads, blocking (see :class:`crm.Leads`)."""

    __slots__ = ()


class Contacts(_Blocking):
    """Contacts, blocking (see :class:`crm.Contacts`)."""

    __slots__ = ()


class Attachments(_Blocking):
    """Files on leads and contacts, blocking (see :class:`crm.Attachments`)."""

    __slots__ = ()


class Organizations(_Blocking):
    """Organizations, blocking (see :class:`crm.Organizations`)."""

    __slots__ = ()


class Auth(_Blocking):
    """Users and sessions, blocking (see :class:`crm.Auth`)."""

    __slots__ = ()


class ApiKeys(_Blocking):
    """API keys, blocking (see :class:`crm.ApiKeys`)."""

    __slots__ = ()


class Webhooks(_Blocking):
    """Webhook endpoints, blocking (see :class:`crm.Webhooks`)."""

    __slots__ = ()


class Notifications(_Blocking):
    """Notification channels, blocking (see :class:`crm.Notifications`)."""

    __slots__ = ()


class Integrations(_Blocking):
    """Integrations, blocking (see :class:`crm.Integrations`)."""

    __slots__ = ()


class Idempotency(_Blocking):
    """Idempotency keys, blocking (see :class:`crm.Idempotency`)."""

    __slots__ = ()


class RateLimiter(_Blocking):
    """The rate limiter, blocking (see :class:`crm.RateLimiter`)."""

    __slots__ = ()


_SERVICES = {
    c.__name__: c
    for c in (Leads, Contacts, Organizations, Attachments, Auth, ApiKeys, Webhooks, Notifications, Integrations, Idempotency, RateLimiter)
}


class Workspace(_Blocking):
    """One tenant's services, blocking (see :class:`crm.Workspace`)."""

    __slots__ = ()


class Crm(Workspace):
    """A connected crm, blocking (see :class:`crm.Crm`): itself the default
    workspace, with :meth:`workspace` for the others. ``with`` closes it."""

    __slots__ = ()

    @classmethod
    def connect(cls, url: str = "sqlite://crm.db?mode=rwc", **options: Any) -> "Crm":
        """Opens (and migrates) the database; the options of :meth:`crm.Crm.connect`
        (the types in ``sync.pyi`` spell them out)."""
        return cls(_run(_client.Crm.connect(url, **options)))

    def workspace(self, id: _client.Id) -> Workspace:
        """The services of workspace ``id`` (``ValidationError`` if not a UUID)."""
        return Workspace(self._async.workspace(id))

    def close(self) -> None:
        """Stops the dispatcher (letting deliveries in flight finish) and closes the pool."""
        _run(self._async.close())

    def __enter__(self) -> "Crm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
