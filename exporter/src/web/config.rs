//! The web configuration file in the Prometheus exporter-toolkit's format
//! (`--web.config.file`, the toolkit's `docs/web-configuration.md`), so operators reuse the files
//! they already have for node_exporter and friends.
//!
//! Two stages: the file is read into [`RawWebConfig`]-shaped serde structs that deny unknown
//! keys (the error names the key and its line), then checked into a [`WebConfig`]. Keys that the
//! format defines but proclens does not implement are refused by name, never ignored: an
//! operator who asked for `cipher_suites` must not silently get the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::WebError;

/// The headers `http_server_config.headers` may set, with the values allowed for the ones that
/// are enumerations (empty: any value). Same list as the exporter-toolkit's, so a file valid
/// here is valid there.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A checked web configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Serve HTTPS with these settings; `None`: plain HTTP (basic auth and headers still apply).
    pub tls: Option<TlsSettings>,
    /// Offer HTTP/2 (through ALPN, so only with TLS).
    pub http2: bool,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Users allowed in, each with their bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
}

/// Where a PEM document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file (relative paths in the file are resolved against the file's directory).
    File(PathBuf),
    /// The document itself, written inline in the configuration.
    Inline(String),
}

/// Whether and how clients prove who they are with a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    NoClientCert,
    /// A client certificate is optional, but one that is given must verify against the CA.
    VerifyClientCertIfGiven,
    /// Every client must present a certificate that verifies against the CA.
    RequireAndVerifyClientCert,
}

/// A TLS protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// `tls_server_config`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM).
    pub cert: PemSource,
    /// The server's private key (PEM).
    pub key: PemSource,
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// CA certificates that client certificates must chain to (PEM); set exactly when
    /// `client_auth` verifies certificates.
    pub client_ca: Option<PemSource>,
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// Highest version accepted.
    pub max_version: TlsVersion,
    /// Pick the cipher suite by the server's order instead of the client's.
    pub prefer_server_cipher_suites: bool,
}

/// The file as written. Every key of the format is listed, so `deny_unknown_fields` catches
/// typos while the keys proclens does not implement are refused with their own message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_norway::Value>,
}

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
}

/// `http_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

impl WebConfig {
    /// Reads and checks a web configuration file.
    pub fn load(path: &Path) -> Result<WebConfig, WebError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        WebConfig::parse(&text, base).map_err(|message| WebError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks a file's text; relative file names are resolved against `base` (the
    /// file's directory, as the exporter-toolkit does). The error names the key at fault.
    pub fn parse(text: &str, base: &Path) -> Result<WebConfig, String> {
        // A file with no document (empty, or only comments) is a valid, empty configuration.
        // Parsed straight into the struct, not through an Option, which would drop the line
        // from the error.
        let raw: RawWebConfig = match serde_norway::from_str(text) {
            Ok(raw) => raw,
            Err(_) if matches!(serde_norway::from_str(text), Ok(serde_norway::Value::Null)) => {
                RawWebConfig::default()
            }
            Err(e) => return Err(e.to_string()),
        };
        if is_set(raw.rate_limit.as_ref()) {
            return Err(unsupported(
                "rate_limit",
                "put a rate-limiting proxy in front",
            ));
        }
        let http = raw.http_server_config.unwrap_or_default();
        let tls = match raw.tls_server_config {
            Some(tls) => check_tls(tls, base)?,
            None => None,
        };
        Ok(WebConfig {
            tls,
            http2: http.http2.unwrap_or(true),
            headers: check_headers(http.headers.unwrap_or_default())?,
            users: check_users(raw.basic_auth_users.unwrap_or_default())?,
        })
    }
}

/// Whether a key the format defines but proclens does not implement was given a value (a null,
/// an empty list or an empty map asks for the default, which is what proclens does anyway).
fn is_set(value: Option<&serde_norway::Value>) -> bool {
    match value {
        None | Some(serde_norway::Value::Null) => false,
        Some(serde_norway::Value::Sequence(items)) => !items.is_empty(),
        Some(serde_norway::Value::Mapping(map)) => !map.is_empty(),
        Some(_) => true,
    }
}

fn unsupported(key: &str, instead: &str) -> String {
    format!(
        "{key}: valid in the exporter-toolkit's format but not supported by proclens-exporter \
         ({instead})"
    )
}

/// The Go toolkit treats an empty string as unset; so does proclens.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// One PEM document given either inline (`inline_key`) or as a file (`file_key`), not both.
fn pem_source(
    inline: Option<String>,
    file: Option<String>,
    inline_key: &str,
    file_key: &str,
    base: &Path,
) -> Result<Option<PemSource>, String> {
    match (non_empty(inline), non_empty(file)) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: {inline_key} and {file_key} are both set; give one"
        )),
        (Some(text), None) => Ok(Some(PemSource::Inline(text))),
        (None, Some(file)) => Ok(Some(PemSource::File(base.join(file)))),
        (None, None) => Ok(None),
    }
}

