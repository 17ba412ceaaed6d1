"""crm.sync.Crm: the blocking API over the async one, on both backends."""

import threading
from typing import List

import pytest

import crm
import crm.sync


def test_the_blocking_api_mirrors_the_async_one(database_url: str, master_key: str) -> None:
    with crm.sync.Crm.connect(database_url, master_key=master_key) as c:
        lead = c.leads.create("Ana", email="ana@example.com", tags=["vip"])
        assert isinstance(lead, crm.Lead) and lead.tags == ["vip"]
        assert c.leads.get(lead.id).id == lead.id
        assert c.leads.update(lead.id, status="contacted").status == "contacted"
        assert [x.id for x in c.leads.list(limit=10).items] == [lead.id]
        # Errors are the async ones, raised in the caller's thread.
        with pytest.raises(crm.ValidationError) as e:
            c.leads.create("Bea", email="not an email")
        assert e.value.errors[0].field == "email"
        with pytest.raises(crm.ConflictError) as conflict:
            c.leads.create("Ana again", email="ana@example.com")
        assert conflict.value.existing_id == lead.id
        with pytest.raises(crm.NotFoundError):
            c.leads.get("00000000-0000-0000-0000-00000000000f")
        # Other workspaces, nested services, the rate limiter.
        other = c.create_workspace("Other")
        assert isinstance(other, crm.sync.Workspace)
        assert other.leads.list().items == []
        assert other.info().name == "Other"
        key = other.api_keys.create("bot", ["leads:read"])
        assert other.api_keys.verify(key.secret).key_id == key.key.id
        assert c.rate_limiter.check("api_key", "k1").allowed
        assert other.id != c.id and "Workspace" in repr(other)
        with pytest.raises(AttributeError):
            c.leads = None  # type: ignore[misc]


def test_many_threads_call_at_once(database_url: str) -> None:
    with crm.sync.Crm.connect(database_url) as c:
        failures: List[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(5):
                    c.leads.create(f"Lead {n}-{i}", email=f"l{n}-{i}@example.com")
            except BaseException as e:  # noqa: BLE001 (reported below)
                failures.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert c.leads.list(include_total=True).total == 40


def test_a_closed_client_refuses_calls(database_url: str) -> None:
    c = crm.sync.Crm.connect(database_url)
    c.close()
    assert c.__class__ is crm.sync.Crm
    with pytest.raises(crm.CrmError) as e:
        c.leads.list()
    assert e.value.code == "client_closed"
    c.close()  # a second close is fine
    with pytest.raises(crm.CrmError) as e:
        c.start_dispatcher()
    assert e.value.code == "client_closed"


def test_sync_objects_copy_and_refuse_their_own_loop(database_url: str) -> None:
    import copy
    import pickle

    with crm.sync.Crm.connect(database_url) as c:
        leads = copy.copy(c.leads)
        assert leads.list().items == []
        assert copy.deepcopy(c).leads.list().items == []
        with pytest.raises(TypeError):
            pickle.dumps(c)


def test_the_blocking_types_are_made_from_the_async_api() -> None:
    import importlib.util
    import inspect
    from pathlib import Path

    import crm.client

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gen_sync_stub", root / "scripts" / "gen-sync-stub.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    stub = (root / "crm-py" / "python" / "crm" / "sync.pyi").read_text()
    assert stub == gen.generate(), "crm/sync.pyi is out of date: run python3 scripts/gen-sync-stub.py"
    # Every method the stub promises is one the async class has (or sync.py's own).
    own = {"workspace", "close", "connect"}
    for name in gen.SERVICES + ["Workspace", "Crm"]:
        body = stub.split(f"\nclass {name}(", 1)[1].split("\nclass ", 1)[0]
        for method in re_methods(body):
            target = getattr(crm.client, name)
            assert method in own or inspect.isfunction(getattr(target, method, None)), f"{name}.{method}"
            blocking = getattr(crm.sync, name)
            assert method in own or not hasattr(blocking, method)  # made at run time, not written twice


def re_methods(body: str) -> List[str]:
    import re

    return [m for m in re.findall(r"^    def (\w+)\(", body, re.M) if not m.startswith("__")]
