//! The synchronous helpers: CPU-only work with no database, callable from any thread.
//!
//! Webhook signing mirrors the `standardwebhooks` package (same constructor, `sign`,
//! `verify`, headers from any mapping) over `crm_core`'s signer, so moving from that
//! package is an import change. Hashing a body is about a microsecond per KiB: below
//! [`DETACH_BYTES`] the GIL is kept, because releasing and re-taking it costs as much
//! as the work and invites a convoy behind other threads; above it, and always for
//! Argon2 (tens of milliseconds), the GIL is released (`py.detach`) so other Python
//! threads run meanwhile.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use crm_core::auth::{self, PasswordParams};
use crm_core::webhooks::signing::{
    verify_calcom, verify_whatsapp, Signer, VerifyError, SECRET_PREFIX,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::errors::{invalid, to_py, verification};

/// Bodies at least this long are hashed with the GIL released.
const DETACH_BYTES: usize = 4096;

/// Body bytes from `bytes` or `str` (UTF-8), borrowed where Python allows it.
fn body<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(Cow::Owned(s.to_cow()?.into_owned().into_bytes()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(
        "the body must be bytes or str",
    ))
}

/// Runs `f` on the body, releasing the GIL when the body is long.
fn hashing<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_BYTES {
        py.detach(f)
    } else {
        f()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `json.loads`, looked up once.
fn json_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS
        .get_or_try_init(py, || {
            py.import("json")
                .and_then(|m| m.getattr("loads"))
                .map(Bound::unbind)
        })
        .map(|f| f.bind(py))
}

/// A Standard Webhooks signer and verifier for one secret (`crm.webhooks.Webhook`).
#[pyclass(module = "crm._native", frozen)]
pub struct Webhook {
    signer: Signer,
}

#[pymethods]
impl Webhook {
    /// `secret`: `whsec_` + base64 (the prefix and the padding optional), or the raw
    /// key bytes. An empty or undecodable secret is a `ValidationError` on `secret`.
    #[new]
    fn new(py: Python<'_>, secret: &Bound<'_, PyAny>) -> PyResult<Self> {
        let key = if let Ok(b) = secret.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(s) = secret.cast::<PyString>() {
            let s = s.to_cow()?;
            let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(&s);
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            LENIENT
                .decode(b64)
                .map_err(|_| invalid(py, "secret", "must be whsec_ followed by base64"))?
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "the secret must be str or bytes",
            ));
        };
        if key.is_empty() {
            return Err(invalid(py, "secret", "must not be empty"));
        }
        Ok(Self {
            signer: Signer::new(&key),
        })
    }

    /// The `webhook-signature` value `v1,<base64>` for `msg_id`, `timestamp` (unix
    /// seconds, or a `datetime`; a naive one is taken as UTC, as `standardwebhooks`
    /// does) and the body `data` (`str` or `bytes`).
    fn sign(
        &self,
        py: Python<'_>,
        msg_id: PyBackedStr,
        timestamp: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let ts = unix_seconds(py, timestamp)?;
        let body = body(data)?;
        let signer = &self.signer;
        Ok(hashing(py, body.len(), || signer.sign(&msg_id, ts, &body)))
    }

    /// Verifies the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
    /// (found in any mapping, case-insensitively) against `data`: all present, the
    /// timestamp within 5 minutes of `now` (default: the clock), a `v1` signature
    /// matching. Returns the JSON-decoded body (or `None` with `json_parse=False`);
    /// raises `WebhookVerificationError` otherwise, whatever the headers hold.
    #[pyo3(signature = (data, headers, *, json_parse = true, now = None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        json_parse: bool,
        now: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = Headers::find(headers)?;
        let payload = body(data)?;
        let (id, ts, sig) = (h.get(0), h.get(1), h.get(2));
        let signer = &self.signer;
        let now = now.unwrap_or_else(now_secs);
        hashing(py, payload.len(), || {
            signer.verify(id, ts, sig, &payload, now)
        })
        .map_err(|e| verification(py, e))?;
        if json_parse {
            json_loads(py)?.call1((data,))
        } else {
            Ok(py.None().into_bound(py))
        }
    }

    fn __repr__(&self) -> &'static str {
        "Webhook(<secret redacted>)"
    }
}

/// The three Standard Webhooks headers, taken from any mapping's `items()` (a `dict`
/// is read directly). Keys compare case-insensitively; a non-string key or value
/// counts as absent.
struct Headers([Option<String>; 3]);

impl Headers {
    const NAMES: [&'static str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

    fn find(headers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut found = Self([None, None, None]);
        let mut take = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>| -> PyResult<()> {
            let Ok(k) = k.cast::<PyString>() else {
                return Ok(());
            };
            let k = k.to_cow()?;
            if let Some(i) = Self::NAMES.iter().position(|n| n.eq_ignore_ascii_case(&k)) {
                if let Ok(v) = v.cast::<PyString>() {
                    found.0[i] = Some(v.to_cow()?.into_owned());
                }
            }
            Ok(())
        };
        if let Ok(d) = headers.cast::<PyDict>() {
            for (k, v) in d.iter() {
                take(&k, &v)?;
            }
        } else {
            let items = headers
                .call_method0("items")
                .map_err(|_| pyo3::exceptions::PyTypeError::new_err("headers must be a mapping"))?;
            for pair in items.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
                take(&k, &v)?;
            }
        }
        Ok(found)
    }

