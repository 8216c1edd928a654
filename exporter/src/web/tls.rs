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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::pki_types::ServerName;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM.
    struct Pki {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    fn settings(pki: &Pki, client_auth: ClientAuth) -> TlsSettings {
        TlsSettings {
            cert: PemSource::Inline(pki.server_cert.clone()),
            key: PemSource::Inline(pki.server_key.clone()),
            client_ca: (client_auth != ClientAuth::NoClientCert)
                .then(|| PemSource::Inline(pki.ca.clone())),
            client_auth,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            prefer_server_cipher_suites: true,
        }
    }

    /// A client trusting the test CA, presenting the client certificate when `identify`.
    fn client(pki: &Pki, identify: bool) -> Arc<rustls::ClientConfig> {
        client_speaking(pki, identify, rustls::DEFAULT_VERSIONS)
    }

    /// As [`client`], speaking only `versions`.
    fn client_speaking(
        pki: &Pki,
        identify: bool,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(if identify {
            let chain = vec![CertificateDer::from_pem_slice(pki.client_cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        })
    }

    /// Serves a one-route app with `config` on a free port until the sender is dropped.
    async fn start(config: Arc<ServerConfig>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/hello", get(|| async { "hello\n" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, config, app, true, async {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    /// One HTTP/1.1 GET /hello over TLS; the raw answer, or why there was none.
    async fn hello(
        address: SocketAddr,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<String, String> {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::IpAddress(address.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn serves_https_and_offers_h2() {
        let pki = pki();
        let config = server_config(&settings(&pki, ClientAuth::NoClientCert), true).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let (address, _stop) = start(config).await;
        let answer = hello(address, client(&pki, false)).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello\n"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn client_certificates_are_required_and_verified() {
        let pki = pki();
        let config = server_config(
            &settings(&pki, ClientAuth::RequireAndVerifyClientCert),
            true,
        )
        .unwrap();
        let (address, _stop) = start(config).await;
        let answer = hello(address, client(&pki, true)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        let refused = hello(address, client(&pki, false)).await;
        assert!(
            refused.as_ref().map_or(true, |a| !a.contains("200 OK")),
            "{refused:?}"
        );
        // A certificate from another CA is refused too.
        let other = self::pki();
        let stranger = Pki {
            ca: pki.ca.clone(),
            ..other
        };
        let refused = hello(address, client(&stranger, true)).await;
        assert!(
            refused.as_ref().map_or(true, |a| !a.contains("200 OK")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn optional_client_certificates() {
        let pki = pki();
        let config =
            server_config(&settings(&pki, ClientAuth::VerifyClientCertIfGiven), true).unwrap();
        let (address, _stop) = start(config).await;
        for identify in [false, true] {
            let answer = hello(address, client(&pki, identify)).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
    }

    #[tokio::test]
    async fn versions_and_alpn_follow_the_settings() {
        let pki = pki();
        let mut only13 = settings(&pki, ClientAuth::NoClientCert);
        only13.min_version = TlsVersion::Tls13;
        let config = server_config(&only13, false).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(config.ignore_client_order);
        let (address, _stop) = start(config).await;
        let tls13 = client_speaking(&pki, false, &[&rustls::version::TLS13]);
        let answer = hello(address, tls13).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        let tls12 = client_speaking(&pki, false, &[&rustls::version::TLS12]);
        let refused = hello(address, tls12).await;
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn unusable_certificates_are_named() {
        let pki = pki();
        let mut missing = settings(&pki, ClientAuth::NoClientCert);
        missing.cert = PemSource::File("/nonexistent/server.crt".into());
        let err = server_config(&missing, true).unwrap_err().to_string();
        assert!(
            err.starts_with("tls_server_config.cert_file /nonexistent/server.crt: "),
            "{err}"
        );

        let mut not_pem = settings(&pki, ClientAuth::NoClientCert);
        not_pem.cert = PemSource::Inline("hello".into());
        let err = server_config(&not_pem, true).unwrap_err().to_string();
        assert!(
            err.contains("tls_server_config.cert (inline)") && err.contains("no PEM"),
            "{err}"
        );

        let mut no_key = settings(&pki, ClientAuth::NoClientCert);
        no_key.key = PemSource::Inline(pki.server_cert.clone());
        let err = server_config(&no_key, true).unwrap_err().to_string();
        assert!(err.contains("tls_server_config.key (inline)"), "{err}");

        let mut wrong_key = settings(&pki, ClientAuth::NoClientCert);
        wrong_key.key = PemSource::Inline(pki.client_key.clone());
        let err = server_config(&wrong_key, true).unwrap_err().to_string();
        assert!(err.contains("cert_file and key_file"), "{err}");

        let mut bad_ca = settings(&pki, ClientAuth::RequireAndVerifyClientCert);
        bad_ca.client_ca = Some(PemSource::Inline(String::new()));
        let err = server_config(&bad_ca, true).unwrap_err().to_string();
        assert!(
            err.contains("tls_server_config.client_ca (inline)"),
            "{err}"
        );
    }
}
