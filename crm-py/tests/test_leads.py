"""The lead service through Python, on both backends."""

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

import crm


async def count(client: crm.Workspace) -> int:
    page = await client.leads.list(include_total=True, limit=1)
    assert page.total is not None
    return page.total


async def test_create_get_and_typed_results(client: crm.Crm) -> None:
    lead = await client.leads.create(
        "Ada Lovelace", email="ADA@Example.com", phone="+44 20 7946 0958", tags=["vip"],
        custom={"plan": "pro"}, source="website",
    )
    assert isinstance(lead, crm.Lead)
    assert lead.email == "ADA@example.com" and lead.status == "new" and lead.tags == ["vip"]
    assert lead.custom == {"plan": "pro"} and lead.workspace_id == crm.DEFAULT_WORKSPACE
    assert lead.created_at.tzinfo is not None
    assert abs(lead.created_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
    detail = await client.leads.get(lead.id)
    assert isinstance(detail, crm.LeadDetail) and detail.id == lead.id and detail.activities == []
    d = lead.to_dict()
    assert d["id"] == lead.id and d["created_at"].endswith("Z") and d["tags"] == ["vip"]
    assert crm.Lead.from_dict(d) == lead


async def test_update_clears_and_records_status_change(client: crm.Crm) -> None:
    lead = await client.leads.create("Bo", email="bo@example.com", company="Acme", notes="n")
    updated = await client.leads.update(lead.id, status="contacted", company=None)
    assert updated.status == "contacted" and updated.company is None
    assert updated.notes == "n" and updated.email == "bo@example.com"  # not given: kept
    acts = await client.leads.activities(lead.id)
    assert [(a.kind, a.old_status, a.new_status) for a in acts] == [("status_change", "new", "contacted")]


async def test_activities_and_delete(client: crm.Crm) -> None:
    lead = await client.leads.create("Cy", phone="+15551234567")
    act = await client.leads.add_activity(lead.id, "note", "called back")
    assert isinstance(act, crm.Activity) and act.lead_id == lead.id and act.description == "called back"
    assert [a.id for a in (await client.leads.get(lead.id)).activities] == [act.id]
    await client.leads.delete(lead.id)
    with pytest.raises(crm.NotFoundError) as e:
        await client.leads.get(lead.id)
    assert e.value.entity == "lead" and e.value.code == "not_found"
    with pytest.raises(crm.NotFoundError):
        await client.leads.delete(lead.id)
    with pytest.raises(crm.NotFoundError):
        await client.leads.add_activity(lead.id, "note")


async def test_capture_records_on_the_known_lead_without_changing_it(client: crm.Crm) -> None:
    first = await client.leads.capture("Di", email="di@example.com", message="hi")
    again = await client.leads.capture("Di", email="di@example.com", message="again",
                                       phone="+14155550100", company="Mallory Inc")
    assert first.created and not again.created and again.lead.id == first.lead.id
    assert again.lead.phone is None and again.lead.company is None
    activities = await client.leads.activities(first.lead.id)
    assert [a.kind for a in activities].count("form_submission") == 2
    assert "Mallory Inc" in (activities[-1].description or "")


async def test_list_filters_cursor_and_total(client: crm.Crm) -> None:
    for i in range(5):
        await client.leads.create(f"Lead {i}", email=f"l{i}@example.com", tags=["t"] if i % 2 else [],
                                  source="website" if i < 3 else "referral")
    page = await client.leads.list(limit=2, sort="name", order="asc", include_total=True)
    assert [lead.name for lead in page.items] == ["Lead 0", "Lead 1"] and page.total == 5
    assert page.next_cursor
    seen = [lead.name for lead in page.items]
    while page.next_cursor:
        page = await client.leads.list(limit=2, sort="name", order="asc", cursor=page.next_cursor)
        seen += [lead.name for lead in page.items]
    assert seen == [f"Lead {i}" for i in range(5)]
    assert {lead.name for lead in (await client.leads.list(source="referral")).items} == {"Lead 3", "Lead 4"}
    assert {lead.name for lead in (await client.leads.list(tags=["t"])).items} == {"Lead 1", "Lead 3"}
    assert [lead.name for lead in (await client.leads.list(q="lead 4")).items] == ["Lead 4"]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert (await client.leads.list(created_after=future)).items == []
    assert len((await client.leads.list(created_before=future)).items) == 5
    assert len((await client.leads.list(status=["new", "won"])).items) == 5


async def test_bad_input_is_a_typed_error_and_writes_nothing(client: crm.Crm) -> None:
    cases = [
        (lambda: client.leads.create("", email="not-an-email"), {"name", "email"}),
        (lambda: client.leads.create("X", status="bogus"), {"status"}),
        (lambda: client.leads.create("X", phone="12"), {"phone"}),
        (lambda: client.leads.create("X", custom={"k": 1}, tags=["ok", ""]), {"tags[1]"}),
        (lambda: client.leads.create(123), {"name"}),  # type: ignore[arg-type]
        (lambda: client.leads.list(limit=0), {"limit"}),
        (lambda: client.leads.list(limit=-1), {"limit"}),
        (lambda: client.leads.list(cursor="garbage"), {"cursor"}),
        (lambda: client.leads.list(sort="nope"), {"sort"}),
        (lambda: client.leads.list(created_after=datetime(2026, 1, 1)), {"created_after"}),
        (lambda: client.leads.get("not-a-uuid"), {"id"}),
        (lambda: client.leads.update("not-a-uuid", name="x"), {"id"}),
        (lambda: client.leads.add_activity("00000000-0000-7000-8000-000000000000", ""), {"kind"}),
    ]
    for call, fields in cases:
        with pytest.raises(crm.ValidationError) as e:
            await call()
        assert {f.field for f in e.value.errors} >= fields, (fields, e.value.errors)
        assert e.value.code == "validation_failed"
    assert await count(client) == 0
    lead = await client.leads.create("Kept", email="kept@example.com")
    with pytest.raises(crm.ValidationError):
        await client.leads.update(lead.id, email="broken")
    assert (await client.leads.get(lead.id)).email == "kept@example.com"


async def test_conflict_carries_the_existing_id(client: crm.Crm) -> None:
    lead = await client.leads.create("Ed", email="ed@example.com")
    with pytest.raises(crm.ConflictError) as e:
        await client.leads.create("Ed again", email="ed@example.com")
    assert e.value.existing_id == lead.id and e.value.field == "email"
    assert await count(client) == 1


async def test_workspaces_are_isolated(client: crm.Crm) -> None:
    other = await client.create_workspace("Other")
    assert (await other.info()).name == "Other"
    assert (await other.rename("Renamed")).name == "Renamed"
    lead = await other.leads.create("Fi", email="fi@example.com")
    assert (await client.leads.list()).items == []
    with pytest.raises(crm.NotFoundError):
        await client.leads.get(lead.id)
    assert (await client.workspace(other.id).leads.get(lead.id)).name == "Fi"
    with pytest.raises(crm.ValidationError):
        client.workspace("nope")
    with pytest.raises(crm.NotFoundError):
        await client.workspace("00000000-0000-7000-8000-000000000001").leads.create("Gi", phone="+15550001111")


async def test_parse_with_builtin_parser(client: crm.Crm) -> None:
    parsed = await client.leads.parse("Hi, I'm Hal, hal@example.com, +1 555 010 9999", auto_save=True)
    assert isinstance(parsed, crm.ParsedLead)
    assert parsed.fields == {"name": "Hal", "email": "hal@example.com", "phone": "+15550109999"}
    assert parsed.found == ["name", "email", "phone"]
    assert set(parsed.field_confidence) == {"name", "email", "phone"}
    assert all(0 < c <= 1 for c in parsed.field_confidence.values())
    assert parsed.parser == "builtin" and parsed.fallback is False
    assert parsed.lead is not None and parsed.lead.email == "hal@example.com"
    assert (await client.leads.parse("nothing here")).lead is None


async def test_results_are_real_coroutines(client: crm.Crm) -> None:
    coro = client.leads.create("Ivy", email="ivy@example.com")
    assert asyncio.iscoroutine(coro)
    task = asyncio.create_task(coro)
    others = await asyncio.gather(*(client.leads.create(f"P{i}", email=f"p{i}@example.com") for i in range(10)))
    assert (await task).name == "Ivy" and len({lead.id for lead in others}) == 10
    assert await count(client) == 11


async def test_ping_and_close(database_url: str) -> None:
    async with await crm.Crm.connect(database_url) as c:
        await c.ping()
        assert repr(c) == "Crm()"
    with pytest.raises(crm.CrmError):
        await c.ping()


async def test_connect_errors(tmp_path: object) -> None:
    with pytest.raises(crm.ValidationError) as e:
        await crm.Crm.connect("sqlite::memory:", master_key="short")
    assert e.value.errors[0].field == "master_key"
    with pytest.raises(crm.CrmError) as c:
        await crm.Crm.connect("mysql://nope")
    assert c.value.code == "configuration_error"


async def test_stats(client: crm.Crm) -> None:
    empty = await client.leads.stats()
    assert isinstance(empty, crm.LeadStats) and empty.total == 0
    assert [c.status for c in empty.by_status] == ["new", "contacted", "qualified", "proposal", "won", "lost"]
    assert empty.median_seconds_to_contacted is None and empty.series.bucket == "day"
    assert empty.series.end - empty.series.start == timedelta(days=30)
    ana = await client.leads.create("Ana", email="ana@example.com", source="website")
    await client.leads.create("Bo", email="bo@example.com")
    await client.leads.update(ana.id, status="contacted")
    now = datetime.now(timezone.utc)
    s = await client.leads.stats(start=now - timedelta(days=60), end=now + timedelta(days=1), bucket="week")
    assert s.total == 2 and s.series.bucket == "week"
    assert sum(p.count for p in s.series.points) == 2
    assert all(p.start.weekday() == 0 and p.start.tzinfo is not None for p in s.series.points)
    assert [(c.source, c.count) for c in s.by_source] == [(None, 1), ("website", 1)]
    assert {c.status: c.count for c in s.funnel}["contacted"] == 1
    assert s.median_seconds_to_contacted is not None and s.median_seconds_to_contacted >= 0
    assert s.to_dict()["series"]["bucket"] == "week"
    for bad, field in [
        ({"bucket": "year"}, "bucket"),
        ({"start": now, "end": now}, "start"),
        ({"start": now - timedelta(days=3000)}, "start"),
        ({"start": datetime(2026, 1, 1)}, "start"),  # naive
    ]:
        with pytest.raises(crm.ValidationError) as e:
            await client.leads.stats(**bad)  # type: ignore[arg-type]
        assert e.value.errors[0].field == field, bad


async def test_archive_hides_and_restore_brings_back(client: crm.Crm) -> None:
    kept = await client.leads.create("Kept", email="kept@example.com")
    gone = await client.leads.create("Gone", email="gone@example.com")
    await client.leads.add_activity(gone.id, "note", "called")
    archived = await client.leads.archive(gone.id)
    assert isinstance(archived, crm.Lead) and archived.archived_at is not None
    assert archived.archived_at.tzinfo is not None
    assert [lead.id for lead in (await client.leads.list()).items] == [kept.id]
    assert [lead.id for lead in (await client.leads.list(archived=True)).items] == [gone.id]
    assert {lead.id for lead in (await client.leads.list(archived="any")).items} == {kept.id, gone.id}
    detail = await client.leads.get(gone.id)
    assert detail.archived_at == archived.archived_at and len(detail.activities) == 1
    # It still counts for duplicates: the conflict names it.
    with pytest.raises(crm.ConflictError) as e:
        await client.leads.create("Again", email="GONE@example.com")
    assert e.value.existing_id == gone.id
    with pytest.raises(crm.ValidationError) as v:
        await client.leads.list(archived="yes")
    assert v.value.errors[0].field == "archived"
    restored = await client.leads.restore(gone.id)
    assert restored.archived_at is None
    assert len((await client.leads.list()).items) == 2
    other = await client.create_workspace("Other")
    with pytest.raises(crm.NotFoundError):
        await other.leads.archive(kept.id)


async def test_duplicates_and_merge(client: crm.Crm) -> None:
    a = await client.leads.create("Ana", email="ana.lopez@gmail.com", tags=["vip"])
    b = await client.leads.create("Ana L", email="analopez+web@gmail.com", phone="+34 600 123 456")
    await client.leads.add_activity(b.id, "note", "from b")
    groups = await client.leads.duplicates()
    assert len(groups) == 1 and isinstance(groups[0], crm.DuplicateGroup)
    assert groups[0].reason == "email" and [lead.id for lead in groups[0].leads] == [a.id, b.id]
    assert groups[0].size == 2
    dry = await client.leads.merge(a.id, [b.id], dry_run=True, prefer={"name": b.id})
    assert isinstance(dry, crm.Merged) and dry.dry_run and dry.lead.name == "Ana L"
    assert dry.lead.phone == b.phone and dry.moved_activities == 1
    assert (await client.leads.get(b.id)).id == b.id, "a dry run writes nothing"
    done = await client.leads.merge(a.id, [b.id])
    assert done.absorbed == [b.id] and not done.dry_run
    with pytest.raises(crm.NotFoundError):
        await client.leads.get(b.id)
    kinds = [x.kind for x in (await client.leads.get(a.id)).activities]
    assert kinds == ["note", "merged"]
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.merge(a.id, [a.id])
    assert e.value.errors[0].field == "from"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.merge(a.id, "not-a-list")
    assert e.value.errors[0].field == "from"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.duplicates(limit=-1)
    assert e.value.errors[0].field == "limit"
    c = await client.leads.create("C", email="c@example.com")
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.merge(a.id, [c.id], prefer=["name"])  # type: ignore[arg-type]
    assert e.value.errors[0].field == "prefer"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.merge(a.id, [c.id], dry_run="yes")  # type: ignore[arg-type]
    assert e.value.errors[0].field == "dry_run"
