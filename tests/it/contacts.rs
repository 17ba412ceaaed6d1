//! Contacts, organizations, converting a lead and owners: every test runs on SQLite
//! and on Postgres.

use std::collections::BTreeMap;

use crate::common::TestDb;
use crm::auth::{Actor, NewUser};
use crm::contacts::{
    ContactPatch, ContactQuery, ConvertInput, NewContact, NewOrganization, OrganizationPatch,
    OrganizationQuery,
};
use crm::events::EventType;
use crm::leads::{LeadPatch, LeadQuery, NewLead, SortField, SortOrder};
use crm::{Crm, Error, UserId, WorkspaceId};

conformance!(
    contacts_are_created_listed_searched_and_paged,
    organizations_have_unique_domains_and_keep_their_contacts,
    converting_reuses_what_exists_and_never_duplicates,
    owners_and_links_stay_inside_the_workspace,
    concurrent_writers_take_turns_without_database_errors,
);

// The tenant tests again, behind row-level security.
with_rls!(owners_and_links_stay_inside_the_workspace,);

async fn user(crm: &Crm, ws: WorkspaceId, email: &str) -> UserId {
    crm.workspace(ws)
        .auth()
        .create_user(
            NewUser {
                email: email.into(),
                display_name: "Owner".into(),
                role: None,
                password: "Correct-Horse-9-Battery".into(),
            },
            Actor::App(None),
        )
        .await
        .expect("user")
        .id
}

