//! HTTPS: a rustls [`ServerConfig`] built from [`TlsSettings`] (ring provider), and an accept
//! loop that serves the router over it with hyper (HTTP/1.1, and HTTP/2 when ALPN picks it).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::config::{ClientAuth, PemSource, TlsSettings, TlsVersion};
use super::WebError;

/// How long a client may take to finish the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (descriptors exhausted, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Reads the certificates and keys and builds the server's TLS configuration; the error names
/// the key (`cert_file`, ...) and file at fault.
pub fn server_config(settings: &TlsSettings, http2: bool) -> Result<Arc<ServerConfig>, WebError> {
    // ring, deprecated in rustls 0.23.48 for lacking post-quantum key exchange: aws-lc-rs has it
    // but needs cmake and nasm to build, which the hosts and CI here do not have. X25519 and the
    // NIST curves remain sound against classical attackers; revisit when aws-lc-rs builds here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, version)| version)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| tls_error("tls_server_config.min_version", e))?;
    let verifier = match (settings.client_auth, &settings.client_ca) {
        (ClientAuth::NoClientCert, _) | (_, None) => WebPkiClientVerifier::no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error(&describe(ca, "client_ca_file"), e))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| tls_error(&describe(ca, "client_ca_file"), e))?
        }
    };
    let chain = certificates(&settings.cert, "cert_file")?;
    let key = private_key(&settings.key)?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("tls_server_config: cert_file and key_file", e))?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// `tls_server_config.<key>` and the file, for messages.
fn describe(source: &PemSource, key: &str) -> String {
    match source {
        PemSource::File(path) => format!("tls_server_config.{key} {}", path.display()),
        PemSource::Inline(_) => format!("tls_server_config.{} (inline)", inline_key(key)),
    }
}

/// The inline key matching a `*_file` key (`cert_file` → `cert`).
fn inline_key(key: &str) -> &str {
    key.strip_suffix("_file").unwrap_or(key)
}

fn tls_error(what: &str, error: impl std::fmt::Display) -> WebError {
    WebError::Tls {
        what: what.to_string(),
        message: error.to_string(),
    }
}

fn pem_bytes(source: &PemSource, key: &str) -> Result<Vec<u8>, WebError> {
    match source {
        PemSource::Inline(text) => Ok(text.as_bytes().to_vec()),
        PemSource::File(path) => {
            std::fs::read(path).map_err(|e| tls_error(&describe(source, key), e))
        }
    }
}

fn certificates(source: &PemSource, key: &str) -> Result<Vec<CertificateDer<'static>>, WebError> {
    let bytes = pem_bytes(source, key)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&describe(source, key), e))?;
    if certs.is_empty() {
        return Err(tls_error(
            &describe(source, key),
            "no PEM CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

fn private_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, WebError> {
    let bytes = pem_bytes(source, "key_file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| tls_error(&describe(source, "key_file"), e))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then lets open connections
/// finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    http2: bool,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if !http2 {
                builder = builder.http1_only();
            }
            let connection = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}
