"""CSV import and export of leads through Python, on both backends."""

import asyncio
import csv
import io
import sys
from pathlib import Path
from typing import Any, List

import pytest

import crm


async def test_import_from_a_path_with_progress_then_export_and_back(client: crm.Crm, tmp_path: Path) -> None:
    lines = ["Name;E-mail;Phone;Plan"]
    lines += [f"Person {i};p{i}@example.com;;gold" for i in range(1_500)]
    lines += ["Formula;=cmd@example.com;;", "Caller;;+34 600 000 001;silver", "Bad;nope;;"]
    path = tmp_path / "leads.csv"
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    seen: List[crm.ImportProgress] = []
    report = await client.leads.import_csv(
        path, mapping={"Plan": "custom.plan"}, on_progress=seen.append
    )
    assert isinstance(report, crm.ImportReport) and report.status == "completed"
    assert (report.created, report.failed, report.rows_done) == (1_502, 1, 1_503)
    assert report.errors[0] == crm.RowError(row=1_503, line=1_504, field="email", message=report.errors[0].message)
    assert [p.rows_done for p in seen] == [1_000, 1_503], "every batch reported before the result"
    assert all(isinstance(p, crm.ImportProgress) and p.rows_per_sec > 0 for p in seen)

    out = tmp_path / "out.csv"
    written = await client.leads.export_csv(out, q="caller")
    assert written == 1
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0]["phone"] == "'+34600000001", "a formula character is escaped"
    assert rows[0]["custom.plan"] == "silver"
    everything = tmp_path / "all.csv"
    assert await client.leads.export_csv(everything) == 1_502
    assert "'=cmd@example.com" in everything.read_text(encoding="utf-8")
    other = await client.create_workspace("Copy")
    copy = await other.leads.import_csv(everything.read_bytes())
    assert (copy.created, copy.failed) == (1_502, 0)
    caller = (await other.leads.list(q="caller")).items[0]
    assert caller.phone == "+34600000001" and caller.custom == {"plan": "silver"}
    formula = (await other.leads.list(q="formula")).items[0]
    assert formula.email == "=cmd@example.com", "the escape is taken off again"


async def test_a_dry_run_writes_nothing_and_bad_input_is_refused(
    client: crm.Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"name,email\nAna,ana@example.com\nBea,bea@example.com\n"
    dry = await client.leads.import_csv(data, dry_run=True)
    assert dry.dry_run and dry.created == 2
    assert (await client.leads.list()).items == []
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.import_csv(b"name,company\nA,B\n")
    assert e.value.errors[0].field == "file"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.import_csv(data, delimiter="|")
    assert e.value.errors[0].field == "delimiter"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.import_csv(data, mapping={"name": "nombre"})
    assert e.value.errors[0].field == "mapping.name"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.import_csv(12)  # type: ignore[arg-type]
    assert e.value.errors[0].field == "source"
    with pytest.raises(crm.ValidationError) as e:
        await client.leads.import_csv(data, skip_rows=-1)
    assert e.value.errors[0].field == "skip_rows"
    with pytest.raises(FileNotFoundError):
        await client.leads.import_csv("/nonexistent/leads.csv")
    # A callback that raises does not stop the import; its error is unraisable.
    def broken(_: crm.ImportProgress) -> None:
        raise RuntimeError("callback bug")

    caught: List[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: caught.append(u.exc_value))
    done = await client.leads.import_csv(data, on_progress=broken)
    assert done.created == 2
    assert [str(e) for e in caught] == ["callback bug"]


async def test_a_tracked_import_is_polled(client: crm.Crm) -> None:
    data = ("name,email\n" + "".join(f"P {i},p{i}@example.com\n" for i in range(1_200))).encode()
    started = await client.leads.start_import(data)
    assert started.status == "running"
    report = started
    for _ in range(400):
        report = await client.leads.import_report(started.id)
        if report.status != "running":
            break
        await asyncio.sleep(0.025)
    assert report.status == "completed" and report.total_rows == 1_200 and report.created == 1_200
    with pytest.raises(crm.NotFoundError):
        other = await client.create_workspace("Other")
        await other.leads.import_report(started.id)


async def test_an_export_writes_its_file_off_the_event_loop(
    client: crm.Crm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import crm.client

    await client.leads.import_csv(
        ("name,email\n" + "".join(f"P{i},p{i}@example.com\n" for i in range(1_200))).encode()
    )

    class SlowDisk(io.BytesIO):
        def write(self, data: Any) -> int:
            time.sleep(0.2)  # a disk that blocks its caller
            return super().write(data)

    monkeypatch.setattr(crm.client, "_open_for_writing", lambda path: SlowDisk())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        written = await client.leads.export_csv(tmp_path / "out.csv")
    finally:
        task.cancel()
    assert written == 1_200
    # Three chunks of 500 leads, 0.6 s of blocked writes: the loop kept ticking.
    assert ticks >= 30, ticks
