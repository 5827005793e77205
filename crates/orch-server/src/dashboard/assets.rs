//! The dashboard's static files, embedded in the binary at build time: no Node
//! build step and nothing fetched at run time.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::PageError;

const CSS: &str = include_str!("assets/dash.css");
const JS: &str = include_str!("assets/dash.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// `GET /ui/assets/{name}`: one of the embedded files.
pub(crate) async fn asset(Path(name): Path<String>) -> Result<Response, PageError> {
    let (body, kind) = match name.as_str() {
        "dash.css" => (CSS, "text/css; charset=utf-8"),
        "dash.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return Err(PageError::not_found(format!("no asset {name}"))),
    };
    // Assets change only with the binary; a short cache keeps a restart's new
    // version from being hidden for long.
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("max-age=60")),
        ],
        body,
    )
        .into_response())
}
