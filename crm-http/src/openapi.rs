//! The OpenAPI 3.1 document. Operations come from the handlers (`#[utoipa::path]`),
//! schemas from the types; what depends on the route family — the security scheme
//! and the error responses — is added by [`mark`] where `routes::all` puts a family
//! behind its guard, so the document and the guards cannot disagree.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crm_core::leads::{Archived, SortField, SortOrder};

use crate::problem::{Problem, PROBLEM_JSON};
use utoipa_axum::router::OpenApiRouter;

use crate::{AppState, Config};
use crm_core::Crm;

pub(crate) fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("crm")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Leads, auth, API keys, webhooks and notifications. Errors are RFC 9457 \
                     problem details (application/problem+json).",
                ))
                .build(),
        )
        .build()
}

/// Which guard a family of routes is behind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// No guard (health, readiness).
    Open,
    /// `anonymous_ip` (the contact form, the public auth routes).
    Public,
    /// Provider signatures.
    Inbound,
    /// API keys.
    Api,
    /// Session cookies.
    Session,
}

/// Adds the family's security requirement and error responses to every operation of `r`.
pub(crate) fn mark(mut r: OpenApiRouter<AppState>, fam: Family) -> OpenApiRouter<AppState> {
    for_each_operation(r.get_openapi_mut(), |op, path, method| {
        finish_operation(op, path, method, fam)
    });
    r
}

/// Prefixes every operation id of `r` (for routes served twice).
pub(crate) fn prefix_ids(mut r: OpenApiRouter<AppState>, prefix: &str) -> OpenApiRouter<AppState> {
    for_each_operation(r.get_openapi_mut(), |op, _, _| {
        if let Some(id) = &op.operation_id {
            op.operation_id = Some(format!("{prefix}{id}"));
        }
    });
    r
}

fn for_each_operation(doc: &mut OpenApi, mut f: impl FnMut(&mut Operation, &str, &str)) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
            ("put", &mut item.put),
        ] {
            if let Some(op) = op.as_mut() {
                f(op, path, method);
            }
        }
    }
}

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        Problem::name(),
                    ))))
                    .build(),
            )
            .build(),
    )
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some(description))
        .build()
}

/// Every response of a rate-limited family carries the budget; a 429 also says when
/// to come back.
fn rate_limit_headers(op: &mut Operation, fam: Family) {
    for (code, resp) in op.responses.responses.iter_mut() {
        // A key or a session is checked before the limiter runs: their 401s carry no
        // budget.
        if code == "401" && matches!(fam, Family::Api | Family::Session) {
            continue;
        }
        if let RefOr::T(resp) = resp {
            for (name, what) in [
                ("X-RateLimit-Limit", "The policy's limit"),
                ("X-RateLimit-Remaining", "Requests left in the window"),
                (
                    "X-RateLimit-Reset",
                    "Unix time (seconds) when the full budget is back",
                ),
            ] {
                resp.headers.insert(name.into(), integer_header(what));
            }
            if code == "429" {
                resp.headers.insert(
                    "Retry-After".into(),
                    integer_header("Seconds to wait before trying again"),
                );
            }
        }
    }
}

fn finish_operation(op: &mut Operation, path: &str, method: &str, fam: Family) {
    let r = &mut op.responses.responses;
    let mut add = |code: &str, what: &str| {
        r.entry(code.to_owned()).or_insert_with(|| problem(what));
    };
    add("500", "Internal error (no detail)");
    if fam == Family::Open {
        return;
    }
    add("429", "Rate limited (see Retry-After and X-RateLimit-*)");
    add(
        "400",
        "Malformed request: a bad path or query parameter, or bad JSON",
    );
    if path.contains('{') {
        add("404", "Not found");
    }
    if op.request_body.is_some() || fam == Family::Inbound {
        add(
            "408",
            "The body did not arrive within the server's body timeout (`crm_http::serve`)",
        );
        add("413", "Body too large");
        add("415", "Unsupported Content-Type");
        add(
            "422",
            "Invalid input: `errors` names each field (`body` when it is JSON but not one object)",
        );
    }
    if op.parameters.is_some() {
        add("422", "Invalid input: `errors` names each field");
    }
    let mutation = matches!(method, "post" | "put" | "patch" | "delete");
    if mutation && matches!(fam, Family::Api | Family::Session) {
        let scope = if fam == Family::Api {
            "the API key"
        } else {
            "the signed-in user"
        };
        for name in ["Idempotency-Key", "X-Idempotency-Key"] {
            let what = if name == "Idempotency-Key" {
                format!(
                    "Makes the request safe to retry: the first response is stored for 24 h \
                     and replayed (with `Idempotent-Replayed: true`) for the same method, \
                     path and body; another request with the same key is 422 \
                     `idempotency_key_reused`, one while the first still runs 409 \
                     `idempotency_key_in_use`. Scoped per {scope}. A stored response never \
                     holds a secret: a replay of a request that made one answers `secret: null`."
                )
            } else {
                "An alias of `Idempotency-Key` (used when that header is absent).".to_owned()
            };
            let p = ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .description(Some(what))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[\\x21-\\x7e]+$")),
                ))
                .build();
            op.parameters.get_or_insert_with(Vec::new).push(p);
        }
    }
    match fam {
        Family::Api => {
            add(
                "401",
                "Missing, malformed, unknown, revoked or expired API key",
            );
            add("403", "The key lacks the scope");
            if mutation {
                add(
                    "409",
                    "Conflict, a state that allows no change (`code`: `key_revoked`, \
                     `key_rotated`, `quota_exceeded`, `confirmation_required`), or a request \
                     with this Idempotency-Key still runs",
                );
                add(
                    "422",
                    "Invalid input, or the Idempotency-Key was used for another request",
                );
            } else {
                add("409", "Conflict with an existing lead");
            }
            op.security = Some(vec![SecurityRequirement::new(
                "api_key",
                Vec::<String>::new(),
            )]);
        }
        Family::Session => {
            add("401", "Not signed in, or the session expired");
            add("403", "Role not allowed, or the CSRF check failed");
            add(
                "409",
                "Conflict with an existing entity, a state that allows no change \
                 (`code`: `key_revoked`, `key_rotated`, `quota_exceeded`, \
                 `confirmation_required`), or a request with this Idempotency-Key still runs",
            );
            if mutation {
                add(
                    "422",
                    "Invalid input, or the Idempotency-Key was used for another request",
                );
            }
            op.security = Some(vec![SecurityRequirement::new(
                "session",
                Vec::<String>::new(),
            )]);
        }
        Family::Public => {
            add("401", "Invalid credentials or token");
            add("403", "The CSRF check failed");
            add("409", "Conflict with an existing entity");
            add(
                "503",
                "The server is not configured for this (e.g. no mailer)",
            );
        }
        Family::Inbound => {
            add("401", "The signature or token did not verify");
            add("503", "This inbound source is not configured");
        }
        Family::Open => {}
    }
    rate_limit_headers(op, fam);
}

