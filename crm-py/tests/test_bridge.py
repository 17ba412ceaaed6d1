"""The awaitables themselves: cancellation, event loops, interpreter exit."""

import asyncio
import subprocess
import time
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


FORK_SCRIPT = """
import asyncio, os, sys, crm, crm.sync
url = sys.argv[1]
c = asyncio.run(crm.Crm.connect(url))
asyncio.run(c.ping())
s = crm.sync.Crm.connect(url)
s.ping()
pid = os.fork()
if pid == 0:
    code = 0
    try:
        asyncio.run(asyncio.wait_for(c.ping(), 5))
        code = 10  # the parent's client must refuse
    except crm.CrmError as e:
        code = 0 if e.code == "client_closed" else 11
    except BaseException:
        code = 12
    if code == 0:
        # A client of the child's own works, async and blocking.
        mine = asyncio.run(crm.Crm.connect(url))
        asyncio.run(asyncio.wait_for(mine.ping(), 5))
        asyncio.run(mine.close())
        with crm.sync.Crm.connect(url) as own:
            own.ping()
        asyncio.run(c.close())  # the parent's connections are left alone
    os._exit(code)
_, status = os.waitpid(pid, 0)
asyncio.run(c.ping())  # the parent's client still works
s.ping()
s.close()
asyncio.run(c.close())
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_connects_its_own_client(database_url: str) -> None:
    run = subprocess.run([sys.executable, "-c", FORK_SCRIPT, database_url], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()[-1000:]


PENDING_SCRIPT = """
import asyncio, http.server, sys, threading, time, crm
class Silent(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(30)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
threading.Thread(target=server.serve_forever, daemon=True).start()
parser = {"kind": "openai", "api_key": "k", "base_url": f"http://127.0.0.1:{server.server_address[1]}"}
async def main():
    c = await crm.Crm.connect(sys.argv[1], parser=parser)
    asyncio.get_running_loop().create_task(c.leads.parse("Ana ana@example.com"))
    await asyncio.sleep(0.2)
asyncio.run(main())
"""


def test_exit_does_not_wait_for_calls_still_running(tmp_path: Path) -> None:
    started = time.monotonic()
    url = f"sqlite://{tmp_path / 'crm.db'}?mode=rwc"
    run = subprocess.run([sys.executable, "-c", PENDING_SCRIPT, url], capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()[-1000:]
    assert time.monotonic() - started < 10  # the parser call takes 30 s (OpenAI's timeout)
