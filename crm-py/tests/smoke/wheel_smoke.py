"""Run by scripts/test.sh in a virtualenv that has only the built wheel installed,
with no Rust toolchain on PATH: the wheel works on its own."""

import asyncio
import shutil
import sys
import tempfile

import crm


async def main() -> None:
    assert shutil.which("cargo") is None and shutil.which("rustc") is None, "a Rust toolchain is on PATH"
    with tempfile.TemporaryDirectory() as d:
        async with await crm.Crm.connect(f"sqlite://{d}/crm.db?mode=rwc") as c:
            lead = await c.leads.create("Ana", email="ana@example.com")
            assert (await c.leads.list()).items == [lead]
    print(f"crm {crm.__version__} from {crm.__file__} works on Python {sys.version.split()[0]} without cargo")


asyncio.run(main())
