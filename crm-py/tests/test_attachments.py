"""Files on leads and contacts through Python, on both backends: bytes and paths,
sniffed types, limits, the quota, signed links, deletes and the blocking API."""

import hashlib
from pathlib import Path
from typing import AsyncIterator

import pytest

import crm
import crm.sync

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


@pytest.fixture
async def files(database_url: str, master_key: str, tmp_path: Path) -> AsyncIterator[crm.Crm]:
    c = await crm.Crm.connect(
        database_url,
        master_key=master_key,
        files={"dir": tmp_path / "files", "max_file_size": 1024, "quota": 2 * len(PDF) + 30},
    )
    try:
        yield c
    finally:
        await c.close()


async def test_files_round_trip_on_leads_and_contacts(files: crm.Crm, tmp_path: Path) -> None:
    lead = await files.leads.create("Ana", email="ana@example.com")
    a = await files.attachments.add(lead_id=lead.id, data=PDF, name="../../contrato.pdf", actor="whatsapp")
    assert isinstance(a, crm.Attachment)
    assert (a.name, a.content_type, a.size, a.lead_id, a.uploaded_by) == (
        "contrato.pdf", "application/pdf", len(PDF), lead.id, "whatsapp"
    )
    assert a.sha256 == hashlib.sha256(PDF).hexdigest()
    assert await files.attachments.read(a.id, lead_id=lead.id) == PDF
    assert await files.attachments.get(a.id, lead_id=lead.id) == a
    note = tmp_path / "nota.txt"
    note.write_text("hola, qué tal\n")
    b = await files.attachments.add(lead_id=lead.id, path=note)
    assert (b.name, b.content_type) == ("nota.txt", "text/plain")
    assert [x.id for x in await files.attachments.list(lead_id=lead.id)] == [a.id, b.id]
    assert await files.attachments.usage() == a.size + b.size
    timeline = [(x.kind, x.description) for x in await files.leads.activities(lead.id)]
    assert timeline == [("attachment", "Attached contrato.pdf"), ("attachment", "Attached nota.txt")]

    contact = await files.contacts.create("Ana")
    with pytest.raises(crm.NotFoundError):
        await files.attachments.get(a.id, contact_id=contact.id)
    await files.attachments.delete(b.id, lead_id=lead.id)
    with pytest.raises(crm.NotFoundError):
        await files.attachments.read(b.id, lead_id=lead.id)

    link = await files.attachments.link(a.id, lead_id=lead.id, expires_in=60)
    assert isinstance(link, crm.SignedLink) and link.url.startswith("/api/files?token=")
    meta, data = await files.open_link(link.url.split("token=", 1)[1])
    assert (meta, data) == (a, PDF)
    with pytest.raises(crm.UnauthorizedError) as e:
        await files.open_link(link.url.split("token=", 1)[1][:-2] + "AA")
    assert e.value.reason == "invalid_link"


async def test_bad_files_are_refused_and_write_nothing(files: crm.Crm, tmp_path: Path) -> None:
    lead = await files.leads.create("Ana", email="ana@example.com")
    elf = b"\x7fELF\x02\x01\x01" + bytes(57)
    with pytest.raises(crm.CrmError) as e:
        await files.attachments.add(lead_id=lead.id, data=elf, name="invoice.pdf")
    assert (e.value.code, e.value.status) == ("unsupported_media_type", 415)
    assert "application/x-executable" in str(e.value)
    with pytest.raises(crm.CrmError) as e:
        await files.attachments.add(lead_id=lead.id, data=b"%PDF-1.7\n" + bytes(1016), name="big.pdf")
    assert (e.value.code, e.value.status) == ("file_too_large", 413)
    with pytest.raises(crm.ValidationError) as v:
        await files.attachments.add(lead_id=lead.id, data=b"", name="empty.pdf")
    assert v.value.errors[0].field == "file"
    with pytest.raises(crm.ValidationError) as v:
        await files.attachments.add(lead_id=lead.id, contact_id=lead.id, data=PDF, name="x.pdf")
    assert v.value.errors[0].field == "lead_id"
    with pytest.raises(crm.ValidationError) as v:
        await files.attachments.add(lead_id=lead.id, path=tmp_path / "missing.pdf")
    assert v.value.errors[0].field == "path"
    with pytest.raises(crm.ValidationError) as v:
        await files.attachments.add(lead_id="not-a-uuid", data=PDF, name="x.pdf")
    assert v.value.errors[0].field == "lead_id"
    other = await files.create_workspace("Other")
    foreign = await other.leads.create("Eve", email="eve@example.com")
    with pytest.raises(crm.NotFoundError):
        await files.attachments.add(lead_id=foreign.id, data=PDF, name="x.pdf")
    # The quota: two files fit, a third does not.
    await files.attachments.add(lead_id=lead.id, data=PDF, name="1.pdf")
    await files.attachments.add(lead_id=lead.id, data=PDF, name="2.pdf")
    with pytest.raises(crm.ConflictError) as c:
        await files.attachments.add(lead_id=lead.id, data=PDF, name="3.pdf")
    assert c.value.code == "storage_quota_exceeded"
    assert len(await files.attachments.list(lead_id=lead.id)) == 2


async def test_without_files_configured_attachments_say_so(client: crm.Crm) -> None:
    lead = await client.leads.create("Ana", email="ana@example.com")
    with pytest.raises(crm.CrmError) as e:
        await client.attachments.add(lead_id=lead.id, data=PDF, name="x.pdf")
    assert e.value.code == "configuration_error"


def test_the_blocking_api(database_url: str, tmp_path: Path) -> None:
    with crm.sync.Crm.connect(database_url, files={"dir": str(tmp_path / "f")}) as c:
        lead = c.leads.create("Ana", email="ana@example.com")
        a = c.attachments.add(lead_id=lead.id, data=PDF, name="a.pdf")
        assert c.attachments.read(a.id, lead_id=lead.id) == PDF
        c.leads.delete(lead.id)
        assert not [p for p in (tmp_path / "f").rglob("*") if p.is_file()], "the bytes went with the lead"
