"""The Python surface keeps up with the Rust one: every public method of crm-core's
services (read from the Rust sources) has a Python twin, or is listed below as
deliberately Rust-only with the reason. A new Rust operation without a twin fails
here."""

import re
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest

import crm
from crm import client as py

SOURCES = Path(__file__).resolve().parents[2] / "crm-core" / "src"

#: Rust service type → the Python class that mirrors it.
SERVICES = {
    "Crm": py.Crm,
    "Workspace": py.Workspace,
    "Leads": py.Leads,
    "Contacts": py.Contacts,
    "Organizations": py.Organizations,
    "Attachments": py.Attachments,
    "Auth": py.Auth,
    "ApiKeys": py.ApiKeys,
    "Webhooks": py.Webhooks,
    "Notifications": py.Notifications,
    "Integrations": py.Integrations,
    "RateLimiter": py.RateLimiter,
    "Idempotency": py.Idempotency,
}

#: Python names that differ from Rust's (endpoints and channels are named in full
#: where Python has no `Endpoint`/`Channel` service object of their own).
RENAMED = {
    ("Webhooks", "create"): "create_endpoint",
    ("Webhooks", "list"): "list_endpoints",
    ("Webhooks", "get"): "get_endpoint",
    ("Webhooks", "update"): "update_endpoint",
    ("Webhooks", "delete"): "delete_endpoint",
    ("Webhooks", "secret"): "endpoint_secret",
    ("Notifications", "create"): "create_channel",
    ("Notifications", "list"): "list_channels",
    ("Notifications", "get"): "get_channel",
    ("Notifications", "update"): "update_channel",
    ("Notifications", "delete"): "delete_channel",
    ("Notifications", "test"): "test_channel",
    ("Notifications", "config"): "channel_config",
    # `import` is a Python keyword; the export writes a file (`Export` streams).
    ("Leads", "import"): "import_csv",
    ("Leads", "export"): "export_csv",
    # `Workspace::leads()` … are attributes in Python.
}

#: Deliberately Rust-only, with the reason.
RUST_ONLY: Dict[Tuple[str, str], str] = {
    ("Leads", "delete_confirmed"): "the HTTP route's rule (confirm=true for a lead with a timeline); leads.delete is Leads::delete",
    ("Crm", "builder"): "Crm.connect takes the options",
    ("Crm", "connect"): "Crm.connect (a classmethod)",
    ("Crm", "workspace"): "Crm.workspace",
    ("Crm", "leads"): "Crm is the default workspace: client.leads",
    ("Crm", "auth"): "the cross-workspace auth calls are methods of Crm",
    ("Crm", "hash_password"): "crm.passwords.hash_password (synchronous, no database)",
    ("Crm", "verify_password"): "crm.passwords.verify_password",
    ("Crm", "password_verifications"): "a metrics counter for the Rust server",
    ("Crm", "password_hashes"): "a metrics counter for the Rust server",
    ("Crm", "pool_usage"): "pool metrics for the Rust server",
    ("Crm", "sealer"): "the master-key sealer is an internal of the services",
    ("Crm", "now"): "the clock is set at build time in Rust (tests); Python uses real time",
    ("Crm", "migrate"): "Crm.connect migrates",
    ("Crm", "pending_migrations"): "the server's `crm migrate --check`",
    ("Crm", "schema_is_current"): "the server's readiness check",
    ("Crm", "allowed_values"): "given to Crm.connect; readable in Rust for the OpenAPI document",
    ("Crm", "default_country_code"): "given to Crm.connect",
    ("Crm", "quotas"): "a configuration read-back for the Rust server",
    ("Crm", "notifier_kinds"): "the OpenAPI document's channel kinds",
    ("Crm", "job_queue"): "the job queue is the dispatcher's; Python starts it with start_dispatcher",
    ("Crm", "wake_dispatchers"): "an internal signal between the services and the dispatcher",
    ("Crm", "close"): "Crm.close",
    ("Workspace", "events"): "the event log feeds the dispatcher; Python reads events through webhooks",
    ("Leads", "with_actor"): "the actor recorded on activities; Python calls run as the app",
    ("ApiKeys", "with_actor"): "as Leads.with_actor",
    ("Webhooks", "with_actor"): "as Leads.with_actor",
    ("Notifications", "with_actor"): "as Leads.with_actor",
    ("Leads", "capture_message"): "the WhatsApp plugin's call; Python uses crm.whatsapp.receive",
    ("Leads", "message_status"): "the WhatsApp plugin's call; Python uses crm.whatsapp.receive",
    ("Leads", "capture_inbound"): "the inbound plugins' call; Python uses crm.whatsapp / crm.calcom",
    ("Webhooks", "signing_secrets"): "the dispatcher's read of every live secret",
    ("Auth", "bootstrap_owner"): "the server's first-run `crm bootstrap`",
    ("RateLimiter", "with_store"): "the limiter's storage is chosen by the backend",
    ("RateLimiter", "policy"): "policies are given to Crm.connect(rate_limits=…)",
    ("RateLimiter", "check_with"): "an ad-hoc policy; Python names its policies at connect",
    ("Crm", "attachment_rules"): "given to Crm.connect(files=…)",
    ("Crm", "storage"): "the storage plugin is chosen at connect (files=…)",
    ("Attachments", "with_actor"): "Python passes actor= to add and delete",
    ("Attachments", "open"): "a byte stream for the router; Python reads a file whole with read",
    ("Attachments", "add_file"): "attachments.add(path=…)",
    ("Workspace", "oidc"): "OIDC sign-in is browser redirects, served by the Rust router; a Python backend whose users sign in elsewhere verifies their tokens with verify_jwt",
    ("Crm", "oidc_finish"): "as Workspace.oidc: the router's callback route",
    ("Crm", "set_row_level_security"): "an owner's one-time step of the database (`crm migrate --row-level-security on`); a Python app connects as the app role",
}


