//! The HTTPS identity: a certificate and key from the config, or a self-signed pair made
//! on first start and kept in `<data_dir>/tls/` (key 0600), and the rustls server config
//! built from it. Also the fingerprints the owner checks: SHA-256 of the certificate (what
//! browsers show) and base64 SHA-256 of its public key (what Chromium's
//! `--ignore-certificate-errors-spki-list` pins).
//!
//! It owns no listener: `web::server` binds one with the config made here.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why the HTTPS identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("tls: {0}")]
    Config(String),
}

/// A certificate chain with its key, ready for rustls.
#[derive(Debug)]
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate, uppercase hex pairs joined by `:`.
    pub fingerprint_sha256: String,
    /// Base64 of SHA-256 of the leaf's SubjectPublicKeyInfo, when the key can be read for it.
    pub spki_sha256_base64: Option<String>,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            fingerprint_sha256: self.fingerprint_sha256.clone(),
            spki_sha256_base64: self.spki_sha256_base64.clone(),
            cert_path: self.cert_path.clone(),
        }
    }
}

impl TlsIdentity {
    /// Reads `cert` and `key` when given, else the self-signed pair in `data_dir/tls/`,
    /// making it first when absent (valid for `names` and every IP literal the owner may
    /// type does not matter: the owner pins the fingerprint). Blocking: file I/O and key
    /// generation.
    pub fn load_or_create(
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
        names: &[String],
    ) -> Result<TlsIdentity, TlsError> {
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
            (None, None) => {
                let dir = data_dir.join("tls");
                let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !c.exists() || !k.exists() {
                    generate(&dir, &c, &k, names)?;
                    tracing::info!(cert = %c.display(), "made a self-signed certificate");
                }
                (c, k)
            }
            _ => {
                return Err(TlsError::Config(
                    "set both tls.cert and tls.key, or neither for a self-signed pair".into(),
                ))
            }
        };
        Self::read(&cert, &key)
    }

    fn read(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, TlsError> {
        let file_err = |path: &Path, reason: String| TlsError::File {
            path: path.to_path_buf(),
            reason,
        };
        let cert_pem = std::fs::read(cert_path).map_err(|e| file_err(cert_path, e.to_string()))?;
        let key_pem = std::fs::read(key_path).map_err(|e| file_err(key_path, e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert_path, e.to_string()))?;
        let Some(leaf) = certs.first() else {
            return Err(file_err(cert_path, "no certificate in it".into()));
        };
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| file_err(key_path, e.to_string()))?
            .ok_or_else(|| file_err(key_path, "no private key in it".into()))?;
        let spki_sha256_base64 = std::str::from_utf8(&key_pem)
            .ok()
            .and_then(|pem| rcgen::KeyPair::from_pem(pem).ok())
            .map(|k| {
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(k.public_key_der()))
            });
        Ok(TlsIdentity {
            fingerprint_sha256: colon_hex(&Sha256::digest(leaf.as_ref())),
            spki_sha256_base64,
            certs,
            key,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The rustls server config (ring provider, TLS 1.2 and 1.3, HTTP/1.1).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.cert_path.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Makes a self-signed ECDSA P-256 pair valid for `names`, the key written 0600.
fn generate(dir: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TlsError::File {
            path,
            reason: e.to_string(),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut sans: Vec<String> = names.to_vec();
    sans.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    let pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(sans).map_err(|e| TlsError::Generate(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "archipelago node");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let certificate = params
        .self_signed(&pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(io(key))?;
    f.write_all(pair.serialize_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(key))?;
    std::fs::write(cert, certificate.pem()).map_err(io(cert))?;
    Ok(())
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "node.local".to_string()];
        let first = TlsIdentity::load_or_create(None, None, dir.path(), &names).unwrap();
        let key = dir.path().join("tls/key.pem");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.fingerprint_sha256.len(), 32 * 3 - 1);
        assert!(first.spki_sha256_base64.is_some());
        first.server_config().unwrap();
        let again = TlsIdentity::load_or_create(None, None, dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint_sha256, again.fingerprint_sha256);
        // Given files are read as they are.
        let cert = dir.path().join("tls/cert.pem");
        let given =
            TlsIdentity::load_or_create(Some(&cert), Some(&key), Path::new("/nonexistent"), &[])
                .unwrap();
        assert_eq!(given.fingerprint_sha256, first.fingerprint_sha256);
        assert!(TlsIdentity::load_or_create(Some(&cert), None, dir.path(), &[]).is_err());
    }
}
