//! Request ids and access logs. Every request carries an `x-request-id`: the
//! client's own if it sent a fit one (1–128 visible ASCII characters, so a hostile
//! value can neither forge log lines nor bloat them), else one made here. The id is
//! echoed on the response and named in the request's one access log line (method,
//! path, status, latency, id) at `info` through `tracing`, so a client's report
//! can be matched to the server's log.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, Response};
use axum::middleware::Next;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Span;

/// The header carrying the id, both ways.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-given id kept.
const MAX_ID_LEN: usize = 128;

/// Makes an id for a request that came without a fit one: 64 random bits in hex,
/// unique enough to find one request in a node's log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", rand::random::<u64>());
        axum::http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Whether a client-given id is kept: short, visible ASCII, no spaces.
fn is_fit(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// Drops an `x-request-id` that is not fit to log (or several of them), so the
/// next layer gives the request a fresh one.
pub(crate) async fn drop_unfit_request_id(mut req: Request, next: Next) -> axum::response::Response {
    let mut given = req.headers().get_all(&REQUEST_ID).iter();
    let fit = match (given.next(), given.next()) {
        (Some(one), None) => is_fit(one.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !fit {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

/// The span every request runs in: its method, path and id.
pub(crate) fn span(req: &axum::http::Request<Body>) -> Span {
    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// The access log line, once the response's status is known.
pub(crate) fn log_response(res: &Response<Body>, latency: Duration, span: &Span) {
    let ms = latency.as_secs_f64() * 1000.0;
    tracing::info!(parent: span, status = res.status().as_u16(), latency_ms = ms, "request");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ids_are_kept() {
        assert!(is_fit(b"abc-123_x.y:z"));
        assert!(!is_fit(b""));
        assert!(!is_fit(b"two words"));
        assert!(!is_fit("caf\u{e9}".as_bytes()));
        assert!(!is_fit(&[b'a'; MAX_ID_LEN + 1]));
        assert!(is_fit(&[b'a'; MAX_ID_LEN]));
    }
}
