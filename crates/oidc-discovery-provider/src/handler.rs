//! The HTTP routes: the discovery document and the JWKS.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use spire_config::OidcConfig;

use crate::jwks::jwks_document;
use crate::source::KeyState;

/// What the handlers need from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Allowed host names (`domains`).
    pub domains: Vec<String>,
    /// `jwt_issuer`.
    pub jwt_issuer: Option<String>,
    /// `jwks_uri`.
    pub jwks_uri: Option<String>,
    /// `allow_insecure_scheme`.
    pub allow_insecure_scheme: bool,
    /// `set_key_use`.
    pub set_key_use: bool,
    /// The path prefix without a trailing slash (`""` for the root).
    pub path_prefix: String,
    /// `log_requests`.
    pub log_requests: bool,
}

impl HandlerOptions {
    /// The options of `config`.
    pub fn from_config(config: &OidcConfig) -> Self {
        let prefix = config.server_path_prefix.as_deref().unwrap_or("/");
        let trimmed = prefix.trim_matches('/');
        Self {
            domains: config.domains.clone(),
            jwt_issuer: config.jwt_issuer.clone(),
            jwks_uri: config.jwks_uri.clone(),
            allow_insecure_scheme: config.allow_insecure_scheme,
            set_key_use: config.set_key_use,
            path_prefix: if trimmed.is_empty() {
                String::new()
            } else {
                format!("/{trimmed}")
            },
            log_requests: config.log_requests,
        }
    }
}

#[derive(Clone)]
struct App {
    options: Arc<HandlerOptions>,
    state: Arc<KeyState>,
    /// Whether this listener terminates TLS (the scheme of derived URLs).
    tls: bool,
}

/// The provider's routes for one listener; `tls` tells whether the listener serves HTTPS.
pub fn router(options: HandlerOptions, state: Arc<KeyState>, tls: bool) -> Router {
    let well_known = format!("{}/.well-known/openid-configuration", options.path_prefix);
    let keys = format!("{}/keys", options.path_prefix);
    let log_requests = options.log_requests;
    let app = App {
        options: Arc::new(options),
        state,
        tls,
    };
    let router = Router::new()
        .route(&well_known, get(serve_well_known))
        .route(&keys, get(serve_keys))
        .with_state(app);
    if log_requests {
        router.layer(middleware::from_fn(log_request))
    } else {
        router
    }
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "HTTP request");
    response
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or(v).trim())
        .filter(|v| !v.is_empty())
}

/// The host the request was addressed to: X-Forwarded-Host, else Host.
fn request_host(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, "x-forwarded-host").or_else(|| header_str(headers, header::HOST.as_str()))
}

/// `host` without its port (`[::1]:8080` → `::1`).
fn domain_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

async fn serve_well_known(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(host) = request_host(&headers) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the request has no Host header".to_owned(),
        );
    };
    let domain = domain_of(host);
    if !app
        .options
        .domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("domain {domain:?} is not allowed"),
        );
    }
    let forwarded_https = header_str(&headers, "x-forwarded-proto") == Some("https");
    let scheme = if app.options.allow_insecure_scheme && !app.tls && !forwarded_https {
        "http"
    } else {
        "https"
    };
    let prefix = &app.options.path_prefix;
    let issuer = app
        .options
        .jwt_issuer
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{host}{prefix}"));
    let jwks_uri = app
        .options
        .jwks_uri
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{host}{prefix}/keys"));
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": [],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
    });
    json_response(&doc, false)
}

async fn serve_keys(State(app): State<App>) -> Response {
    let Some(keys) = app.state.keys() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "document not available".to_owned(),
        );
    };
    json_response(&jwks_document(&keys, app.options.set_key_use), true)
}

fn json_response(doc: &serde_json::Value, no_cache: bool) -> Response {
    let body = serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string());
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if no_cache {
        let h = response.headers_mut();
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        h.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
        h.insert(header::EXPIRES, header::HeaderValue::from_static("0"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use spire_config::OidcKeySource;
    use spire_spiffe::{EcCurve, JwtAuthority, PublicKey};
    use tower::ServiceExt;

    use super::*;

    fn options() -> HandlerOptions {
        HandlerOptions {
            domains: vec!["localhost".to_owned(), "oidc.example.org".to_owned()],
            jwt_issuer: None,
            jwks_uri: None,
            allow_insecure_scheme: true,
            set_key_use: true,
            path_prefix: String::new(),
            log_requests: true,
        }
    }

    fn state() -> Arc<KeyState> {
        Arc::new(KeyState::new(&OidcKeySource::ServerApi {
            socket_path: "/nonexistent".into(),
            poll_interval: std::time::Duration::from_secs(10),
        }))
    }

    async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = Request::builder().uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn discovery_document_derives_urls_from_the_host() {
        let router = router(options(), state(), false);
        let (status, body) = get(
            &router,
            "/.well-known/openid-configuration",
            &[("host", "localhost:8080")],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["issuer"], "http://localhost:8080");
        assert_eq!(doc["jwks_uri"], "http://localhost:8080/keys");
        assert_eq!(doc["authorization_endpoint"], "");
        assert_eq!(doc["response_types_supported"], json!(["id_token"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256", "ES384"])
        );

        // Behind a TLS-terminating proxy the URLs are https and name the forwarded host.
        let (_, body) = get(
            &router,
            "/.well-known/openid-configuration",
            &[
                ("host", "127.0.0.1"),
                ("x-forwarded-host", "oidc.example.org"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["issuer"], "https://oidc.example.org");

        let (status, body) = get(
            &router,
            "/.well-known/openid-configuration",
            &[("host", "evil.example")],
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body, "domain \"evil.example\" is not allowed\n");
    }

    #[tokio::test]
    async fn prefix_issuer_and_keys() {
        let mut o = options();
        o.path_prefix = "/oidc".to_owned();
        o.jwt_issuer = Some("https://issuer.example.org".to_owned());
        o.allow_insecure_scheme = false;
        let st = state();
        let router = router(o, Arc::clone(&st), false);
        let (_, body) = get(
            &router,
            "/oidc/.well-known/openid-configuration",
            &[("host", "oidc.example.org")],
        )
        .await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["issuer"], "https://issuer.example.org");
        assert_eq!(doc["jwks_uri"], "https://oidc.example.org/oidc/keys");

        let (status, body) = get(&router, "/oidc/keys", &[]).await;
        assert_eq!((status, body.as_str()), (500, "document not available\n"));
        let key = PublicKey::Ec {
            curve: EcCurve::P256,
            x: vec![3; 32],
            y: vec![4; 32],
        };
        st.set(vec![JwtAuthority {
            key_id: "kid-1".to_owned(),
            public_key: key.to_spki_der(),
            expires_at: None,
        }]);
        let (status, body) = get(&router, "/oidc/keys", &[]).await;
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["keys"][0]["kid"], "kid-1");
        assert_eq!(doc["keys"][0]["use"], "sig");
        assert_eq!(get(&router, "/keys", &[]).await.0, 404);
        assert!(st.ready().0 && st.live().0);
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(domain_of("example.org:443"), "example.org");
        assert_eq!(domain_of("example.org"), "example.org");
        assert_eq!(domain_of("[::1]:80"), "::1");
    }
}
