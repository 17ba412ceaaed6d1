"""The awaitables themselves: cancellation, event loops, interpreter exit."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import crm

SHORT_SCRIPT = """
import asyncio, sys, crm
async def main():
    c = await crm.Crm.connect(sys.argv[1])
    await c.leads.create("Ana", email="ana@example.com")
    await c.ping()
    await c.close()
asyncio.run(main())
"""


def test_short_scripts_exit_cleanly(tmp_path: Path) -> None:
    # A result handed over while the interpreter shut down crashed about one run in
    # ten (a fatal error in PyGILState_Release): thirty runs all exit with 0.
    codes = []
    for i in range(30):
        url = f"sqlite://{tmp_path / f'{i}.db'}?mode=rwc"
        run = subprocess.run([sys.executable, "-c", SHORT_SCRIPT, url], capture_output=True, timeout=60)
        codes.append((run.returncode, run.stderr.decode()[-300:]))
    assert [c for c in codes if c[0] != 0] == []


async def test_a_cancelled_call_leaves_the_client_working(client: crm.Crm) -> None:
    for _ in range(20):
        task = asyncio.ensure_future(client.leads.list(limit=100))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    lead = await client.leads.create("Ana", email="ana@example.com")
    assert (await client.leads.list()).items == [lead]


def test_a_client_serves_one_event_loop_after_another(database_url: str) -> None:
    c = asyncio.run(crm.Crm.connect(database_url))
    lead = asyncio.run(c.leads.create("Ana", email="ana@example.com"))
    assert asyncio.run(c.leads.get(lead.id)).id == lead.id
    asyncio.run(c.close())
    with pytest.raises(crm.CrmError) as e:
        asyncio.run(c.leads.list())
    assert e.value.code == "client_closed"


def test_a_call_outside_an_event_loop_is_refused(client: crm.Crm) -> None:
    with pytest.raises(RuntimeError):
        client._native.crm_ping()
