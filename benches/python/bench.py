"""Python-side benchmark: crm.webhooks.Webhook.sign/.verify against the
`standardwebhooks` package and bare hmac+base64, and crm.passwords.hash against
argon2-cffi at equal parameters, all in one run (ratios are only meaningful within
one run on a shared machine).

    python3 -m venv .venv && .venv/bin/pip install ./crm-py standardwebhooks argon2-cffi
    .venv/bin/python benches/python/bench.py            # or: --quick

Each figure is the best of several repeats (timeit), per call.
"""

import base64
import hashlib
import hmac
import os
import sys
import time
import timeit
from datetime import datetime, timezone
from typing import Callable, Dict, List, Tuple

import argon2
import standardwebhooks

import crm

QUICK = "--quick" in sys.argv
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
KEY = base64.b64decode(SECRET[6:])
MSG_ID = "msg_2b8pqGPb9p3ltsVMQ3MkDpz2ZvC"


def best(fn: Callable[[], object], target: float = 0.2) -> float:
    """Seconds per call: the best of 5 repeats of a loop sized to about ``target`` s."""
    number, _ = timeit.Timer(fn).autorange()
    number = max(1, int(number * target / 0.2))
    repeats = 3 if QUICK else 7
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number


def bare_sign(ts: int, body: str) -> str:
    mac = hmac.new(KEY, f"{MSG_ID}.{ts}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def bare_verify(body: str, headers: Dict[str, str]) -> None:
    expected = hmac.new(
        KEY, f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode(), hashlib.sha256
    ).digest()
    for sig in headers["webhook-signature"].split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(expected, base64.b64decode(value)):
            return
    raise ValueError("no match")


def main() -> None:
    ours = crm.webhooks.Webhook(SECRET)
    theirs = standardwebhooks.Webhook(SECRET)
    rows: List[Tuple[str, float, float, float]] = []
    for size in (1024, 16 * 1024):
        head = '{"type":"lead.created","data":{"note":"'
        body = head + "x" * (size - len(head) - 3) + '"}}'
        body_bytes = body.encode()
        now = int(time.time())
        at = datetime.fromtimestamp(now, tz=timezone.utc)
        sig = ours.sign(MSG_ID, now, body_bytes)
        assert sig == theirs.sign(MSG_ID, at, body) == bare_sign(now, body)
        headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": sig}
        label = f"{size // 1024} KiB"
        rows.append((
            f"sign {label}",
            best(lambda: ours.sign(MSG_ID, now, body_bytes)),
            best(lambda: theirs.sign(MSG_ID, at, body)),
            best(lambda: bare_sign(now, body)),
        ))
        rows.append((
            f"verify {label}",
            best(lambda: ours.verify(body_bytes, headers, json_parse=False)),
            best(lambda: theirs.verify(body_bytes, headers, json_parse=False)),
            best(lambda: bare_verify(body, headers)),
        ))
        rows.append((
            f"verify {label}, JSON-decoded (both packages' default)",
            best(lambda: ours.verify(body_bytes, headers)),
            best(lambda: theirs.verify(body_bytes, headers)),
            float("nan"),
        ))

    print(f"Python {sys.version.split()[0]}, crm {crm.__version__}, standardwebhooks, per call (best of repeats)\n")
    print(f"| operation | crm | standardwebhooks | bare hmac+base64 | standardwebhooks / crm | bare / crm |")
    print("|---|---|---|---|---|---|")
    for name, c, s, b in rows:
        bare = "-" if b != b else f"{b * 1e6:.2f} µs"
        ratio_b = "-" if b != b else f"{b / c:.2f}×"
        print(f"| {name} | {c * 1e6:.2f} µs | {s * 1e6:.2f} µs | {bare} | **{s / c:.2f}×** | {ratio_b} |")

    password = "Correct-Horse-Battery-9!"
    cffi = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)
    ours_hash = crm.passwords.hash(password)
    assert cffi.verify(ours_hash, password) and crm.passwords.verify(password, cffi.hash(password))
    c = best(lambda: crm.passwords.hash(password), target=1.0)
    a = best(lambda: cffi.hash(password), target=1.0)
    print(f"\n| Argon2id m=19456 KiB t=2 p=1 | crm | argon2-cffi | argon2-cffi / crm |")
    print("|---|---|---|---|")
    print(f"| passwords.hash | {c * 1e3:.2f} ms | {a * 1e3:.2f} ms | {a / c:.2f}× |")


if __name__ == "__main__":
    main()
