//! The OpenAI parser against a local stand-in that records the exact request.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use crm_core::leads::parser::LeadParser;
use crm_core::leads::AllowedValues;
use crm_core::{Crm, Error};
use crm_integrations::openai::OpenAi;
use receiver::{Receiver, Reply};
use serde_json::{json, Value};

fn completion(content: &str, finish: &str) -> String {
    json!({ "id": "chatcmpl-1", "object": "chat.completion", "choices": [{ "index": 0, "finish_reason": finish, "message": { "role": "assistant", "content": content, "refusal": null } }] }).to_string()
}

fn parser(rx: &Receiver) -> OpenAi {
    OpenAi::new("sk-test").with_base_url(rx.url.replace("/hook", ""))
}

#[tokio::test]
async fn a_strict_schema_request_and_its_answer() {
    let content = json!({ "name": "Ana López", "email": "ana@bakery.es", "phone": "+34600123456", "company": null, "budget": "15k_50k", "project_type": "galaxy", "message": "Online shop", "confidence": 0.92 }).to_string();
    let rx = Receiver::start(
        vec![],
        Reply::Status(200, vec![], completion(&content, "stop")),
    )
    .await;
    let allowed = AllowedValues::default();
    let p = parser(&rx)
        .parse("Ana from the bakery wants a shop", &allowed)
        .await
        .expect("parse");
    assert_eq!(p.fields.name, "Ana López");
    assert_eq!(p.fields.budget.as_deref(), Some("15k_50k"));
    assert_eq!(
        p.fields.project_type, None,
        "a value outside the allowed list is dropped"
    );
    assert_eq!(p.found, ["name", "email", "phone", "budget", "message"]);
    assert!((p.confidence - 0.92).abs() < 1e-6);
    assert_eq!((p.parser.as_str(), p.fallback), ("openai", false));
    assert!((p.field_confidence["email"] - 0.92).abs() < 1e-6);

    let req = &rx.requests()[0];
    assert_eq!(req.path, "/chat/completions");
    assert_eq!(req.headers["authorization"], "Bearer sk-test");
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["messages"][1],
        json!({ "role": "user", "content": "Ana from the bakery wants a shop" })
    );
    let format = &body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"].as_array().expect("required").len(), 8);
    let budgets: Vec<Value> = allowed
        .budgets
        .iter()
        .map(|b| json!(b))
        .chain([Value::Null])
        .collect();
    assert_eq!(schema["properties"]["budget"]["enum"], json!(budgets));
}

#[tokio::test]
async fn refusals_truncation_and_errors_are_typed() {
    let allowed = AllowedValues::default();
    let refusal = json!({ "choices": [{ "finish_reason": "stop", "message": { "role": "assistant", "content": null, "refusal": "I can't help with that." } }] }).to_string();
    for (reply, want) in [
        (Reply::Status(200, vec![], refusal), "refused"),
        (
            Reply::Status(200, vec![], completion("{\"name\":\"An", "length")),
            "cut off",
        ),
        (
            Reply::Status(200, vec![], completion("not json", "stop")),
            "not the expected JSON",
        ),
        (
            Reply::Status(
                500,
                vec![],
                "{\"error\":{\"message\":\"The server had an error\"}}".into(),
            ),
            "500",
        ),
        (
            Reply::Status(
                401,
                vec![],
                "{\"error\":{\"message\":\"Incorrect API key provided\"}}".into(),
            ),
            "401",
        ),
    ] {
        let rx = Receiver::start(vec![], reply).await;
        match parser(&rx).parse("text", &allowed).await {
            Err(Error::Integration(m)) => assert!(m.contains(want), "{m} should mention {want}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    assert!(!format!("{:?}", OpenAi::new("sk-secret")).contains("sk-secret"));
}

#[tokio::test]
async fn auto_save_creates_an_ai_parsed_lead() {
    let content = json!({ "name": null, "email": "jo@example.com", "phone": null, "company": "Park & Co", "budget": null, "project_type": "website", "message": "A new site", "confidence": 0.7 }).to_string();
    let rx = Receiver::start(
        vec![],
        Reply::Status(200, vec![], completion(&content, "stop")),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let crm = Crm::builder()
        .database_url(format!("sqlite://{}", dir.path().join("ai.db").display()))
        .lead_parser(parser(&rx))
        .connect()
        .await
        .expect("connect");
    let out = crm
        .leads()
        .parse("Jo wants a new site: jo@example.com", true)
        .await
        .expect("parse");
    let lead = out.lead.expect("saved");
    assert_eq!(lead.name, "jo", "named after the email");
    assert!(lead.ai_parsed);
    assert_eq!(
        lead.raw_input.as_deref(),
        Some("Jo wants a new site: jo@example.com")
    );
    assert_eq!(lead.source.as_deref(), Some("ai"));
    assert_eq!(lead.project_type.as_deref(), Some("website"));
    assert_eq!(out.parsed.parser, "openai");
    assert_eq!(
        serde_json::to_value(&out.parsed).expect("json")["fields"]["company"],
        "Park & Co"
    );
    let nothing = crm.leads().parse("", true).await.expect_err("must fail");
    assert_eq!(nothing.field_errors()[0].field, "text");
    let long = "x".repeat(5001);
    assert!(matches!(
        crm.leads().parse(&long, false).await,
        Err(Error::Validation { .. })
    ));
}

#[tokio::test]
async fn a_failing_provider_falls_back_to_the_builtin_parser() {
    // The provider is down (500), then refuses: the builtin parser reads the text, the
    // answer says so, and auto_save still creates the lead.
    let refusal = json!({ "choices": [{ "finish_reason": "stop", "message": { "role": "assistant", "content": null, "refusal": "No." } }] }).to_string();
    let rx = Receiver::start(
        vec![Reply::Status(
            500,
            vec![],
            "{\"error\":{\"message\":\"down\"}}".into(),
        )],
        Reply::Status(200, vec![], refusal),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let crm = Crm::builder()
        .database_url(format!("sqlite://{}", dir.path().join("ai.db").display()))
        .lead_parser(parser(&rx))
        .connect()
        .await
        .expect("connect");
    let text = "Name: Ana López\nana@bakery.es, +34 600 123 456";
    let out = crm.leads().parse(text, false).await.expect("falls back");
    assert_eq!(
        (out.parsed.parser.as_str(), out.parsed.fallback),
        ("builtin", true)
    );
    assert_eq!(out.parsed.fields.email.as_deref(), Some("ana@bakery.es"));
    assert_eq!(out.parsed.fields.phone.as_deref(), Some("+34600123456"));
    assert!(out.lead.is_none());
    let saved = crm.leads().parse(text, true).await.expect("falls back");
    assert!(saved.parsed.fallback);
    let lead = saved.lead.expect("saved");
    assert_eq!(lead.name, "Ana López");
    assert_eq!(
        lead.email.as_ref().map(|e| e.as_str()),
        Some("ana@bakery.es")
    );
    assert_eq!(
        lead.message.as_deref(),
        Some(text),
        "the text is the message"
    );
    assert_eq!(rx.requests().len(), 2, "the provider was asked each time");
}
