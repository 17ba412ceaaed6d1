//! crm-http: the axum `Router` over crm-core that a host app mounts with
//! `.nest("/crm", crm_http::router(crm))`. Its routes land with the HTTP issue;
//! until then this crate is an empty skeleton and exports nothing.
