//! OpenAI lead parsing: chat completions with a strict `json_schema` response format,
//! whose `budget` and `project_type` enums are the `Crm`'s allowed values, so the
//! model can only answer with values crm accepts.
//!
//! Register with `Crm::builder().lead_parser(OpenAi::new(api_key))`; then
//! `leads.parse(text, auto_save)` uses it. Input is at most 5,000 characters (checked
//! by `Leads::parse`). A refusal, an answer cut off at the token limit, an answer that
//! is not the schema's JSON, and any HTTP error are `Error::Integration`, with no key
//! or input in the text.

use crm_core::leads::parser::{LeadParser, ParseFuture, ParsedLead};
use crm_core::leads::{AllowedValues, NewLead};
use crm_core::{Error, SecretString};
use serde_json::{json, Value};

/// OpenAI's API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
const FIELDS: [&str; 7] = [
    "name",
    "email",
    "phone",
    "company",
    "budget",
    "project_type",
    "message",
];

/// The OpenAI lead parser.
#[derive(Clone)]
pub struct OpenAi {
    base_url: String,
    model: String,
    api_key: SecretString,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// A parser using `gpt-4o-mini` with this API key and a 30 s timeout.
    pub fn new(api_key: impl Into<String>) -> Self {
        let client = crate::http_client(30);
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            model: DEFAULT_MODEL.into(),
            api_key: SecretString::from(api_key.into()),
            client,
        }
    }

    crate::http_builders!();

    /// Uses another model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }
}

fn nullable_enum(values: &[String]) -> Value {
    let mut e: Vec<Value> = values.iter().map(|v| Value::String(v.clone())).collect();
    e.push(Value::Null);
    json!({ "type": ["string", "null"], "enum": e })
}

/// The request body for `text`.
pub fn request(model: &str, text: &str, allowed: &AllowedValues) -> Value {
    let s = json!({ "type": ["string", "null"] });
    let mut required: Vec<&str> = FIELDS.to_vec();
    required.push("confidence");
    json!({
        "model": model,
        "temperature": 0,
        "messages": [
            { "role": "system", "content": "Extract a sales lead from the user's text. Use null for anything the text does not say. Phone numbers with their country code. budget and project_type only from the allowed values. confidence: how sure you are that this is a lead with these details, from 0 to 1." },
            { "role": "user", "content": text },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "lead",
                "strict": true,
                "schema": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "name": s, "email": s, "phone": s, "company": s,
                        "budget": nullable_enum(&allowed.budgets),
                        "project_type": nullable_enum(&allowed.project_types),
                        "message": s,
                        "confidence": { "type": "number" },
                    },
                    "required": required,
                },
            },
        },
    })
}

/// Reads a chat-completions answer into a parsed lead.
pub fn read_answer(answer: &Value, allowed: &AllowedValues) -> crm_core::Result<ParsedLead> {
    let choice = &answer["choices"][0];
    if let Some(refusal) = choice["message"]["refusal"].as_str() {
        return Err(Error::Integration(format!(
            "the model refused: {}",
            refusal.chars().take(200).collect::<String>()
        )));
    }
    if choice["finish_reason"] == "length" {
        return Err(Error::Integration(
            "the model's answer was cut off at the token limit".into(),
        ));
    }
    let content = choice["message"]["content"]
        .as_str()
        .ok_or_else(|| Error::Integration("the answer has no content".into()))?;
    let v: Value = serde_json::from_str(content)
        .map_err(|_| Error::Integration("the model's answer is not the expected JSON".into()))?;
    if !v.is_object() {
        return Err(Error::Integration(
            "the model's answer is not the expected JSON".into(),
        ));
    }
    let text = |k: &str| {
        v[k].as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let one_of = |k: &str, list: &[String]| text(k).filter(|x| list.contains(x));
    let fields = NewLead {
        name: text("name").unwrap_or_default(),
        email: text("email"),
        phone: text("phone"),
        company: text("company"),
        budget: one_of("budget", &allowed.budgets),
        project_type: one_of("project_type", &allowed.project_types),
        message: text("message"),
        ..Default::default()
    };
    let confidence = v["confidence"]
        .as_f64()
        .filter(|c| c.is_finite())
        .unwrap_or(0.0)
        .clamp(0.0, 1.0);
    // The model gives one confidence for the whole answer: each value gets it.
    Ok(ParsedLead::new("openai", fields, &[], confidence))
}

impl LeadParser for OpenAi {
    fn parse<'a>(&'a self, text: &'a str, allowed: &'a AllowedValues) -> ParseFuture<'a> {
        Box::pin(async move {
            let resp = self
                .client
                .post(format!("{}/chat/completions", self.base_url))
                .bearer_auth(self.api_key.expose())
                .json(&request(&self.model, text, allowed))
                .send()
                .await
                .map_err(|e| {
                    Error::Integration(if e.is_timeout() {
                        "OpenAI timed out".into()
                    } else {
                        "OpenAI could not be reached".into()
                    })
                })?;
            let status = resp.status();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let message = answer["error"]["message"].as_str().unwrap_or("no message");
                return Err(Error::Integration(format!(
                    "OpenAI answered {status}: {}",
                    message.chars().take(200).collect::<String>()
                )));
            }
            read_answer(&answer, allowed)
        })
    }
}

/// The `openai` integration provider: a workspace's own OpenAI key (and model)
/// parses its leads. Settings: `api_key` (secret), `model` (default
/// [`DEFAULT_MODEL`]). Saving lists the models with the key (`GET /models`, and
/// `GET /models/{model}` when one is named): a key OpenAI refuses is an error on
/// `settings.api_key`, a model it does not know one on `settings.model`.
#[derive(Debug, Clone)]
pub struct OpenAiIntegration {
    base_url: String,
    client: reqwest::Client,
}

impl Default for OpenAiIntegration {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenAiIntegration {
    /// Talks to OpenAI with a client that has a 30 s timeout (shared by the
    /// workspaces' parsers).
    pub fn new() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client: crate::http_client(30),
        }
    }

    crate::http_builders!();
}

impl crm_core::providers::Provider for OpenAiIntegration {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 2] = [
            SettingField::secret("api_key"),
            SettingField::optional("model"),
        ];
        &FIELDS
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            let key = crm_core::providers::setting(settings, "api_key");
            let url = match settings.get("model") {
                // A model name: starts with a letter or digit (never `.` or `..`,
                // which would change the path), then letters, digits, `-_.:`.
                Some(m)
                    if m.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && m.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
                {
                    format!("{}/models/{m}", self.base_url)
                }
                Some(_) => return Err(crate::refused("model", "is not a model name")),
                None => format!("{}/models", self.base_url),
            };
            let (status, _) = crate::probe(self.client.get(url).bearer_auth(key), "OpenAI").await?;
            match status {
                200..=299 => Ok(()),
                401 | 403 => Err(crate::refused("api_key", "was refused by OpenAI")),
                404 => Err(crate::refused("model", "is not a model this key can use")),
                s => Err(crate::unexpected("OpenAI", s)),
            }
        })
    }

    fn lead_parser(
        &self,
        settings: &crm_core::providers::Settings,
    ) -> Option<std::sync::Arc<dyn LeadParser>> {
        let mut parser = OpenAi::new(settings.get("api_key")?.clone())
            .with_base_url(self.base_url.clone())
            .with_client(self.client.clone());
        if let Some(model) = settings.get("model") {
            parser = parser.with_model(model.clone());
        }
        Some(std::sync::Arc::new(parser))
    }
}
