"""Fixtures: a fresh database per test, on SQLite always and on Postgres when
CRM_TEST_PG_URL is set (scripts/test.sh starts a throwaway cluster and sets it)."""

import base64
import glob
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest

import crm

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"


def vectors(name: str) -> List[Dict[str, Any]]:
    """The cases of ``tests/vectors/<name>.json`` (the project's copy, shared with the Rust tests); a missing file fails the test."""
    path = VECTORS / f"{name}.json"
    cases: List[Dict[str, Any]] = json.loads(path.read_text())["cases"]
    assert cases, f"no cases in {path}"
    return cases


def _psql() -> str:
    found = shutil.which("psql") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))), None)
    if not found:
        raise RuntimeError("CRM_TEST_PG_URL is set but psql is not installed")
    return found


def fresh_postgres() -> Iterator[str]:
    admin = os.environ["CRM_TEST_PG_URL"]
    name = "crm_py_" + uuid.uuid4().hex[:16]
    run = lambda sql: subprocess.run([_psql(), admin, "-qc", sql], check=True, capture_output=True)
    run(f"CREATE DATABASE {name}")
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("CRM_TEST_PG_URL") else [])


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'crm.db'}?mode=rwc"
    else:
        yield from fresh_postgres()


@pytest.fixture
def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
async def client(database_url: str, master_key: str) -> AsyncIterator[crm.Crm]:
    c = await crm.Crm.connect(database_url, master_key=master_key)
    try:
        yield c
    finally:
        await c.close()


STRONG = "Correct-Horse-Battery-9!"
