//! Operator controls from a web configuration file in the Prometheus exporter-toolkit's format
//! (`--web.config.file`): TLS ([`tls`]), basic auth ([`auth`]) and extra response headers.
//!
//! [`config::WebConfig`] is the checked file; [`Guard`] wraps every route of the router (the
//! toolkit protects all of them, `/healthz` included) to check credentials and add the headers;
//! [`tls::serve`] serves the guarded router over HTTPS. Without a web configuration none of
//! this is in the path.

pub mod auth;
pub mod config;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use auth::BasicAuth;
use config::WebConfig;

/// A web configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The file could not be read.
    #[error("cannot read web config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid (the message names the key).
    #[error("web config {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A certificate or key named by the file cannot be used.
    #[error("{what}: {message}")]
    Tls {
        /// The key and file at fault.
        what: String,
        /// Why.
        message: String,
    },
}

/// What every request passes through: the credentials check and the extra headers.
#[derive(Debug)]
pub struct Guard {
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<Arc<BasicAuth>>,
}

impl Guard {
    /// The guard a web configuration asks for.
    pub fn new(config: &WebConfig) -> Guard {
        Guard {
            headers: config.headers.clone(),
            auth: BasicAuth::new(config.users.clone()).map(Arc::new),
        }
    }

    /// Whether requests need basic-auth credentials.
    pub fn requires_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// `router` with every route (and the fallback) behind this guard.
    pub fn protect(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self),
            guard_request,
        ))
    }
}

async fn guard_request(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let allowed = match &guard.auth {
        None => true,
        Some(auth) => auth
            .authorize(request.headers().get(header::AUTHORIZATION))
            .await
            .allowed(),
    };
    let mut response = if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response()
    };
    // On every answer, 401 included, as the toolkit does.
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use base64::Engine;
    use std::path::Path;
    use tower::ServiceExt;

    fn app(config: &str) -> Router {
        let config = WebConfig::parse(config, Path::new("/")).unwrap();
        Guard::new(&config).protect(Router::new().route("/metrics", get(|| async { "m\n" })))
    }

    async fn get_status(app: &Router, path: &str, auth: Option<&str>) -> Response {
        let mut request = Request::builder().uri(path);
        if let Some(auth) = auth {
            let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
            request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        app.clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn headers_are_added_to_every_answer() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let app = app(&format!(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
             X-Content-Type-Options: nosniff\nbasic_auth_users:\n  alice: '{hash}'\n"
        ));
        for (auth, status) in [(Some("alice:pw"), 200), (None, 401)] {
            let response = get_status(&app, "/metrics", auth).await;
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-frame-options"], "deny");
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        }
    }

    #[tokio::test]
    async fn every_route_needs_credentials() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let app = app(&format!("basic_auth_users:\n  alice: '{hash}'\n"));
        for path in ["/metrics", "/nothing-here"] {
            for auth in [None, Some("alice:wrong"), Some("bob:pw")] {
                let response = get_status(&app, path, auth).await;
                assert_eq!(response.status(), 401, "{path} {auth:?}");
                assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Basic");
            }
        }
        assert_eq!(
            get_status(&app, "/metrics", Some("alice:pw"))
                .await
                .status(),
            200
        );
        assert_eq!(
            get_status(&app, "/nothing-here", Some("alice:pw"))
                .await
                .status(),
            404
        );
    }

    #[tokio::test]
    async fn no_users_means_no_auth() {
        let app = app("http_server_config:\n  headers:\n    X-XSS-Protection: '1'\n");
        let response = get_status(&app, "/metrics", None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-xss-protection"], "1");
    }
}