fn check_tls(raw: RawTls, base: &Path) -> Result<Option<TlsSettings>, String> {
    for (key, value, instead) in [
        (
            "cipher_suites",
            &raw.cipher_suites,
            "rustls's default TLS 1.2 suites apply",
        ),
        (
            "curve_preferences",
            &raw.curve_preferences,
            "rustls's default groups apply",
        ),
        (
            "client_allowed_sans",
            &raw.client_allowed_sans,
            "issue client certificates from a dedicated client_ca_file",
        ),
    ] {
        if is_set(value.as_ref()) {
            return Err(unsupported(&format!("tls_server_config.{key}"), instead));
        }
    }
    let cert = pem_source(raw.cert, raw.cert_file, "cert", "cert_file", base)?;
    let key = pem_source(raw.key, raw.key_file, "key", "key_file", base)?;
    let client_ca = pem_source(
        raw.client_ca,
        raw.client_ca_file,
        "client_ca",
        "client_ca_file",
        base,
    )?;
    let client_auth_type = non_empty(raw.client_auth_type);
    // As in the toolkit: TLS is on when any of these is given, and then it must be complete.
    if cert.is_none() && key.is_none() && client_ca.is_none() && client_auth_type.is_none() {
        return Ok(None);
    }
    let cert = cert.ok_or("tls_server_config: missing one of cert or cert_file")?;
    let key = key.ok_or("tls_server_config: missing one of key or key_file")?;
    let client_auth = match client_auth_type.as_deref() {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(unsupported(
                &format!("tls_server_config.client_auth_type {other:?}"),
                "it accepts client certificates nobody verifies; use RequireAndVerifyClientCert \
                 with client_ca_file",
            ))
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ))
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(
                "tls_server_config: client_ca_file is set but client_auth_type is \
                        NoClientCert; set client_auth_type to RequireAndVerifyClientCert"
                    .into(),
            )
        }
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(
                "tls_server_config: client_auth_type verifies client certificates, which needs \
                 client_ca_file (or client_ca)"
                    .into(),
            )
        }
        _ => {}
    }
    let min_version = tls_version("min_version", raw.min_version)?.unwrap_or(TlsVersion::Tls12);
    let max_version = tls_version("max_version", raw.max_version)?.unwrap_or(TlsVersion::Tls13);
    if min_version > max_version {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        client_ca,
        min_version,
        max_version,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

fn tls_version(key: &str, value: Option<String>) -> Result<Option<TlsVersion>, String> {
    match non_empty(value).as_deref() {
        None => Ok(None),
        Some("TLS12") => Ok(Some(TlsVersion::Tls12)),
        Some("TLS13") => Ok(Some(TlsVersion::Tls13)),
        Some(old @ ("TLS10" | "TLS11")) => Err(unsupported(
            &format!("tls_server_config.{key} {old}"),
            "rustls speaks only TLS12 and TLS13",
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key}: {other:?} is not one of TLS12, TLS13"
        )),
    }
}

fn check_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut checked = Vec::new();
    for (name, value) in headers {
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(&name))
        else {
            let known: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers: {name:?} can not be configured (only {})",
                known.join(", ")
            ));
        };
        // "Unset if blank", as the format says.
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers.{canonical}: {value:?} is not one of {}",
                allowed.join(", ")
            ));
        }
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            format!("http_server_config.headers.{canonical}: {value:?} is not a valid header value")
        })?;
        checked.push((HeaderName::from_static(lowercase(canonical)), header_value));
    }
    Ok(checked)
}

/// The lowercase spelling `HeaderName::from_static` wants, for the names in [`ALLOWED_HEADERS`].
fn lowercase(name: &str) -> &'static str {
    match name {
        "Strict-Transport-Security" => "strict-transport-security",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-Frame-Options" => "x-frame-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "content-security-policy",
    }
}

