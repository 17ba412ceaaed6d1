"""What `Crm.connect` configures besides the database: the mailer of auth mails,
the lead parser, allowed values and the default country code; each against real
HTTP to a local stand-in of the provider that records the exact request."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import crm
from conftest import STRONG


class Provider:
    """A local stand-in: records each request and answers the canned reply of its
    path (status, JSON body)."""

    def __init__(self) -> None:
        self.requests: List[Tuple[str, Dict[str, str], Any]] = []
        self.replies: Dict[str, Tuple[int, Any]] = {}
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                status, reply = outer.replies.get(self.path, (404, {"error": {"message": "no such path"}}))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                outer.arrived.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    thread = threading.Thread(target=p.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield p
    finally:
        p.server.shutdown()
        p.server.server_close()
        thread.join()


async def test_a_resend_mailer_sends_the_reset_mail_and_its_token_resets(
    database_url: str, provider: Provider
) -> None:
    provider.replies["/emails"] = (200, {"id": "mail_1"})
    mailer = {
        "kind": "resend", "api_key": "re_test_key", "from": "CRM <crm@acme.test>", "base_url": provider.url,
        "reset_url": "https://app.acme.test/reset?token={token}",
        "verify_url": "https://app.acme.test/verify?token={token}",
    }
    async with await crm.Crm.connect(database_url, mailer=mailer) as c:
        owner = await c.register("Acme", "boss@acme.test", "Boss", STRONG)
        ws = c.workspace(owner.workspace_id)
        # Registering sends the verification mail: wait for it, then ask for a reset.
        assert provider.arrived.wait(10), "no verification mail"
        provider.arrived.clear()
        await ws.auth.request_password_reset("boss@acme.test")
        assert provider.arrived.wait(10), "no reset mail"
        path, headers, body = provider.requests[-1]
        assert path == "/emails"
        assert headers["authorization"] == "Bearer re_test_key"
        assert body["from"] == "CRM <crm@acme.test>" and body["to"] == ["boss@acme.test"]
        found = re.search(r"https://app\.acme\.test/reset\?token=([A-Za-z0-9_\-]+)", body["text"])
        assert found, body["text"]
        user = await c.confirm_password_reset(found.group(1), "Another-Strong-Pass-7!")
        assert user.id == owner.id
        assert isinstance(await c.sign_in("boss@acme.test", "Another-Strong-Pass-7!"), crm.LoggedIn)


async def test_an_openai_parser_reads_lead_text_and_the_builtin_stands_in_when_it_fails(
    database_url: str, provider: Provider
) -> None:
    answer = {"name": "Ana Lopez", "email": "ana@example.com", "phone": None, "company": "Acme",
              "budget": "5k_15k", "project_type": "website", "message": "needs a site", "confidence": 0.9}
    provider.replies["/chat/completions"] = (
        200, {"choices": [{"finish_reason": "stop", "message": {"content": json.dumps(answer)}}]}
    )
    parser = {"kind": "openai", "api_key": "sk-test", "model": "gpt-test", "base_url": provider.url}
    async with await crm.Crm.connect(database_url, parser=parser) as c:
        parsed = await c.leads.parse("Ana Lopez from Acme, ana@example.com, wants a website, 5-15k")
        assert (parsed.parser, parsed.fallback) == ("openai", False)
        assert parsed.fields["name"] == "Ana Lopez" and parsed.fields["budget"] == "5k_15k"
        path, headers, body = provider.requests[-1]
        assert path == "/chat/completions" and headers["authorization"] == "Bearer sk-test"
        assert body["model"] == "gpt-test"
        # OpenAI down: the builtin parser reads the text and says so.
        provider.replies["/chat/completions"] = (500, {"error": {"message": "overloaded"}})
        parsed = await c.leads.parse("Ana Lopez, ana@example.com")
        assert (parsed.parser, parsed.fallback) == ("builtin", True)
        assert parsed.fields["email"] == "ana@example.com"


async def test_allowed_values_and_the_default_country_code_apply_to_leads(database_url: str) -> None:
    async with await crm.Crm.connect(
        database_url, allowed_values={"sources": ["whatsapp", "web"]}, default_country_code=34
    ) as c:
        lead = await c.leads.create("Ana", phone="612 345 678", source="whatsapp", budget="1k_5k")
        assert lead.phone == "+34612345678" and lead.source == "whatsapp"
        with pytest.raises(crm.ValidationError) as e:
            await c.leads.create("Bea", email="bea@example.com", source="website")
        assert [f.field for f in e.value.errors] == ["source"]
        assert (await c.leads.list()).items == [lead]


@pytest.mark.parametrize(
    "options, field",
    [
        ({"mailer": {"kind": "carrier-pigeon"}}, "mailer.kind"),
        ({"mailer": {"kind": "resend", "api_key": "k"}}, "mailer"),
        ({"mailer": {"kind": "resend", "api_key": "k", "from": "a@b.c", "verify_url": "x"}}, "mailer.reset_url"),
        ({"mailer": {"kind": "smtp", "url": "smtp://h", "from": "a@b.c", "extra": 1}}, "mailer"),
        ({"parser": {"kind": "openai"}}, "parser"),
        ({"parser": "sk-secret"}, "parser"),
        ({"allowed_values": {"sources": [True]}}, "allowed_values.sources[0]"),
        ({"allowed_values": {"sources": "web"}}, "allowed_values.sources"),
        ({"allowed_values": {"colours": ["red"]}}, "allowed_values.colours"),
    ],
)
async def test_malformed_options_are_refused_before_connecting(
    tmp_path: Any, options: Dict[str, Any], field: str
) -> None:
    url = f"sqlite://{tmp_path / 'never.db'}?mode=rwc"
    with pytest.raises(crm.ValidationError) as e:
        await crm.Crm.connect(url, **options)
    assert [f.field for f in e.value.errors] == [field]
    assert "sk-secret" not in str(e.value)
    assert not (tmp_path / "never.db").exists()


async def test_refused_values_are_configuration_errors(tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path / 'crm.db'}?mode=rwc"
    with pytest.raises(crm.CrmError) as e:
        await crm.Crm.connect(url, allowed_values={"sources": []})
    assert e.value.code == "configuration_error"
    # A password over plain SMTP to another machine is refused, and the URL is not repeated.
    with pytest.raises(crm.CrmError) as e:
        await crm.Crm.connect(url, mailer={"kind": "smtp", "url": "smtp://u:hunter2@mail.example.com", "from": "a@b.c"})
    assert e.value.code == "configuration_error" and "hunter2" not in str(e.value)
