"""Postgres row-level security from Python: ``Crm.connect(…, row_level_security=True)``
as an app role that owns nothing, after the tables' owner migrated and turned it
on. Each workspace's calls see that workspace only; connecting as a role that RLS
binds without saying so is refused."""

import os
import subprocess
import uuid
from typing import Iterator

import pytest

import crm
from crm.errors import CrmError, NotFoundError

from conftest import STRONG, _psql, fresh_postgres

pytestmark = pytest.mark.skipif(
    not os.environ.get("CRM_TEST_PG_URL"), reason="needs Postgres (scripts/test.sh starts one)"
)

ENABLE = """DO $$ DECLARE t text; BEGIN
FOR t IN SELECT c.relname FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid
WHERE p.polname = 'crm_tenant' AND c.relnamespace = current_schema()::regnamespace
LOOP EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t); END LOOP; END $$"""


@pytest.fixture
def owner_url() -> Iterator[str]:
    yield from fresh_postgres()


async def test_each_workspace_sees_its_own_rows_behind_row_level_security(owner_url: str) -> None:
    owner = await crm.Crm.connect(owner_url)
    await owner.close()
    role = "crm_py_app_" + uuid.uuid4().hex[:12]
    name = owner_url.rsplit("/", 1)[1]
    sql = (
        f"{ENABLE}; CREATE ROLE {role} LOGIN NOBYPASSRLS; "
        f"GRANT CONNECT ON DATABASE {name} TO {role}; GRANT USAGE ON SCHEMA public TO {role}; "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
    )
    subprocess.run([_psql(), owner_url, "-qc", sql], check=True, capture_output=True)
    scheme, rest = owner_url.split("://", 1)
    app_url = f"{scheme}://{role}@{rest.split('@', 1)[1]}"
    try:
        with pytest.raises(CrmError) as refused:
            await crm.Crm.connect(app_url)
        assert refused.value.code == "configuration_error"
        app = await crm.Crm.connect(app_url, row_level_security=True)
        try:
            a = await app.register("A", "a@example.com", "A", STRONG)
            b = await app.register("B", "b@example.com", "B", STRONG)
            lead = await app.workspace(a.workspace_id).leads.create("Ana", email="ana@example.com")
            await app.workspace(b.workspace_id).leads.create("Bruno", email="bruno@example.com")
            mine = await app.workspace(a.workspace_id).leads.list()
            assert [l.name for l in mine.items] == ["Ana"]
            with pytest.raises(NotFoundError):
                await app.workspace(b.workspace_id).leads.get(lead.id)
        finally:
            await app.close()
    finally:
        # Each -c runs alone (DROP DATABASE cannot run in a transaction); the role
        # goes once the database that holds its grants is gone.
        subprocess.run(
            [_psql(), os.environ["CRM_TEST_PG_URL"], "-q",
             "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
             "-c", f"DROP ROLE IF EXISTS {role}"],
            check=True, capture_output=True,
        )