fn check_users(users: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(format!(
                "basic_auth_users: user {user:?} contains ':', which basic auth cannot send"
            ));
        }
        if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            return Err(format!(
                "basic_auth_users.{user}: not a bcrypt hash ({e}); make one with \
                 `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
            ));
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/proclens"))
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        for text in [
            "",
            "\n",
            "---\n",
            "# nothing\n",
            "tls_server_config:\nbasic_auth_users:\n",
        ] {
            let config = parse(text).unwrap();
            assert_eq!(config.tls, None, "{text:?}");
            assert!(config.users.is_empty() && config.headers.is_empty() && config.http2);
        }
    }

    #[test]
    fn full_file() {
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\n  prefer_server_cipher_suites: false\n\
             http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n    X-XSS-Protection: ''\n\
             basic_auth_users:\n  alice: '{HASH}'\n"
        );
        let config = parse(&text).unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, PemSource::File("/etc/proclens/server.crt".into()));
        assert_eq!(tls.key, PemSource::File("/abs/server.key".into()));
        assert_eq!(
            tls.client_ca,
            Some(PemSource::File("/etc/proclens/ca.crt".into()))
        );
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert!(!tls.prefer_server_cipher_suites);
        assert!(!config.http2);
        let headers: Vec<(&str, &str)> = config
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("strict-transport-security", "max-age=31536000"),
                ("x-frame-options", "deny")
            ]
        );
        assert_eq!(config.users.get("alice").map(String::as_str), Some(HASH));
    }

    #[test]
    fn inline_pem_and_defaults() {
        let config = parse(
            "tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key_file: k\n",
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert!(matches!(tls.cert, PemSource::Inline(ref t) if t.contains("BEGIN")));
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert!(tls.prefer_server_cipher_suites);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        for (text, key, line) in [
            (
                "tls_server_config:\n  cert_file: a\n  key_fille: b\n",
                "`key_fille`",
                "line 3",
            ),
            ("http_server_config:\n  header: {}\n", "`header`", "line 2"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key) && err.contains(line), "{err}");
        }
        // At the top level the YAML parser gives no line (it would always be 1), only the key.
        let err = parse("basic_auth_user:\n  a: b\n").unwrap_err();
        assert!(err.contains("unknown field `basic_auth_user`"), "{err}");
    }

    #[test]
    fn unsupported_keys_are_refused_by_name() {
        for (text, key) in [
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "tls_server_config.cipher_suites",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [X25519]\n",
                "tls_server_config.curve_preferences",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_allowed_sans: [x]\n",
                "tls_server_config.client_allowed_sans",
            ),
            ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit"),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
                "min_version TLS11",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n",
                "RequireAnyClientCert",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key) && err.contains("not supported"), "{err}");
        }
        // An empty list asks for the default, which is what proclens does.
        assert!(
            parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: []\n")
                .is_ok()
        );
    }

    #[test]
    fn incomplete_or_contradictory_tls_is_refused() {
        for (text, wanted) in [
            ("tls_server_config:\n  cert_file: a\n", "missing one of key or key_file"),
            ("tls_server_config:\n  key_file: a\n", "missing one of cert or cert_file"),
            (
                "tls_server_config:\n  cert: x\n  cert_file: a\n  key_file: b\n",
                "cert and cert_file are both set",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "\"Sometimes\" is not one of",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "min_version is above max_version",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn headers_are_checked_like_the_toolkit() {
        let err = parse("http_server_config:\n  headers:\n    Server: x\n").unwrap_err();
        assert!(err.contains("\"Server\" can not be configured"), "{err}");
        let err =
            parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert!(
            err.contains("X-Frame-Options") && err.contains("deny, sameorigin"),
            "{err}"
        );
        let err = parse("http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n")
            .unwrap_err();
        assert!(err.contains("nosniff"), "{err}");
        let err =
            parse("http_server_config:\n  headers:\n    Content-Security-Policy: \"a\\nb\"\n")
                .unwrap_err();
        assert!(err.contains("not a valid header value"), "{err}");
    }

    #[test]
    fn users_need_bcrypt_hashes() {
        let err = parse("basic_auth_users:\n  alice: hunter2\n").unwrap_err();
        assert!(
            err.contains("basic_auth_users.alice") && err.contains("bcrypt"),
            "{err}"
        );
        let err = parse(&format!("basic_auth_users:\n  'a:b': '{HASH}'\n")).unwrap_err();
        assert!(err.contains("contains ':'"), "{err}");
    }

    #[test]
    fn bad_yaml_never_panics() {
        for text in [
            "[",
            "basic_auth_users: [1, 2]",
            "tls_server_config: 3",
            "\u{0}",
            "- a\n- b",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
