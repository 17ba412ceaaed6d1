//! OpenAPI schemas of input fields whose rules the derive cannot state on its own
//! (the items of lists, the values an input accepts, the password policy), so that
//! the document says exactly what the services enforce. Used through
//! `schema(schema_with = …)`, here and in crm-http.

use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;

/// The pattern of text that must hold something besides whitespace (the services
/// trim every text input).
pub(crate) const NOT_BLANK: &str = r"\S";

fn string(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(NOT_BLANK))
}

fn one_of<S: Into<serde_json::Value>>(values: impl IntoIterator<Item = S>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
}

/// Every subscription filter an endpoint or channel accepts: `*`, `<prefix>.*` and
/// the event type names, from the event types themselves.
fn filters() -> ObjectBuilder {
    let mut all = vec!["*".to_owned()];
    for t in crate::events::EventType::ALL {
        if let Some((prefix, _)) = t.as_str().split_once('.') {
            let wild = format!("{prefix}.*");
            if !all.contains(&wild) {
                all.push(wild);
            }
        }
    }
    all.extend(
        crate::events::EventType::ALL
            .iter()
            .map(|t| t.as_str().to_owned()),
    );
    one_of(all)
}

/// The pattern of a scope, from the resources and actions [`Scope::parse`] knows.
///
/// [`Scope::parse`]: crate::api_keys::scope::Scope::parse
fn scope() -> ObjectBuilder {
    use crate::api_keys::scope::{ACTIONS, RESOURCES};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^(\\*|({}):(\\*|{}))$",
            RESOURCES.join("|"),
            ACTIONS.join("|")
        )))
}

/// `array` or, in a patch, `array | null` (`null`: unchanged).
fn array(nullable: bool) -> ArrayBuilder {
    let b = ArrayBuilder::new();
    if nullable {
        b.schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
    } else {
        b
    }
}

fn tag_list(nullable: bool) -> RefOr<Schema> {
    array(nullable)
        .items(string(1, 50))
        .max_items(Some(crate::leads::parse::TAGS_MAX))
        .into()
}

/// Lead tags: up to 20 of 1–50 characters (duplicates are dropped).
pub(crate) fn tags() -> RefOr<Schema> {
    tag_list(false)
}

/// Lead tags in a patch: as [`tags`], or `null` for "unchanged".
pub(crate) fn tags_patch() -> RefOr<Schema> {
    tag_list(true)
}

fn contact_points(nullable: bool, format: SchemaFormat, max_length: usize) -> RefOr<Schema> {
    array(nullable)
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(format))
                .max_length(Some(max_length)),
        )
        .max_items(Some(crate::contacts::CONTACT_POINTS_MAX))
        .into()
}

/// A contact's emails: up to 10 addresses.
pub(crate) fn emails() -> RefOr<Schema> {
    contact_points(false, SchemaFormat::KnownFormat(KnownFormat::Email), 254)
}

/// A contact's emails in a patch: as [`emails`], or `null` for "unchanged".
pub(crate) fn emails_patch() -> RefOr<Schema> {
    contact_points(true, SchemaFormat::KnownFormat(KnownFormat::Email), 254)
}

/// A contact's phones: up to 10 numbers with country code.
pub(crate) fn phones() -> RefOr<Schema> {
    contact_points(false, SchemaFormat::Custom("phone".into()), 32)
}

/// A contact's phones in a patch: as [`phones`], or `null` for "unchanged".
pub(crate) fn phones_patch() -> RefOr<Schema> {
    contact_points(true, SchemaFormat::Custom("phone".into()), 32)
}

/// The activity kinds a caller may add (`status_change`, `merged` and `converted`
/// are crm's own).
pub(crate) fn activity_kind() -> RefOr<Schema> {
    use crate::leads::ActivityKind;
    one_of(
        ActivityKind::ALL
            .iter()
            .filter(|k| {
                !matches!(
                    **k,
                    ActivityKind::StatusChange | ActivityKind::Merged | ActivityKind::Converted
                )
            })
            .map(|k| k.as_str()),
    )
    .into()
}

/// A new password under the policy of [`crate::auth::check_policy`]: at least 12
/// characters with a lower-case and an upper-case letter, a digit and a symbol (the
/// list of common passwords is beyond a schema). At most 256 characters: the limit
/// is 1,024 bytes, and a character takes up to four.
pub fn new_password() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(crate::auth::password::MIN_CHARS))
        .max_length(Some(crate::auth::password::MAX_BYTES / 4))
        .pattern(Some(
            r"^(?=.*\p{Ll})(?=.*\p{Lu})(?=.*[0-9])(?=.*[^\p{L}\p{N}\s])",
        ))
        .into()
}

/// A password to check (a login, the current password): 1–256 characters.
pub fn password() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Password)))
        .min_length(Some(1))
        .max_length(Some(crate::auth::password::MAX_BYTES / 4))
        .into()
}

/// A token from a reset or verification mail: 43 base64url characters.
pub fn token() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(43))
        .max_length(Some(43))
        .pattern(Some("^[A-Za-z0-9_-]{43}$"))
        .into()
}

fn filter_list(nullable: bool, min: usize) -> RefOr<Schema> {
    array(nullable)
        .items(filters())
        .min_items(Some(min))
        .max_items(Some(32))
        .into()
}

/// The filter of a new webhook endpoint or channel: up to 32 (`[]`: the default).
pub(crate) fn event_filter() -> RefOr<Schema> {
    filter_list(false, 0)
}

/// A channel's filter in a patch: as [`event_filter`] (`[]` is `["*"]`), or `null`
/// for "unchanged".
pub(crate) fn event_filter_patch() -> RefOr<Schema> {
    filter_list(true, 0)
}

/// An endpoint's filter in a patch: 1–32 filters, or `null` for "unchanged".
pub(crate) fn endpoint_filter_patch() -> RefOr<Schema> {
    filter_list(true, 1)
}

fn scope_list(nullable: bool) -> RefOr<Schema> {
    array(nullable)
        .items(scope())
        .min_items(Some(1))
        .max_items(Some(32))
        .into()
}

/// API key scopes: 1–32 of `*`, `resource:*` or `resource:action`.
pub(crate) fn scopes() -> RefOr<Schema> {
    scope_list(false)
}

/// Scopes in a patch: as [`scopes`], or `null` for "unchanged".
pub(crate) fn scopes_patch() -> RefOr<Schema> {
    scope_list(true)
}
