//! cargo run --example embed
//!
//! The library alone, no HTTP: open the embedded SQLite store
//! (`crm-embed.db` in the current directory, or the path in `CRM_DATABASE_URL`) and
//! walk one lead through its life: capture from a form, a second submission merged
//! into it, a note, status changes, a search, and the events a webhook would carry.

use crm::leads::{LeadPatch, LeadQuery, NewActivity, NewLead};
use crm::Crm;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("CRM_DATABASE_URL").unwrap_or_else(|_| "sqlite://crm-embed.db".into());
    let crm = Crm::connect(&url).await?;
    let ws = crm.create_workspace("Embed example").await?;
    let leads = crm.workspace(ws).leads().with_actor("example");

    let first = leads
        .capture(NewLead {
            name: "Ana López".into(),
            email: Some("ana@Example.com".into()),
            message: Some("We need a new website for our bakery.".into()),
            source: Some("contact_form".into()),
            ..Default::default()
        })
        .await?;
    println!("captured {} (new: {})", first.lead.id, first.created);

    let again = leads
        .capture(NewLead {
            name: "Ana".into(),
            email: Some("ANA@example.com".into()),
            phone: Some("+34 600 123 456".into()),
            company: Some("Panadería López".into()),
            message: Some("Also: online orders?".into()),
            ..Default::default()
        })
        .await?;
    println!(
        "second submission merged (new: {}), phone now {:?}, company {:?}",
        again.created,
        again.lead.phone.as_ref().map(|p| p.as_str()),
        again.lead.company
    );

    let id = first.lead.id;
    leads
        .add_activity(
            id,
            NewActivity {
                kind: "call".into(),
                description: Some("Discovery call, 30 min".into()),
            },
        )
        .await?;
    for status in ["contacted", "qualified", "proposal", "won"] {
        leads
            .update(
                id,
                LeadPatch {
                    status: Some(status.into()),
                    ..Default::default()
                },
            )
            .await?;
    }

    let found = leads
        .list(&LeadQuery {
            q: Some("bakery".into()),
            include_total: true,
            ..Default::default()
        })
        .await?;
    println!("search 'bakery': {} match(es)", found.total.unwrap_or(0));

    let detail = leads.get(id).await?;
    println!("{} is {}; timeline:", detail.lead.name, detail.lead.status);
    for a in &detail.activities {
        let change = match (a.old_status, a.new_status) {
            (Some(o), Some(n)) => format!(" {o} -> {n}"),
            _ => String::new(),
        };
        println!(
            "  {} {}{} {}",
            a.created_at.format("%H:%M:%S"),
            a.kind,
            change,
            a.description.as_deref().unwrap_or("")
        );
    }

    let events = crm.workspace(ws).events(None, 100).await?;
    println!("events in the outbox:");
    for e in &events {
        println!("  {} {}", e.id, e.event_type);
    }

    leads.delete(id).await?;
    println!(
        "deleted; the workspace now holds {} lead(s)",
        leads.list(&LeadQuery::default()).await?.items.len()
    );
    Ok(())
}