    fn get(&self, i: usize) -> &str {
        self.0[i].as_deref().unwrap_or_default()
    }
}

/// Unix seconds from an `int` or a `datetime` (naive = UTC).
fn unix_seconds(py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(n) = t.extract::<i64>() {
        return Ok(n);
    }
    let is_datetime = t.hasattr("tzinfo")? && t.hasattr("timestamp")?;
    if !is_datetime {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "timestamp must be an int or a datetime",
        ));
    }
    let aware = if t.getattr("tzinfo")?.is_none() {
        let utc = py.import("datetime")?.getattr("timezone")?.getattr("utc")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", utc)?;
        t.call_method("replace", (), Some(&kwargs))?
    } else {
        t.clone()
    };
    let secs: f64 = aware.call_method0("timestamp")?.extract()?;
    Ok(secs.floor() as i64)
}

/// `crm.whatsapp.verify_signature`: `X-Hub-Signature-256` (`sha256=<hex>`) over the raw
/// body under the app secret. Raises `WebhookVerificationError` when it does not match
/// or the header is malformed or missing (`None`).
#[pyfunction]
#[pyo3(signature = (app_secret, body, header))]
pub(crate) fn whatsapp_verify_signature(
    py: Python<'_>,
    app_secret: PyBackedStr,
    body: &Bound<'_, PyAny>,
    header: Option<PyBackedStr>,
) -> PyResult<()> {
    hex_check(py, body, header, "x-hub-signature-256", |b, h| {
        verify_whatsapp(&app_secret, b, h)
    })
}

/// `crm.calcom.verify_signature`: `X-Cal-Signature-256` (hex) over the raw body under the
/// webhook secret; as [`whatsapp_verify_signature`].
#[pyfunction]
#[pyo3(signature = (secret, body, header))]
pub(crate) fn calcom_verify_signature(
    py: Python<'_>,
    secret: PyBackedStr,
    body: &Bound<'_, PyAny>,
    header: Option<PyBackedStr>,
) -> PyResult<()> {
    hex_check(py, body, header, "x-cal-signature-256", |b, h| {
        verify_calcom(&secret, b, h)
    })
}

fn hex_check(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    header: Option<PyBackedStr>,
    name: &'static str,
    check: impl FnOnce(&[u8], &str) -> Result<(), VerifyError> + Send,
) -> PyResult<()> {
    let payload = body(data)?;
    let header = header.as_deref().unwrap_or_default();
    let result = if header.trim().is_empty() {
        Err(VerifyError::MissingHeader(name))
    } else {
        hashing(py, payload.len(), || check(&payload, header))
    };
    result.map_err(|e| verification(py, e))
}

/// `crm.whatsapp.handshake`: the challenge to echo when Meta's verification request
/// (`hub.mode`, `hub.verify_token`, `hub.challenge`) matches `verify_token`; raises
/// `UnauthorizedError` otherwise.
#[pyfunction]
#[pyo3(signature = (mode, token, challenge, verify_token))]
pub(crate) fn whatsapp_handshake(
    py: Python<'_>,
    mode: Option<PyBackedStr>,
    token: Option<PyBackedStr>,
    challenge: Option<PyBackedStr>,
    verify_token: PyBackedStr,
) -> PyResult<String> {
    crm_integrations::whatsapp::handshake(
        mode.as_deref(),
        token.as_deref(),
        challenge.as_deref(),
        &verify_token,
    )
    .map_err(|e| to_py(py, &e))
}

/// `crm.passwords.hash`: an Argon2id PHC string, with the GIL released while hashing.
#[pyfunction]
#[pyo3(signature = (password, *, memory_kib = 19_456, iterations = 2, parallelism = 1))]
pub(crate) fn password_hash(
    py: Python<'_>,
    password: PyBackedStr,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
) -> PyResult<String> {
    let params = PasswordParams {
        memory_kib,
        iterations,
        parallelism,
    };
    py.detach(|| auth::password::hash(&password, params))
        .map_err(|e| to_py(py, &e))
}

/// `crm.passwords.verify`: whether `password` matches the PHC string (a malformed
/// string never matches), with the GIL released.
#[pyfunction]
pub(crate) fn password_verify(py: Python<'_>, password: PyBackedStr, phc: PyBackedStr) -> bool {
    py.detach(|| auth::password::verify(&password, &phc))
}

/// `crm.passwords.check_policy`: raises `ValidationError` listing every rule the
/// password breaks.
#[pyfunction]
pub(crate) fn password_check_policy(py: Python<'_>, password: PyBackedStr) -> PyResult<()> {
    auth::check_policy(&password).map_err(|e| to_py(py, &e))
}

/// crm's rate-limit key of a client address (`crm_core::ratelimit::ip_key`, the
/// one crm-http uses): IPv4 as it is, an IPv4-mapped address as IPv4, any other
/// IPv6 address as its /64; text that is not an address unchanged.
#[pyfunction]
pub(crate) fn rate_limit_ip_key(ip: &str) -> String {
    crm_core::ratelimit::ip_key(ip)
}
