//! The OpenAPI 3.1 document. Operations come from the handlers (`#[utoipa::path]`),
//! schemas from the types; what depends on the route family — the security scheme
//! and the error responses — is added by [`mark`] where `routes::all` puts a family
//! behind its guard, so the document and the guards cannot disagree.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crm_core::leads::{SortField, SortOrder};

use crate::problem::{Problem, PROBLEM_JSON};
use utoipa_axum::router::OpenApiRouter;

use crate::{AppState, Config};

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
    /// No guard (health).
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
    match fam {
        Family::Api => {
            add(
                "401",
                "Missing, malformed, unknown, revoked or expired API key",
            );
            add("403", "The key lacks the scope");
            if method == "post" {
                add(
                    "409",
                    "Conflict, or a request with this Idempotency-Key still runs",
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
                "Conflict with an existing entity, or a state that allows no change \
                 (`code` `key_revoked`: a revoked API key is frozen)",
            );
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
}

/// Adds the security schemes and the schemas the operations refer to by name.
pub(crate) fn finish(mut doc: OpenApi, cfg: &Config) -> OpenApi {
    let components = doc.components.get_or_insert_with(Components::new);
    let mut schemas = vec![(Problem::name().into_owned(), Problem::schema())];
    Problem::schemas(&mut schemas);
    // Types that appear only in query parameters are not collected by the routes.
    for (name, schema) in [
        (SortField::name(), SortField::schema()),
        (SortOrder::name(), SortOrder::schema()),
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
