//! Who may change things: with `ORCH_SERVER_TOKEN` set, every mutation needs
//! `Authorization: Bearer <token>`; without one, only a loopback listener may be
//! open (or an operator who says `--insecure-open`). With `[server] auth_reads`
//! reads need it too, except the probes and the OpenAPI document.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// Refuses a mutation that lacks the configured token.
pub(crate) async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && needs_token(req.method(), req.uri().path(), state.auth_reads)
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !fixed_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Paths open whatever `auth_reads` says: probes (a load balancer has no token)
/// and the API's description (the same for every deployment, holding no data).
const OPEN_READS: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// Whether a request needs the token (when one is set): every mutation, and with
/// `auth_reads` every read but [`OPEN_READS`].
fn needs_token(method: &Method, path: &str, auth_reads: bool) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !read || (auth_reads && !OPEN_READS.contains(&path))
}

/// `given == secret`, in a time that depends on the secret's length only: every
/// byte of the secret is compared whatever the given value holds, and no branch
/// depends on a byte. (The secret's length may leak; its content does not.)
fn fixed_time_eq(given: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ s;
    }
    std::hint::black_box(diff) == 0
}

/// Whether `orch serve` may listen on `addrs`: with a token anything goes; with
/// none, only loopback addresses, unless `insecure_open` says the operator wants
/// an open API anyway.
///
/// # Errors
/// Why the listener is refused, saying what to do instead.
pub fn check_exposure(addrs: &[SocketAddr], token: bool, insecure_open: bool) -> Result<(), String> {
    if token || insecure_open || crate::all_loopback(addrs) {
        return Ok(());
    }
    let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Err(format!(
        "refusing to serve the API on {} with no ORCH_SERVER_TOKEN: anyone who can reach it could file, cancel \
         and approve items. Set ORCH_SERVER_TOKEN, listen on a loopback address (server.listen = \
         \"127.0.0.1:7700\"), or start with --insecure-open if the network is trusted",
        shown.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_time_eq_compares_whole_values() {
        assert!(fixed_time_eq(b"s3cret", b"s3cret"));
        assert!(!fixed_time_eq(b"s3cre", b"s3cret"));
        assert!(!fixed_time_eq(b"s3cretX", b"s3cret"));
        assert!(!fixed_time_eq(b"S3cret", b"s3cret"));
        assert!(!fixed_time_eq(b"", b"s3cret"));
    }

    #[test]
    fn reads_need_the_token_only_with_auth_reads_and_probes_never() {
        for path in ["/queue", "/items", "/items/SHOP-1", "/jobs/1/log", "/nope"] {
            assert!(!needs_token(&Method::GET, path, false), "{path}");
            assert!(needs_token(&Method::GET, path, true), "{path}");
            assert!(needs_token(&Method::HEAD, path, true), "{path}");
        }
        for path in OPEN_READS {
            assert!(!needs_token(&Method::GET, path, true), "{path}");
            assert!(needs_token(&Method::POST, path, false), "{path}");
        }
        assert!(needs_token(&Method::POST, "/items", false));
        assert!(needs_token(&Method::DELETE, "/items/SHOP-1", false));
    }

    #[test]
    fn open_non_loopback_listener_is_refused_without_token() {
        let lo: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let lo6: SocketAddr = "[::1]:7700".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        assert!(check_exposure(&[lo, lo6], false, false).is_ok());
        let why = check_exposure(&[lo, any], false, false).unwrap_err();
        assert!(why.contains("0.0.0.0:7700") && why.contains("ORCH_SERVER_TOKEN") && why.contains("--insecure-open"));
        assert!(check_exposure(&[any], true, false).is_ok());
        assert!(check_exposure(&[any], false, true).is_ok());
        assert!(check_exposure(&[], false, false).is_err());
    }
}
