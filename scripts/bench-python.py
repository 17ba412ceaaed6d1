"""Per-call cost of the Python bridge, measured from Python on SQLite.

Run with the venv that has `crm` installed (scripts/test.sh makes one):

    .venv/bin/python scripts/bench-python.py [--rounds N]

Prints microseconds per call (median of rounds) for `leads.create`,
`leads.list(limit=100)` over 1,000 leads, `leads.get` of one lead (a cheap call, so
mostly the bridge's own cost), and `Webhook.verify` of a 1 KiB body (verify + JSON
decode). Run it with two virtualenvs to compare two builds, alternating. A figure, never an assertion: the machine is shared.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time

import crm
from crm.webhooks import Webhook


async def timed(n: int, make) -> float:
    t = time.perf_counter()
    for i in range(n):
        await make(i)
    return (time.perf_counter() - t) / n * 1e6


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        client = await crm.Crm.connect(f"sqlite://{os.path.join(d, 'bench.db')}")
        leads = client.workspace(crm.DEFAULT_WORKSPACE).leads
        counter = iter(range(10**9))

        async def create(_: int) -> None:
            k = next(counter)
            await leads.create(f"Lead {k}", email=f"lead{k}@example.com", company="Acme", tags=["a", "b"])

        async def list100(_: int) -> None:
            page = await leads.list(limit=100)
            assert len(page.items) == 100

        await timed(1000, create)  # the 1,000 leads the list reads, and a warm-up
        one = (await leads.list(limit=1)).items[0].id

        async def get(_: int) -> None:
            await leads.get(one)

        creates, lists, gets = [], [], []
        for _ in range(rounds):
            creates.append(await timed(200, create))
            lists.append(await timed(200, list100))
            gets.append(await timed(500, get))
        await client.close()

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    wh = Webhook(secret)
    body = json.dumps({"type": "lead.created", "data": {"note": "y" * (1024 - len(json.dumps({"type": "lead.created", "data": {"note": ""}})))}})
    assert len(body) == 1024
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": wh.sign("msg_1", now, body)}
    verifies = []
    for _ in range(rounds):
        n = 20000
        t = time.perf_counter()
        for _ in range(n):
            wh.verify(body, headers)
        verifies.append((time.perf_counter() - t) / n * 1e6)

    print(f"crm {crm.__version__}: median of {rounds} rounds, microseconds per call")
    print(f"leads.create                 {statistics.median(creates):8.1f}")
    print(f"leads.list(limit=100)        {statistics.median(lists):8.1f}")
    print(f"leads.get (one lead)         {statistics.median(gets):8.1f}")
    print(f"Webhook.verify 1 KiB + JSON  {statistics.median(verifies):8.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(p.parse_args().rounds))
