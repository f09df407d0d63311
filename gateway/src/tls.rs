//! TLS: the trust the gateway places in the hub (a CA file, a pinned certificate, or
//! the platform's roots), DICOM TLS on the listener, and operator-readable messages for
//! TLS failures.
//!
//! Only the aws-lc-rs provider is used, passed explicitly, so nothing depends on a
//! process-wide default provider being installed.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// A TLS setting could not be turned into a working configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{setting} {path}: {reason}")]
    File {
        /// The configuration key naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificates, key or protocol settings.
    #[error("{setting}: {source}")]
    Rustls {
        /// The configuration key concerned.
        setting: &'static str,
        /// The cause.
        source: rustls::Error,
    },
    /// A certificate verifier could not be built from the roots.
    #[error("{setting}: {reason}")]
    Verifier {
        /// The configuration key concerned.
        setting: &'static str,
        /// The cause.
        reason: String,
    },
}

/// The one crypto provider the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// All certificates of a PEM file (at least one).
pub fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A root store holding exactly the certificates of a PEM file.
fn load_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(setting, path)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::Rustls { setting, source })?;
    }
    Ok(roots)
}

/// The rustls client configuration for the hub, or `None` when neither `hub_ca_file`
/// nor `hub_cert_sha256` is set (then the HTTP client's platform/built-in roots apply).
pub fn hub_client_config(config: &Config) -> Result<Option<ClientConfig>, TlsError> {
    let pin = config.hub_cert_pin();
    let ca = config.hub_ca_path();
    if pin.is_none() && ca.is_none() {
        return Ok(None);
    }
    let provider = provider();
    let chain = match ca {
        Some(path) => {
            let roots = Arc::new(load_roots("hub_ca_file", path)?);
            let verifier =
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Verifier {
                        setting: "hub_ca_file",
                        reason: e.to_string(),
                    })?;
            Some(verifier)
        }
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (pin, chain) {
        (Some(pin), chain) => Arc::new(PinnedCertVerifier::new(pin, chain, Arc::clone(&provider))),
        (None, Some(chain)) => chain,
        (None, None) => return Ok(None),
    };
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            setting: "hub TLS",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself (the preconfigured
    // one is used as is).
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tls))
}

/// The rustls server configuration for DICOM TLS on the listener, or `None` when it is
/// off. With `dicom_tls_ca_file`, clients must present a certificate from those CAs.
pub fn dicom_server_config(config: &Config) -> Result<Option<ServerConfig>, TlsError> {
    let Some((cert_path, key_path, ca_path)) = config.dicom_tls_paths() else {
        return Ok(None);
    };
    let certs = load_certs("dicom_tls_cert_file", cert_path)?;
    let key = load_key("dicom_tls_key_file", key_path)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            setting: "DICOM TLS",
            source,
        })?;
    let builder = match ca_path {
        Some(path) => {
            let roots = Arc::new(load_roots("dicom_tls_ca_file", path)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Verifier {
                    setting: "dicom_tls_ca_file",
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            setting: "dicom_tls_cert_file / dicom_tls_key_file",
            source,
        })?;
    Ok(Some(server))
}

/// Hex SHA-256 of a DER certificate, as `hub_cert_sha256` expects it.
pub fn cert_sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Trusts the hub's leaf certificate by its SHA-256 (and, when a CA verifier is given,
/// also requires the usual chain and name checks). Handshake signatures are always
/// verified against the leaf's public key, so a pinned certificate is only accepted
/// from a peer holding its private key.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: [u8; 32],
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    /// A verifier for this pin, optionally also requiring a chain to `chain`'s roots.
    pub fn new(
        pin: [u8; 32],
        chain: Option<Arc<WebPkiServerVerifier>>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        PinnedCertVerifier {
            pin,
            chain,
            provider,
        }
    }
}

/// The hub presented a certificate other than the pinned one.
#[derive(Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// SHA-256 (hex) configured.
    pub expected: String,
    /// SHA-256 (hex) of the certificate presented.
    pub presented: String,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate SHA-256 {} does not match the pinned {}",
            self.presented, self.expected
        )
    }
}

// rustls shows an "other" certificate error with `Debug`: make that read like Display.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl StdError for PinMismatch {}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if presented != self.pin {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    expected: hex::encode(self.pin),
                    presented: hex::encode(presented),
                })),
            )));
        }
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls error somewhere in an error's chain. `io::Error::source` skips the error
/// it wraps (it returns that error's source), so wrapped errors are looked into too.
pub fn find_rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = find_rustls_error(inner) {
                    return Some(found);
                }
            }
        }
        current = err.source();
    }
    None
}

/// An operator-readable message for a TLS failure talking to the hub.
pub fn describe_hub_tls_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => format!(
            "hub certificate not trusted: {} (check hub_ca_file / hub_cert_sha256)",
            other.0
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            format!("hub certificate not trusted: {e} (check hub_ca_file / hub_cert_sha256)")
        }
        _ => format!(
            "TLS connection to the hub failed: {e} (check that hub_url is the hub's HTTPS address)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_name_the_settings_to_check() {
        let m = describe_hub_tls_error(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(m.starts_with("hub certificate not trusted: "), "{m}");
        assert!(m.contains("UnknownIssuer"), "{m}");
        assert!(m.contains("hub_ca_file / hub_cert_sha256"), "{m}");
        let pin = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(PinMismatch {
                expected: "aa".into(),
                presented: "bb".into(),
            }),
        )));
        let m = describe_hub_tls_error(&pin);
        assert!(
            m.contains("certificate SHA-256 bb does not match the pinned aa"),
            "{m}"
        );
    }

    #[test]
    fn a_rustls_error_is_found_inside_io_errors() {
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(wrapped);
        assert!(matches!(
            find_rustls_error(&outer),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(find_rustls_error(&plain).is_none());
    }
}
