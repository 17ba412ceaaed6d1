"""Contacts, organizations, converting a lead and owners through Python, on both
backends."""

import pytest

import crm
import crm.sync


async def test_contacts_and_organizations_round_trip(client: crm.Crm) -> None:
    acme = await client.organizations.create("Acme SL", domain="https://www.Acme.example/about")
    assert isinstance(acme, crm.Organization) and acme.domain == "acme.example"
    with pytest.raises(crm.ConflictError) as conflict:
        await client.organizations.create("Acme again", domain="acme.example")
    assert conflict.value.existing_id == acme.id
    ana = await client.contacts.create(
        "Ana",
        last_name="López",
        emails=["Ana@Acme.example"],
        phones=["+34 600 123 456"],
        social={"linkedin": "https://www.linkedin.com/in/ana"},
        organization_id=acme.id,
        tags=["vip"],
    )
    assert isinstance(ana, crm.Contact)
    assert (ana.name, ana.emails, ana.phones) == ("Ana López", ["Ana@acme.example"], ["+34600123456"])
    assert await client.contacts.get(ana.id) == ana
    with pytest.raises(crm.ConflictError) as conflict:
        await client.contacts.create("Other", emails=["ana@ACME.example"])
    assert conflict.value.existing_id == ana.id
    with pytest.raises(crm.ValidationError) as bad:
        await client.contacts.create("Bad", social={"x": "javascript:alert(1)"}, emails="a@x.example")
    assert bad.value.errors[0].field == "emails"
    with pytest.raises(crm.ValidationError) as bad:
        await client.contacts.create("Bad", social={"x": "javascript:alert(1)"})
    assert bad.value.errors[0].field == "social.x"

    ana = await client.contacts.update(ana.id, title="CTO", last_name=None)
    assert (ana.name, ana.title) == ("Ana", "CTO")
    page = await client.contacts.list(q="cto", include_total=True)
    assert isinstance(page, crm.ContactPage) and page.total == 1 and page.items == [ana]
    page = await client.contacts.list(organization_id=acme.id)
    assert [c.id for c in page.items] == [ana.id]
    orgs = await client.organizations.list(q="acme")
    assert isinstance(orgs, crm.OrganizationPage) and orgs.items == [acme]
    with pytest.raises(crm.ValidationError):
        await client.contacts.list(sort="status")
    await client.organizations.delete(acme.id)
    assert (await client.contacts.get(ana.id)).organization_id is None
    await client.contacts.delete(ana.id)
    with pytest.raises(crm.NotFoundError):
        await client.contacts.get(ana.id)


async def test_converting_a_lead_twice_gives_the_same_contact(client: crm.Crm) -> None:
    lead = await client.leads.create("Bo Ruiz García", email="bo@initech.example", company="Initech")
    first = await client.leads.convert(lead.id)
    assert isinstance(first, crm.Converted)
    assert first.contact_created and first.organization_created
    assert (first.contact.first_name, first.contact.last_name) == ("Bo", "Ruiz García")
    assert first.organization is not None and first.organization.domain == "initech.example"
    assert first.lead.contact_id == first.contact.id
    again = await client.leads.convert(lead.id)
    assert (again.contact, again.contact_created) == (first.contact, False)
    detail = await client.leads.get(lead.id)
    assert detail.contact_id == first.contact.id
    assert [a.kind for a in detail.activities] == ["converted"]
    solo = await client.leads.create("Cy", phone="+44 7700 900123")
    plain = await client.leads.convert(solo.id, organization=False)
    assert plain.organization is None and plain.contact.phones == ["+447700900123"]
    other = await client.create_workspace("Other")
    with pytest.raises(crm.NotFoundError):
        await other.leads.convert(lead.id)


async def test_owners_are_users_of_the_workspace(client: crm.Crm) -> None:
    password = "Correct-Horse-9-Battery"
    mine = await client.auth.create_user("ana@example.com", "Ana", password=password)
    other = await client.create_workspace("Other")
    theirs = await other.auth.create_user("eve@example.com", "Eve", password=password)
    lead = await client.leads.create("Owned", email="o@x.example", owner_id=mine.id)
    assert lead.owner_id == mine.id
    await client.leads.create("Free", email="f@x.example")
    assert [l.id for l in (await client.leads.list(owner_id=mine.id)).items] == [lead.id]
    for attempt in (
        client.leads.create("Stolen", email="s@x.example", owner_id=theirs.id),
        client.leads.update(lead.id, owner_id=theirs.id),
        client.contacts.create("Eve", owner_id=theirs.id),
        client.organizations.create("Evil", owner_id=theirs.id),
    ):
        with pytest.raises(crm.ValidationError) as e:
            await attempt
        assert e.value.errors[0].field == "owner_id"
    assert (await client.leads.update(lead.id, owner_id=None)).owner_id is None
    contact = await client.contacts.create("Tess", owner_id=mine.id)
    assert (await client.contacts.list(owner_id=mine.id)).items == [contact]


def test_the_blocking_api_has_the_services(database_url: str) -> None:
    with crm.sync.Crm.connect(database_url) as c:
        org = c.organizations.create("Globex", domain="globex.example")
        contact = c.contacts.create("Hank", organization_id=org.id)
        assert c.contacts.get(contact.id).organization_id == org.id
        lead = c.leads.create("Ida", email="ida@globex.example")
        assert c.leads.convert(lead.id).organization == org