def rust_surface() -> Set[Tuple[str, str]]:
    """(service, method) for every `pub fn` in an inherent `impl` of a service."""
    found = set()
    for path in SOURCES.rglob("*.rs"):
        if "tests" in path.parts or path.name == "tests.rs":
            continue
        for m in re.finditer(r"^impl(?:<[^>]*>)? (\w+)(?:<[^>]*>)? \{\n(.*?)^\}", path.read_text(), re.S | re.M):
            if m.group(1) in SERVICES:
                for f in re.finditer(r"^    pub (?:async )?fn (\w+)", m.group(2), re.M):
                    found.add((m.group(1), f.group(1)))
    return found


RUST = rust_surface()


def test_the_rust_surface_is_read() -> None:
    # The reader works: a few methods that must be there are found.
    assert {("Leads", "create"), ("Webhooks", "rotate_secret"), ("Crm", "sign_in")} <= RUST
    assert len(RUST) > 100


@pytest.mark.parametrize("service, method", sorted(RUST - set(RUST_ONLY)))
def test_each_rust_operation_has_a_python_twin(service: str, method: str) -> None:
    cls = SERVICES[service]
    name = RENAMED.get((service, method), method)
    # A service object (`workspace.leads`) or a plain value (`workspace.id`) is an
    # attribute; an operation is a method.
    slots = {s for c in cls.__mro__ for s in getattr(c, "__slots__", ())}
    assert name in slots or callable(getattr(cls, name, None)), (
        f"{service}::{method} has no Python twin {cls.__name__}.{name}; "
        "add one, or list it in RUST_ONLY with the reason"
    )


def test_the_lists_name_only_what_rust_has() -> None:
    assert set(RUST_ONLY) - RUST == set()
    assert set(RENAMED) - RUST == set()


def test_the_workspace_services_are_attributes() -> None:
    for attr in ["leads", "contacts", "organizations", "attachments", "auth", "api_keys", "webhooks", "notifications", "integrations", "idempotency"]:
        assert (("Workspace", attr) in RUST) and attr in py.Workspace.__slots__
    assert isinstance(crm.Crm.workspace, object)