async fn event_types(crm: &Crm, ws: WorkspaceId) -> Vec<EventType> {
    crm.workspace(ws)
        .events(None, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn field(e: &Error) -> String {
    e.field_errors()
        .first()
        .map(|f| f.field.clone())
        .unwrap_or_else(|| format!("not a validation error: {e:?}"))
}

async fn contacts_are_created_listed_searched_and_paged(db: &TestDb) {
    let crm = db.crm().await;
    let contacts = crm.workspace(WorkspaceId::DEFAULT).contacts();
    let mut social = BTreeMap::new();
    social.insert("linkedin".into(), "https://www.linkedin.com/in/ana".into());
    let ana = contacts
        .create(NewContact {
            first_name: " Ana ".into(),
            last_name: Some("López García".into()),
            emails: vec!["Ana@Acme.example".into(), "ana@ACME.example".into()],
            phones: vec!["+34 600 123 456".into()],
            title: Some("CTO".into()),
            social,
            tags: vec!["vip".into()],
            ..NewContact::default()
        })
        .await
        .expect("create");
    assert_eq!(ana.name, "Ana López García");
    assert_eq!(ana.emails.len(), 1, "the same mailbox twice is one");
    assert_eq!(ana.phones[0].as_str(), "+34600123456");
    assert_eq!(contacts.get(ana.id).await.expect("get"), ana);

    // Each email and phone belongs to one contact: the clash names the holder.
    let err = contacts
        .create(NewContact {
            first_name: "Other".into(),
            emails: vec!["ANA@acme.example".into()],
            ..NewContact::default()
        })
        .await
        .expect_err("email taken");
    assert!(
        matches!(err, Error::Conflict { existing_id: Some(id), field: Some("emails"), .. } if id == ana.id.0),
        "{err:?}"
    );
    let err = contacts
        .create(NewContact {
            first_name: "Other".into(),
            phones: vec!["0034600123456".into()],
            ..NewContact::default()
        })
        .await
        .expect_err("phone taken");
    assert!(
        matches!(
            err,
            Error::Conflict {
                field: Some("phones"),
                ..
            }
        ),
        "{err:?}"
    );

    // Replacing the emails frees the old one for another contact.
    let ana = contacts
        .update(
            ana.id,
            ContactPatch {
                emails: Some(vec!["ana@new.example".into()]),
                ..ContactPatch::default()
            },
        )
        .await
        .expect("update");
    let bo = contacts
        .create(NewContact {
            first_name: "Bo".into(),
            emails: vec!["ana@acme.example".into()],
            notes: Some("met at the fair".into()),
            ..NewContact::default()
        })
        .await
        .expect("the freed email");
    // A patch that changes nothing writes nothing.
    let before = event_types(&crm, WorkspaceId::DEFAULT).await.len();
    contacts
        .update(
            bo.id,
            ContactPatch {
                first_name: Some("Bo".into()),
                ..ContactPatch::default()
            },
        )
        .await
        .expect("no-op");
    assert_eq!(event_types(&crm, WorkspaceId::DEFAULT).await.len(), before);

    // Search: words of name, emails, title and notes, by prefix.
    let search = |q: &str| ContactQuery {
        q: Some(q.into()),
        ..ContactQuery::default()
    };
    let ids = |p: crm::contacts::ContactPage| p.items.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(contacts.list(&search("garc")).await.expect("q")),
        [ana.id]
    );
    assert_eq!(
        ids(contacts.list(&search("new.example")).await.expect("q")),
        [ana.id]
    );
    assert_eq!(
        ids(contacts.list(&search("fair")).await.expect("q")),
        [bo.id]
    );
    assert_eq!(
        ids(contacts.list(&search("cto")).await.expect("q")),
        [ana.id]
    );
    let tagged = ContactQuery {
        tags: vec!["vip".into()],
        ..ContactQuery::default()
    };
    assert_eq!(ids(contacts.list(&tagged).await.expect("tags")), [ana.id]);

    // Pages by name: every contact once, in byte order, the cursor bound to its sort.
    for i in 0..7 {
        contacts
            .create(NewContact {
                first_name: format!("Zed{i}"),
                ..NewContact::default()
            })
            .await
            .expect("create");
    }
    let mut q = ContactQuery {
        sort: SortField::Name,
        order: SortOrder::Asc,
        limit: Some(4),
        include_total: true,
        ..ContactQuery::default()
    };
    let mut names = Vec::new();
    loop {
        let page = contacts.list(&q).await.expect("page");
        assert_eq!(page.total, Some(9));
        names.extend(page.items.iter().map(|c| c.name.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 9);
    let first = contacts
        .list(&ContactQuery {
            limit: Some(1),
            ..ContactQuery::default()
        })
        .await
        .expect("page");
    let err = contacts
        .list(&ContactQuery {
            cursor: first.next_cursor,
            sort: SortField::Name,
            ..ContactQuery::default()
        })
        .await
        .expect_err("a cursor of another sort");
    assert_eq!(field(&err), "cursor");
    let err = contacts
        .list(&ContactQuery {
            sort: SortField::Status,
            ..ContactQuery::default()
        })
        .await
        .expect_err("contacts have no status");
    assert_eq!(field(&err), "sort");

    // Bad input: every bad field named, nothing written.
    let mut bad_social = BTreeMap::new();
    bad_social.insert("x".into(), "http://x.example/ana".into());
    let count = db.count("crm_contacts").await;
    let err = contacts
        .create(NewContact {
            first_name: "Ana".into(),
            emails: vec!["not-an-email".into()],
            social: bad_social,
            custom: Some(serde_json::from_str(r#"{"k":"\u0000"}"#).expect("json")),
            ..NewContact::default()
        })
        .await
        .expect_err("bad");
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(fields, ["emails[0]", "social.x", "custom"]);
    assert_eq!(db.count("crm_contacts").await, count);

    contacts.delete(bo.id).await.expect("delete");
    assert!(matches!(
        contacts.get(bo.id).await,
        Err(Error::NotFound { entity: "contact" })
    ));
    // Its keys went with it.
    contacts
        .create(NewContact {
            first_name: "Cy".into(),
            emails: vec!["ana@acme.example".into()],
            ..NewContact::default()
        })
        .await
        .expect("the deleted contact's email is free");
    let types = event_types(&crm, WorkspaceId::DEFAULT).await;
    for t in [
        EventType::ContactCreated,
        EventType::ContactUpdated,
        EventType::ContactDeleted,
    ] {
        assert!(types.contains(&t), "{t:?} in {types:?}");
    }
}

async fn organizations_have_unique_domains_and_keep_their_contacts(db: &TestDb) {
    let crm = db.crm().await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    let orgs = ws.organizations();
    let acme = orgs
        .create(NewOrganization {
            name: "Acme SL".into(),
            domain: Some("https://www.ACME.example/about".into()),
            industry: Some("software".into()),
            size: Some("11-50".into()),
            ..NewOrganization::default()
        })
        .await
        .expect("create");
    assert_eq!(acme.domain.as_deref(), Some("acme.example"));
    let err = orgs
        .create(NewOrganization {
            name: "Acme again".into(),
            domain: Some("acme.example".into()),
            ..NewOrganization::default()
        })
        .await
        .expect_err("domain taken");
    assert!(
        matches!(err, Error::Conflict { existing_id: Some(id), field: Some("domain"), .. } if id == acme.id.0),
        "{err:?}"
    );
    let err = orgs
        .create(NewOrganization {
            name: "Bad".into(),
            domain: Some("not a domain".into()),
            ..NewOrganization::default()
        })
        .await
        .expect_err("bad domain");
    assert_eq!(field(&err), "domain");
    let globex = orgs
        .create(NewOrganization {
            name: "Globex".into(),
            ..NewOrganization::default()
        })
        .await
        .expect("create");
    let err = orgs
        .update(
            globex.id,
            OrganizationPatch {
                domain: Some(Some("acme.example".into())),
                ..OrganizationPatch::default()
            },
        )
        .await
        .expect_err("domain taken");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let globex = orgs
        .update(
            globex.id,
            OrganizationPatch {
                domain: Some(Some("globex.example".into())),
                ..OrganizationPatch::default()
            },
        )
        .await
        .expect("update");
    let page = orgs
        .list(&OrganizationQuery {
            q: Some("glob".into()),
            ..OrganizationQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(page.items, std::slice::from_ref(&globex));
    let page = orgs
        .list(&OrganizationQuery {
            q: Some("software".into()),
            ..OrganizationQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(page.items.len(), 1);

    // Many contacts to one organization; deleting it keeps them, unlinked.
    let contacts = ws.contacts();
    let mut linked = Vec::new();
    for name in ["Ana", "Bo"] {
        linked.push(
            contacts
                .create(NewContact {
                    first_name: name.into(),
                    organization_id: Some(acme.id),
                    ..NewContact::default()
                })
                .await
                .expect("contact"),
        );
    }
    let of_acme = contacts
        .list(&ContactQuery {
            organization_id: Some(acme.id),
            ..ContactQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(of_acme.items.len(), 2);
    orgs.delete(acme.id).await.expect("delete");
    for c in &linked {
        assert_eq!(
            contacts.get(c.id).await.expect("kept").organization_id,
            None
        );
    }
    let types = event_types(&crm, WorkspaceId::DEFAULT).await;
    for t in [
        EventType::OrganizationCreated,
        EventType::OrganizationUpdated,
        EventType::OrganizationDeleted,
    ] {
        assert!(types.contains(&t), "{t:?} in {types:?}");
    }
}

async fn converting_reuses_what_exists_and_never_duplicates(db: &TestDb) {
    let crm = db.crm().await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    let leads = ws.leads();
    let lead =
        |name: &str, email: Option<&str>, phone: Option<&str>, company: Option<&str>| NewLead {
            name: name.into(),
            email: email.map(Into::into),
            phone: phone.map(Into::into),
            company: company.map(Into::into),
            notes: Some("wants an app".into()),
            tags: vec!["hot".into()],
            ..NewLead::default()
        };
    let ana = leads
        .create(lead(
            "Ana López García",
            Some("ana@acme.example"),
            None,
            Some("Acme SL"),
        ))
        .await
        .expect("lead");
    let converted = leads
        .convert(ana.id, ConvertInput::default())
        .await
        .expect("convert");
    assert!(converted.contact_created && converted.organization_created);
    let contact = converted.contact.clone();
    assert_eq!(
        (contact.first_name.as_str(), contact.last_name.as_deref()),
        ("Ana", Some("López García"))
    );
    assert_eq!(contact.emails[0].as_str(), "ana@acme.example");
    assert_eq!(contact.tags, ["hot"]);
    assert_eq!(contact.notes.as_deref(), Some("wants an app"));
    let org = converted.organization.clone().expect("organization");
    assert_eq!(
        (org.name.as_str(), org.domain.as_deref()),
        ("Acme SL", Some("acme.example"))
    );
    assert_eq!(contact.organization_id, Some(org.id));
    assert_eq!(converted.lead.contact_id, Some(contact.id));
    let detail = leads.get(ana.id).await.expect("lead");
    assert_eq!(detail.lead.contact_id, Some(contact.id));
    let entries: Vec<_> = detail.activities.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(entries, ["converted"]);

    // Converting twice: the same contact, nothing new written.
    let before = (
        event_types(&crm, WorkspaceId::DEFAULT).await.len(),
        db.count("crm_contacts").await,
        db.count("crm_organizations").await,
    );
    let again = leads
        .convert(ana.id, ConvertInput::default())
        .await
        .expect("again");
    assert!(!again.contact_created && !again.organization_created);
    assert_eq!(again.contact, contact);
    assert_eq!(again.organization, Some(org.clone()));
    let after = (
        event_types(&crm, WorkspaceId::DEFAULT).await.len(),
        db.count("crm_contacts").await,
        db.count("crm_organizations").await,
    );
    assert_eq!(before, after);

    // A colleague: a new contact, the organization found by the mail domain.
    let bo = leads
        .create(lead("Bo", Some("bo@ACME.example"), None, None))
        .await
        .expect("lead");
    let c = leads
        .convert(bo.id, ConvertInput::default())
        .await
        .expect("convert");
    assert!(c.contact_created && !c.organization_created);
    assert_eq!(c.contact.organization_id, Some(org.id));
    assert_eq!(c.contact.last_name, None);
    // From a free-mail address: found by the company's name, folded.
    let cy = leads
        .create(lead("Cy", Some("cy@gmail.com"), None, Some("  ACME   sl ")))
        .await
        .expect("lead");
    let c = leads
        .convert(cy.id, ConvertInput::default())
        .await
        .expect("convert");
    assert_eq!(c.organization.map(|o| o.id), Some(org.id));
    // Without a company or a company mailbox: no organization.
    let di = leads
        .create(lead("Di", Some("di@gmail.com"), None, None))
        .await
        .expect("lead");
    let c = leads
        .convert(di.id, ConvertInput::default())
        .await
        .expect("convert");
    assert!(c.organization.is_none() && !c.organization_created);
    // `organization: false`: the person only.
    let ed = leads
        .create(lead(
            "Ed",
            Some("ed@initech.example"),
            None,
            Some("Initech"),
        ))
        .await
        .expect("lead");
    let c = leads
        .convert(
            ed.id,
            ConvertInput {
                organization: Some(false),
            },
        )
        .await
        .expect("convert");
    assert!(c.organization.is_none());

    // A contact that already has the lead's phone is reused, not duplicated.
    let fay = ws
        .contacts()
        .create(NewContact {
            first_name: "Fay".into(),
            phones: vec!["+44 7700 900123".into()],
            ..NewContact::default()
        })
        .await
        .expect("contact");
    let fay_lead = leads
        .create(lead("Fay Smith", None, Some("+44 7700 900123"), None))
        .await
        .expect("lead");
    let contacts_before = db.count("crm_contacts").await;
    let c = leads
        .convert(fay_lead.id, ConvertInput::default())
        .await
        .expect("convert");
    assert!(!c.contact_created);
    assert_eq!(c.contact.id, fay.id);
    assert_eq!(db.count("crm_contacts").await, contacts_before);

    let types = event_types(&crm, WorkspaceId::DEFAULT).await;
    assert!(types.contains(&EventType::LeadConverted));
    let converted_events = types
        .iter()
        .filter(|t| **t == EventType::LeadConverted)
        .count();
    assert_eq!(
        converted_events, 6,
        "one per conversion that wrote: {types:?}"
    );

    // An archived lead is refused; another workspace's lead is not found.
    let gil = leads
        .create(lead("Gil", Some("gil@x.example"), None, None))
        .await
        .expect("lead");
    leads.archive(gil.id).await.expect("archive");
    let err = leads
        .convert(gil.id, ConvertInput::default())
        .await
        .expect_err("archived");
    assert!(
        matches!(
            err,
            Error::InvalidState {
                code: "lead_archived",
                ..
            }
        ),
        "{err:?}"
    );
    let other = crm.create_workspace("Other").await.expect("workspace");
    let err = crm
        .workspace(other)
        .leads()
        .convert(ana.id, ConvertInput::default())
        .await
        .expect_err("other workspace");
    assert!(matches!(err, Error::NotFound { entity: "lead" }), "{err:?}");

    // Deleting the contact keeps the lead and its timeline, unlinked.
    ws.contacts().delete(contact.id).await.expect("delete");
    let detail = leads.get(ana.id).await.expect("lead");
    assert_eq!(detail.lead.contact_id, None);
    assert_eq!(detail.activities.len(), 1);
}

async fn owners_and_links_stay_inside_the_workspace(db: &TestDb) {
    let crm = db.crm().await;
    let other = crm.create_workspace("Other").await.expect("workspace");
    let mine = user(&crm, WorkspaceId::DEFAULT, "ana@example.com").await;
    let theirs = user(&crm, other, "eve@example.com").await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);

    // Leads: an owner of this workspace only, on create and on update; filterable.
    let lead = ws
        .leads()
        .create(NewLead {
            name: "Owned".into(),
            email: Some("owned@x.example".into()),
            owner_id: Some(mine),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    assert_eq!(lead.owner_id, Some(mine));
    ws.leads()
        .create(NewLead {
            name: "Free".into(),
            email: Some("free@x.example".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let count = db.count("crm_leads").await;
    let err = ws
        .leads()
        .create(NewLead {
            name: "Stolen".into(),
            email: Some("s@x.example".into()),
            owner_id: Some(theirs),
            ..NewLead::default()
        })
        .await
        .expect_err("another workspace's user");
    assert_eq!(field(&err), "owner_id");
    assert_eq!(db.count("crm_leads").await, count);
    let err = ws
        .leads()
        .update(
            lead.id,
            LeadPatch {
                owner_id: Some(Some(theirs)),
                ..LeadPatch::default()
            },
        )
        .await
        .expect_err("another workspace's user");
    assert_eq!(field(&err), "owner_id");
    let page = ws
        .leads()
        .list(&LeadQuery {
            owner_id: Some(mine),
            ..LeadQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.items.iter().map(|l| l.id).collect::<Vec<_>>(),
        [lead.id]
    );
    let cleared = ws
        .leads()
        .update(
            lead.id,
            LeadPatch {
                owner_id: Some(None),
                ..LeadPatch::default()
            },
        )
        .await
        .expect("clear");
    assert_eq!(cleared.owner_id, None);

    // Contacts and organizations: the same rule; links only within the workspace.
    let err = ws
        .contacts()
        .create(NewContact {
            first_name: "Eve".into(),
            owner_id: Some(theirs),
            ..NewContact::default()
        })
        .await
        .expect_err("another workspace's user");
    assert_eq!(field(&err), "owner_id");
    let err = ws
        .organizations()
        .create(NewOrganization {
            name: "Evil".into(),
            owner_id: Some(theirs),
            ..NewOrganization::default()
        })
        .await
        .expect_err("another workspace's user");
    assert_eq!(field(&err), "owner_id");
    let their_org = crm
        .workspace(other)
        .organizations()
        .create(NewOrganization {
            name: "Theirs".into(),
            ..NewOrganization::default()
        })
        .await
        .expect("org");
    let their_contact = crm
        .workspace(other)
        .contacts()
        .create(NewContact {
            first_name: "Theirs".into(),
            emails: vec!["t@x.example".into()],
            ..NewContact::default()
        })
        .await
        .expect("contact");
    let err = ws
        .contacts()
        .create(NewContact {
            first_name: "Eve".into(),
            organization_id: Some(their_org.id),
            ..NewContact::default()
        })
        .await
        .expect_err("another workspace's organization");
    assert_eq!(field(&err), "organization_id");
    assert_eq!(db.count("crm_contacts").await, 1);
    // The same email in another workspace is another person.
    let mine_contact = ws
        .contacts()
        .create(NewContact {
            first_name: "Tess".into(),
            emails: vec!["t@x.example".into()],
            owner_id: Some(mine),
            ..NewContact::default()
        })
        .await
        .expect("contact");
    let err = ws
        .contacts()
        .update(
            mine_contact.id,
            ContactPatch {
                owner_id: Some(Some(theirs)),
                ..ContactPatch::default()
            },
        )
        .await
        .expect_err("another workspace's user");
    assert_eq!(field(&err), "owner_id");
    // Another workspace's contact and organization are not found, for any verb.
    let c = ws.contacts();
    assert!(matches!(
        c.get(their_contact.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        c.update(their_contact.id, ContactPatch::default()).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        c.delete(their_contact.id).await,
        Err(Error::NotFound { .. })
    ));
    let o = ws.organizations();
    assert!(matches!(
        o.get(their_org.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        o.update(their_org.id, OrganizationPatch::default()).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        o.delete(their_org.id).await,
        Err(Error::NotFound { .. })
    ));
    let page = c
        .list(&ContactQuery {
            owner_id: Some(mine),
            ..ContactQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items, [mine_contact]);
    // A converted lead's contact gets the lead's owner.
    let owned = ws
        .leads()
        .update(
            lead.id,
            LeadPatch {
                owner_id: Some(Some(mine)),
                ..LeadPatch::default()
            },
        )
        .await
        .expect("owner");
    let converted = ws
        .leads()
        .convert(owned.id, ConvertInput::default())
        .await
        .expect("convert");
    assert_eq!(converted.contact.owner_id, Some(mine));
}

/// Two writers giving the same emails in opposite orders, and two conversions of
/// one company's people at once: one wins, the other gets a `Conflict` naming the
/// winner (or, for conversions, the same organization), never a database error
/// (a deadlock on Postgres) and never a duplicate.
async fn concurrent_writers_take_turns_without_database_errors(db: &TestDb) {
    let crm = db.crm().await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    for round in 0..10 {
        let (a, b) = (format!("a{round}@x.example"), format!("b{round}@x.example"));
        let create = |emails: Vec<String>| {
            let contacts = ws.contacts();
            tokio::spawn(async move {
                contacts
                    .create(NewContact {
                        first_name: "Racer".into(),
                        emails,
                        ..NewContact::default()
                    })
                    .await
            })
        };
        let one = create(vec![a.clone(), b.clone()]);
        let two = create(vec![b, a]);
        let results = [one.await.expect("task"), two.await.expect("task")];
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        let lost = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("a loser");
        assert!(
            matches!(lost, Error::Conflict { existing_id: Some(id), .. } if *id == won[0].id.0),
            "{lost:?}"
        );
    }
    let mut leads = Vec::new();
    for i in 0..4 {
        let lead = ws
            .leads()
            .create(NewLead {
                name: format!("Person {i}"),
                email: Some(format!("p{i}@globex.example")),
                company: Some("Globex".into()),
                ..NewLead::default()
            })
            .await
            .expect("lead");
        leads.push(lead);
    }
    let converts = leads.iter().map(|l| {
        let leads = ws.leads();
        let id = l.id;
        tokio::spawn(async move { leads.convert(id, ConvertInput::default()).await })
    });
    let mut orgs = Vec::new();
    for c in converts {
        let c = c.await.expect("task").expect("convert");
        orgs.push(c.organization.expect("organization").id);
    }
    orgs.dedup();
    assert_eq!(orgs.len(), 1, "one organization for the company");
    assert_eq!(db.count("crm_organizations").await, 1);
}
