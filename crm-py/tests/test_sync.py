"""The synchronous helpers: Standard Webhooks (interop with the `standardwebhooks`
package both ways), WhatsApp and Cal.com signatures, passwords, and the GIL."""

import base64
import hashlib
import hmac
import os
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict

import argon2
import pytest
import standardwebhooks
from starlette.datastructures import Headers

import crm
from conftest import vectors

NOW = int(time.time())


def headers(id: str, ts: int, sig: str) -> Dict[str, str]:
    return {"webhook-id": id, "webhook-timestamp": str(ts), "webhook-signature": sig}


@pytest.mark.parametrize("case", vectors("standard-webhooks"), ids=lambda c: c["name"])
def test_standard_webhooks_vectors(case: Dict[str, Any]) -> None:
    wh = crm.webhooks.Webhook(case["secret"])
    h = headers(case["id"], case["timestamp"], case["signature"])
    if case["valid"]:
        assert wh.verify(case["body"], h, json_parse=False, now=case["now"]) is None
        assert wh.verify(case["body"].encode(), h, json_parse=False, now=case["now"]) is None
    else:
        with pytest.raises(crm.WebhookVerificationError) as e:
            wh.verify(case["body"], h, now=case["now"])
        assert e.value.kind in ("missing_header", "timestamp", "signature")
    # Both implementations sign the vector's message alike, and each verifies the
    # other's signature (signed now, since theirs checks against the clock).
    theirs = standardwebhooks.Webhook(case["secret"])
    at = datetime.fromtimestamp(case["timestamp"], tz=timezone.utc)
    assert wh.sign(case["id"], case["timestamp"], case["body"]) == theirs.sign(case["id"], at, case["body"])
    ours_now = wh.sign(case["id"], NOW, case["body"])
    theirs.verify(case["body"], headers(case["id"], NOW, ours_now), json_parse=False)
    theirs_now = theirs.sign(case["id"], datetime.fromtimestamp(NOW, tz=timezone.utc), case["body"])
    wh.verify(case["body"], headers(case["id"], NOW, theirs_now), json_parse=False)


def test_random_bodies_interoperate() -> None:
    rng = random.Random(8)
    for n in range(200):
        secret = "whsec_" + base64.b64encode(os.urandom(rng.choice([16, 24, 32, 64]))).decode()
        body = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0x2FFF)]))
                       for _ in range(rng.randrange(0, 3000)))
        msg_id = f"msg_{n}"
        ours, theirs = crm.webhooks.Webhook(secret), standardwebhooks.Webhook(secret)
        sig = ours.sign(msg_id, NOW, body.encode())
        assert sig == theirs.sign(msg_id, datetime.fromtimestamp(NOW, tz=timezone.utc), body)
        theirs.verify(body.encode(), headers(msg_id, NOW, sig), json_parse=False)
        ours.verify(body, headers(msg_id, NOW, theirs.sign(msg_id, datetime.fromtimestamp(NOW, tz=timezone.utc), body)), json_parse=False)
        tampered = body + " "
        with pytest.raises(crm.WebhookVerificationError):
            ours.verify(tampered, headers(msg_id, NOW, sig))


def test_verify_mirrors_standardwebhooks() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    wh = crm.webhooks.Webhook(secret)
    body = '{"type":"lead.created","data":{"id":1}}'
    sig = wh.sign("msg_1", NOW, body)
    mixed = {"Webhook-Id": "msg_1", "WEBHOOK-TIMESTAMP": str(NOW), "webhook-signature": sig, "other": "x"}
    assert wh.verify(body, mixed) == {"type": "lead.created", "data": {"id": 1}}
    starlette = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in mixed.items()])
    assert wh.verify(body.encode(), starlette) == {"type": "lead.created", "data": {"id": 1}}
    # Unpadded, unprefixed and raw-bytes secrets are the same key.
    for same in (secret[6:], secret.rstrip("="), b"k" * 32):
        assert crm.webhooks.Webhook(same).sign("msg_1", NOW, body) == sig
    naive = datetime.fromtimestamp(NOW, tz=timezone.utc).replace(tzinfo=None)
    assert wh.sign("msg_1", naive, body) == sig
    assert "k" * 8 not in repr(wh) and "redacted" in repr(wh)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW)},
        {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": "1e9", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": "-5", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": "9" * 40, "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "no comma"},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,a,b,c"},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1,!!notbase64!!"},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "v1," + "A" * 10_000},
        {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": "\u00e9\u0000,\ud7ff"},
        {"webhook-id": 1, "webhook-timestamp": NOW, "webhook-signature": b"v1,x"},
        {1: "x", None: "y"},
    ],
)
def test_malformed_headers_are_verification_errors(bad: Dict[Any, Any]) -> None:
    with pytest.raises(crm.WebhookVerificationError):
        crm.webhooks.Webhook("whsec_" + base64.b64encode(b"s" * 24).decode()).verify(b"{}", bad)


