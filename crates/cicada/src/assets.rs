//! The web UI's files and the HTML report's template, embedded at build time (see build.rs: built from `web/` with
//! npm, or a placeholder page that says how to build them). The web UI serves them; the final reports fill the
//! report template.

pub(crate) const INDEX_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/index.html"));
pub(crate) const APP_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/app.js"));
pub(crate) const APP_CSS: &str = include_str!(concat!(env!("OUT_DIR"), "/app.css"));
pub(crate) const REPORT_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/report.html"));
/// The placeholder in `REPORT_HTML` that the report's data replaces.
pub(crate) const REPORT_PLACEHOLDER: &str = "__CICADA_REPORT_DATA__";
