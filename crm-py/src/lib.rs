//! crm-py: the PyO3 module `crm` (built by maturin) that gives FastAPI backends the
//! same services as Rust apps. The bindings land with the Python issue; until then
//! this crate is an empty skeleton and exports nothing.