/// Restricts property `field` of component `schema` to `values` (and `null` where
/// the property is nullable).
fn set_enum(
    schemas: &mut std::collections::BTreeMap<String, RefOr<Schema>>,
    schema: &str,
    field: &str,
    values: Vec<String>,
) {
    let Some(RefOr::T(Schema::Object(obj))) = schemas.get_mut(schema) else {
        return;
    };
    let Some(RefOr::T(Schema::Object(prop))) = obj.properties.get_mut(field) else {
        return;
    };
    let nullable = matches!(&prop.schema_type, utoipa::openapi::schema::SchemaType::Array(t) if t.contains(&Type::Null));
    let mut all: Vec<serde_json::Value> = values.into_iter().map(serde_json::Value::from).collect();
    if nullable {
        all.push(serde_json::Value::Null);
    }
    prop.enum_values = Some(all);
}

/// Adds the security schemes and the schemas the operations refer to by name.
pub(crate) fn finish(mut doc: OpenApi, cfg: &Config, crm: &Crm) -> OpenApi {
    let components = doc.components.get_or_insert_with(Components::new);
    // Values that depend on how the `Crm` was built: the allowed budgets, project
    // types and sources, and the kinds of the registered notification plugins.
    let allowed = crm.allowed_values();
    for schema in ["NewLead", "LeadPatch", "ContactForm"] {
        for (field, values) in [
            ("budget", &allowed.budgets),
            ("project_type", &allowed.project_types),
            ("source", &allowed.sources),
        ] {
            set_enum(&mut components.schemas, schema, field, values.clone());
        }
    }
    if crm.default_country_code().is_some() {
        // National numbers are taken too: the default country code is added.
        for schema in ["NewLead", "ContactForm"] {
            if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(schema) {
                if let Some(RefOr::T(Schema::Object(phone))) = obj.properties.get_mut("phone") {
                    phone.pattern = Some(r"^\s*$|^\s*(\+|00)?[0-9 ()./-]+$".into());
                }
            }
        }
    }
    let kinds = crm
        .notifier_kinds()
        .into_iter()
        .map(str::to_owned)
        .collect();
    set_enum(&mut components.schemas, "NewChannel", "kind", kinds);
    let mut schemas = vec![(Problem::name().into_owned(), Problem::schema())];
    Problem::schemas(&mut schemas);
    // Types that appear only in query parameters are not collected by the routes.
    for (name, schema) in [
        (SortField::name(), SortField::schema()),
        (SortOrder::name(), SortOrder::schema()),
        (Archived::name(), Archived::schema()),
    ] {
        schemas.push((name.into_owned(), schema));
    }
    components.schemas.extend(schemas);
    components.security_schemes.insert(
        "api_key".into(),
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.security_schemes.insert(
        "session".into(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(cfg.cookie_name.clone()))),
    );
    doc
}

/// The document as served: its `servers` entry is where the router is mounted (the
/// path the host nested it under, `/` at the root), so clients and tools built from
/// it call the right URLs.
pub(crate) fn with_server(doc: &OpenApi, req: &axum::extract::Request) -> OpenApi {
    let base = req
        .extensions()
        .get::<axum::extract::NestedPath>()
        .map_or("/", |n| n.as_str());
    let mut doc = doc.clone();
    doc.servers = Some(vec![utoipa::openapi::server::Server::new(base)]);
    doc
}
