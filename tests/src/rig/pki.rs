//! [`TestPki`]: a certificate authority and a server certificate for `localhost` and
//! `127.0.0.1`, made at test time with rcgen (no openssl needed), written as PEM files for the
//! exporter's web config and Prometheus's `tls_config`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A fresh CA and a server certificate it signed, as PEM text and files.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA's certificate (PEM): what a client trusts.
    pub ca_pem: String,
    /// The CA's certificate file.
    pub ca_file: PathBuf,
    /// The server's certificate file (PEM).
    pub cert_file: PathBuf,
    /// The server's private key file (PEM).
    pub key_file: PathBuf,
}

impl TestPki {
    /// Makes a CA named `name` and a server certificate, and writes `<name>-ca.pem`,
    /// `<name>-cert.pem` and `<name>-key.pem` into `dir`.
    pub fn generate(dir: &Path, name: &str) -> Result<TestPki> {
        let ca_key = KeyPair::generate().context("generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("proclens test CA {name}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).context("self-sign the CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().context("generate the server key")?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&server_key, &issuer)
            .context("sign the server certificate")?;

        let pki = TestPki {
            ca_pem: ca_cert.pem(),
            ca_file: dir.join(format!("{name}-ca.pem")),
            cert_file: dir.join(format!("{name}-cert.pem")),
            key_file: dir.join(format!("{name}-key.pem")),
        };
        for (path, text) in [
            (&pki.ca_file, pki.ca_pem.clone()),
            (&pki.cert_file, cert.pem()),
            (&pki.key_file, server_key.serialize_pem()),
        ] {
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(pki)
    }
}
