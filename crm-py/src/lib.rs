//! The native half of the Python package `crm` (`crm._native`), built by maturin.
//!
//! Python code imports `crm`, never this module: the package's Python half holds the
//! typed API (`crm.Crm`, the services, dataclass results, the exception hierarchy)
//! and calls in here. `client` is the async bridge to crm-core's services on one
//! tokio runtime; `sync` has the CPU-only helpers (webhook signatures, passwords)
//! that release the GIL; `errors` maps `crm_core::Error` to `crm.CrmError` once.

use pyo3::prelude::*;

mod bridge;
mod client;
mod errors;
mod sync;
mod transfer;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::Client>()?;
    m.add_class::<sync::Webhook>()?;
    m.add_class::<transfer::ExportStream>()?;
    m.add_function(wrap_pyfunction!(sync::whatsapp_verify_signature, m)?)?;
    m.add_function(wrap_pyfunction!(sync::whatsapp_handshake, m)?)?;
    m.add_function(wrap_pyfunction!(sync::calcom_verify_signature, m)?)?;
    m.add_function(wrap_pyfunction!(sync::password_hash, m)?)?;
    m.add_function(wrap_pyfunction!(sync::password_verify, m)?)?;
    m.add_function(wrap_pyfunction!(sync::password_check_policy, m)?)?;
    m.add_function(wrap_pyfunction!(sync::rate_limit_ip_key, m)?)?;
    m.add_function(wrap_pyfunction!(errors::sample_error, m)?)?;
    m.add_function(wrap_pyfunction!(client::model_schemas, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::quiesce, m)?)?;
    Ok(())
}