def test_bad_secrets_and_types() -> None:
    for bad in ("", "whsec_", "whsec_!!!", b""):
        with pytest.raises(crm.ValidationError) as e:
            crm.webhooks.Webhook(bad)
        assert e.value.errors[0].field == "secret"
    wh = crm.webhooks.Webhook(b"key")
    with pytest.raises(TypeError):
        crm.webhooks.Webhook(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wh.verify(5, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wh.verify(b"{}", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wh.sign("m", "yesterday", b"{}")  # type: ignore[arg-type]
    body = b"\xff\xfe not utf-8"
    wh.verify(body, headers("m", NOW, wh.sign("m", NOW, body)), json_parse=False)


@pytest.mark.parametrize("case", vectors("whatsapp"), ids=lambda c: c["name"])
def test_whatsapp_vectors(case: Dict[str, Any]) -> None:
    check = lambda: crm.whatsapp.verify_signature(case["app_secret"], case["body"].encode(), case["header"])
    if case["valid"]:
        check()
    else:
        with pytest.raises(crm.WebhookVerificationError):
            check()


@pytest.mark.parametrize("case", vectors("calcom"), ids=lambda c: c["name"])
def test_calcom_vectors(case: Dict[str, Any]) -> None:
    check = lambda: crm.calcom.verify_signature(case["secret"], case["body"], case["header"])
    if case["valid"]:
        check()
    else:
        with pytest.raises(crm.WebhookVerificationError):
            check()


def test_hex_signatures_refuse_malformed_headers() -> None:
    body = b'{"object":"whatsapp_business_account"}'
    good = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    crm.whatsapp.verify_signature("s", body, good)
    for bad in (None, "", "   ", "sha256=", "sha256=zz", good[:-1], good + "0", "md5=" + good[7:], "\u00e9" * 71):
        with pytest.raises(crm.WebhookVerificationError):
            crm.whatsapp.verify_signature("s", body, bad)
        with pytest.raises(crm.WebhookVerificationError):
            crm.calcom.verify_signature("s", body, bad)


def test_an_empty_secret_never_verifies() -> None:
    """Issue 15, item 14: an HMAC made with an empty key verified against an unset secret."""
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    for secret in ("", "  "):
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        with pytest.raises(crm.WebhookVerificationError):
            crm.whatsapp.verify_signature(secret, body, "sha256=" + digest)
        with pytest.raises(crm.WebhookVerificationError):
            crm.calcom.verify_signature(secret, body, digest)


def test_whatsapp_handshake() -> None:
    assert crm.whatsapp.handshake("subscribe", "tok", "12345", "tok") == "12345"
    for args in (("subscribe", "nope", "1"), ("unsubscribe", "tok", "1"), (None, None, None),
                 ("subscribe", "tok", "x" * 300)):
        with pytest.raises(crm.UnauthorizedError):
            crm.whatsapp.handshake(*args, "tok")
    with pytest.raises(crm.UnauthorizedError):
        crm.whatsapp.handshake("subscribe", "", "1", "")


def test_passwords_interoperate_with_argon2_cffi() -> None:
    phc = crm.passwords.hash("Correct-Horse-Battery-9!")
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert crm.passwords.verify("Correct-Horse-Battery-9!", phc)
    assert not crm.passwords.verify("wrong", phc)
    assert not crm.passwords.verify("x", "not a phc string")
    theirs = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    assert theirs.verify(phc, "Correct-Horse-Battery-9!")
    assert crm.passwords.verify("abc", theirs.hash("abc"))
    stronger = crm.passwords.hash("p", memory_kib=32768, iterations=3)
    assert "m=32768,t=3" in stronger and crm.passwords.verify("p", stronger)
    with pytest.raises(crm.CrmError) as e:
        crm.passwords.hash("p", memory_kib=1024)
    assert e.value.code == "configuration_error"
    with pytest.raises(crm.ValidationError):
        crm.passwords.hash("x" * 2000)
    with pytest.raises(OverflowError):
        crm.passwords.hash("p", iterations=-1)


def test_check_policy() -> None:
    crm.passwords.check_policy("Correct-Horse-Battery-9!")
    with pytest.raises(crm.ValidationError) as e:
        crm.passwords.check_policy("password")
    assert all(f.field == "password" for f in e.value.errors)
    assert any("common" in f.message for f in e.value.errors)
    assert len(e.value.errors) >= 4


def _ticks_while(work: Any) -> int:
    """How often a second Python thread got to run while ``work()`` ran here."""
    ticks, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.01)
    before = ticks[0]
    work()
    during = ticks[0] - before
    stop.set()
    t.join()
    return during


def test_gil_released_while_hashing() -> None:
    # A thread spinning in Python keeps counting while Argon2 (here ~0.5 s of work)
    # runs: it could not if the GIL were held, beyond the switch interval's handful.
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # held GIL = the spinner gets (almost) nothing
    try:
        held = _ticks_while(lambda: sum(range(3_000_000)))
        released = _ticks_while(lambda: crm.passwords.hash("p", memory_kib=65536, iterations=4))
        big = os.urandom(8 << 20)
        wh = crm.webhooks.Webhook(b"k")
        sig = wh.sign("m", NOW, big)
        released_verify = _ticks_while(lambda: [wh.verify(big, headers("m", NOW, sig), json_parse=False) for _ in range(5)])
    finally:
        sys.setswitchinterval(old)
    assert held < 1000, held
    assert released > 100_000, (held, released)
    assert released_verify > 10_000, (held, released_verify)
