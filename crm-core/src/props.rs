//! Property tests: every parser that input reaches, fed arbitrary and adversarial
//! text, returns a value or a typed error and never panics (slicing, indexing and
//! arithmetic on user data are where panics hide). Bounded: proptest's default 256
//! cases per property, in the normal test run.

use std::sync::LazyLock;

use proptest::prelude::*;

use crate::leads::cursor::Cursor;
use crate::leads::parse::{self, LeadRules};
use crate::leads::parser::{BuiltinParser, LeadParser};
use crate::leads::{
    AllowedValues, Email, LeadPatch, NewActivity, NewLead, Phone, SortField, SortOrder,
};
use crate::webhooks::signing::{verify_calcom, verify_whatsapp, WebhookSecret};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("a test runtime: {e}"))
});

/// Text that looks like what parsers look for, with the characters that change
/// length when lower-cased (the Kelvin sign, dotted İ, ß) and separators mixed in.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[Kk\u{212A}\u{130}\u{df}İ a-zA-Z0-9@.+:;,()\\-_'$€£ \n\t\u{0}]{0,120}",
        "(name: |my name is |I'm |i am |this is |budget |\\+|00|\u{212A}|@|\\.|k|€|[0-9]{1,12}|[A-Z][a-z]{0,8}| |\n){0,30}",
    ]
}

proptest! {
    #[test]
    fn the_builtin_parser_never_panics(text in texty()) {
        let parsed = RT.block_on(BuiltinParser.parse(&text, &AllowedValues::default()));
        prop_assert!(parsed.is_ok());
    }

    #[test]
    fn emails_and_phones_parse_or_refuse(s in texty(), cc in 0u16..1200) {
        let _ = Email::parse(&s);
        let _ = Phone::parse(&s);
        let _ = Phone::parse_with_default(&s, Some(cc));
    }

    #[test]
    fn lead_input_is_checked_without_panics(
        name in texty(), email in texty(), phone in texty(), tags in prop::collection::vec(texty(), 0..60),
        note in texty(), key in texty(), cc in prop::option::of(0u16..1200),
    ) {
        let rules = LeadRules { default_country_code: cc, ..LeadRules::default() };
        let mut custom = serde_json::Map::new();
        custom.insert(key, serde_json::Value::String(note.clone()));
        let input = NewLead {
            name: name.clone(),
            email: Some(email),
            phone: Some(phone),
            company: Some(note.clone()),
            budget: Some(note.clone()),
            project_type: Some(note.clone()),
            message: Some(note.clone()),
            source: Some(note.clone()),
            status: Some(note.clone()),
            notes: Some(note.clone()),
            tags,
            custom: Some(custom),
            raw_input: Some(note.clone()),
            ai_parsed: false,
            owner_id: None,
        };
        let _ = parse::new_lead(input, &rules);
        // Contacts and organizations: the same text anywhere, never a panic.
        let mut social = std::collections::BTreeMap::new();
        social.insert(note.clone(), note.clone());
        social.insert("x".into(), note.clone());
        let contact = crate::contacts::NewContact {
            first_name: name.clone(),
            last_name: Some(note.clone()),
            emails: vec![note.clone(), name.clone()],
            phones: vec![note.clone()],
            title: Some(note.clone()),
            address: Some(note.clone()),
            social,
            notes: Some(note.clone()),
            ..Default::default()
        };
        let now = chrono::Utc::now();
        let _ = crate::contacts::parse::new_contact(contact, crate::WorkspaceId::DEFAULT, now, &rules);
        let org = crate::contacts::NewOrganization {
            name: name.clone(),
            domain: Some(note.clone()),
            industry: Some(note.clone()),
            ..Default::default()
        };
        let _ = crate::contacts::parse::new_organization(org, crate::WorkspaceId::DEFAULT, now);
        let _ = crate::contacts::parse::split_name(&name);
        let _ = parse::activity(NewActivity { kind: name, description: Some(note) });
    }

    #[test]
    fn json_bodies_deserialize_or_refuse(body in prop_oneof![
        any::<String>(),
        "[\\[\\]{}\",:0-9a-z \\\\u]{0,200}",
    ]) {
        let _ = serde_json::from_str::<NewLead>(&body);
        let _ = serde_json::from_str::<LeadPatch>(&body);
        let _ = serde_json::from_str::<NewActivity>(&body);
        let _ = serde_json::from_str::<crate::auth::NewUser>(&body);
        let _ = serde_json::from_str::<crate::api_keys::NewApiKey>(&body);
        let _ = serde_json::from_str::<crate::webhooks::NewEndpoint>(&body);
        let _ = serde_json::from_str::<crate::webhooks::EndpointPatch>(&body);
        let _ = serde_json::from_str::<crate::notify::NewChannel>(&body);
    }

    #[test]
    fn cursors_decode_or_refuse(s in prop_oneof![any::<String>(), "[A-Za-z0-9_\\-]{0,300}"]) {
        for (sort, order) in [
            (SortField::CreatedAt, SortOrder::Desc),
            (SortField::Name, SortOrder::Asc),
        ] {
            let r = Cursor::decode(&s, sort, order, "f", &[3; 32]);
            prop_assert!(r.is_err(), "a random cursor must not verify");
        }
    }

    #[test]
    fn signature_headers_verify_or_refuse(
        id in texty(), ts in texty(), sigs in texty(), body in any::<Vec<u8>>(),
        now in any::<i64>(), secret in texty(), header in texty(),
    ) {
        let signer = WebhookSecret::generate().signer();
        prop_assert!(signer.verify(&id, &ts, &sigs, &body, now).is_err());
        let _ = verify_whatsapp(&secret, &body, &header);
        let _ = verify_calcom(&secret, &body, &header);
        let _ = WebhookSecret::parse(&secret);
    }

    #[test]
    fn search_queries_parse_or_refuse(q in texty(), tag in texty(), limit in any::<u32>()) {
        let query = crate::leads::LeadQuery {
            q: Some(q),
            tags: vec![tag],
            limit: Some(limit),
            ..Default::default()
        };
        let _ = parse::query(&query);
    }
}
