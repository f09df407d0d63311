//! Support for the TLS and key tests: certificates made on the spot with rcgen, and a
//! minimal hub stand-in (HTTP/1.1 over TLS or plain TCP) that checks the gateway key
//! and answers STOW-RS like the hub does. It is a test peer for the gateway's client
//! side only; the real hub is tested end to end in the `tests` crate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A certificate authority, with its certificate written to `<dir>/<name>-ca.pem`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem_path: PathBuf,
}

/// A certificate with its key, as PEM files, plus its DER for pinning.
pub struct TestCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
}

impl TestCert {
    /// Hex SHA-256 of the DER certificate (what `hub_cert_sha256` takes).
    pub fn sha256_hex(&self) -> String {
        gateway::tls::cert_sha256_hex(&self.der)
    }
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, issuer.pem()).expect("write CA");
        TestCa { issuer, pem_path }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn issue(&self, dir: &Path, file_stem: &str, names: &[&str]) -> TestCert {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        write_pair(
            dir,
            file_stem,
            cert.pem(),
            key.serialize_pem(),
            cert.der().to_vec(),
        )
    }
}

/// A self-signed certificate for `names`.
pub fn self_signed(dir: &Path, file_stem: &str, names: &[&str]) -> TestCert {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    write_pair(
        dir,
        file_stem,
        cert.pem(),
        key.serialize_pem(),
        cert.der().to_vec(),
    )
}

fn write_pair(dir: &Path, stem: &str, cert_pem: String, key_pem: String, der: Vec<u8>) -> TestCert {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, cert_pem).expect("write certificate");
    std::fs::write(&key_path, key_pem).expect("write key");
    TestCert {
        cert_path,
        key_path,
        der,
    }
}

/// What the stand-in hub saw.
#[derive(Default)]
pub struct HubLog {
    /// SOP Instance UIDs stored (acknowledged in ReferencedSOPSequence).
    pub stored: Mutex<BTreeSet<String>>,
    /// Study UIDs reported complete (with the right key).
    pub completed: Mutex<Vec<String>>,
    /// STOW-RS requests accepted.
    pub stow_requests: AtomicUsize,
    /// Requests refused for a missing or wrong key.
    pub refused: AtomicUsize,
    /// Requests whose Authorization header was the right one.
    pub authorized: AtomicUsize,
}

/// A hub stand-in: checks `Authorization: Bearer <key>` on every request; answers
/// STOW-RS with the SOP Instance UIDs of the request and completion notices with 200.
pub struct TestHub {
    pub port: u16,
    pub log: Arc<HubLog>,
    tls: bool,
    task: JoinHandle<()>,
}

impl TestHub {
    /// Over TLS with `cert` (whatever the gateway is told to trust).
    pub async fn tls(cert: &TestCert, key: &str) -> TestHub {
        let certs = CertificateDer::pem_file_iter(&cert.cert_path)
            .expect("read certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse certificate");
        let private = PrivateKeyDer::from_pem_file(&cert.key_path).expect("read key");
        let mut config = rustls::ServerConfig::builder_with_provider(gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))), key).await
    }

    /// Over plain HTTP.
    pub async fn plain(key: &str) -> TestHub {
        Self::start(None, key).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, key: &str) -> TestHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hub");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(HubLog::default());
        let expected = format!("Bearer {key}");
        let is_tls = tls.is_some();
        let task = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let log = Arc::clone(&log);
                    let expected = expected.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                // A client that does not trust us aborts the handshake:
                                // no request is ever seen.
                                if let Ok(stream) = acceptor.accept(socket).await {
                                    serve_http(stream, &expected, &log).await;
                                }
                            }
                            None => serve_http(socket, &expected, &log).await,
                        }
                    });
                }
            })
        };
        TestHub {
            port,
            log,
            tls: is_tls,
            task,
        }
    }

    /// The hub URL for `host` (e.g. "localhost" or "127.0.0.1").
    pub fn url(&self, host: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.port)
    }

    pub fn stored(&self) -> BTreeSet<String> {
        self.log.stored.lock().expect("lock").clone()
    }

    pub fn completed(&self) -> Vec<String> {
        self.log.completed.lock().expect("lock").clone()
    }

    pub fn refused(&self) -> usize {
        self.log.refused.load(Ordering::SeqCst)
    }

    pub fn stow_requests(&self) -> usize {
        self.log.stow_requests.load(Ordering::SeqCst)
    }

    pub fn authorized(&self) -> usize {
        self.log.authorized.load(Ordering::SeqCst)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// HTTP/1.1 with keep-alive, `Content-Length` bodies only (what the gateway sends).
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(stream: S, expected: &str, log: &HubLog) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match stream.read_line(&mut request_line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut content_length = 0usize;
        let mut content_type = String::new();
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "content-type" => content_type = value,
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
        let mut body = vec![0u8; content_length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let (status, response_type, response) = if authorization.as_deref() != Some(expected) {
            log.refused.fetch_add(1, Ordering::SeqCst);
            (
                "401 Unauthorized",
                "application/json",
                r#"{"error":"unknown or missing gateway key"}"#.to_string(),
            )
        } else if method == "POST" && path == "/dicomweb/studies" {
            log.authorized.fetch_add(1, Ordering::SeqCst);
            log.stow_requests.fetch_add(1, Ordering::SeqCst);
            let uids = stow_sop_instance_uids(&content_type, &body);
            log.stored
                .lock()
                .expect("lock")
                .extend(uids.iter().cloned());
            ("200 OK", "application/dicom+json", stow_response(&uids))
        } else if let Some(study) = path
            .strip_prefix("/ingest/studies/")
            .and_then(|rest| rest.strip_suffix("/complete"))
            .filter(|_| method == "POST")
        {
            log.authorized.fetch_add(1, Ordering::SeqCst);
            log.completed.lock().expect("lock").push(study.to_string());
            ("200 OK", "application/json", "{}".to_string())
        } else {
            ("404 Not Found", "text/plain", "not found".to_string())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {response_type}\r\nContent-Length: {}\r\n\r\n",
            response.len()
        );
        let stream = stream.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(response.as_bytes()).await.is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
    }
}

/// The SOP Instance UIDs of a multipart/related STOW body (from each part's meta group).
fn stow_sop_instance_uids(content_type: &str, body: &[u8]) -> Vec<String> {
    let Some(boundary) = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .next()
    else {
        return Vec::new();
    };
    let delimiter = format!("--{boundary}").into_bytes();
    let mut uids = Vec::new();
    for part in split(body, &delimiter) {
        // Each part: CRLF, headers, CRLF CRLF, the Part 10 file, CRLF.
        let Some(start) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let file = &part[start + 4..];
        if let Some(uid) = meta_string(file, 0x0003) {
            uids.push(uid);
        }
    }
    uids
}

fn stow_response(uids: &[String]) -> String {
    let items: Vec<serde_json::Value> = uids
        .iter()
        .map(|uid| serde_json::json!({"00081155": {"vr": "UI", "Value": [uid]}}))
        .collect();
    serde_json::json!({"00081199": {"vr": "SQ", "Value": items}}).to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(body, delimiter) {
        parts.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    parts.push(body);
    parts
}

/// A string element of a Part 10 file's meta group (explicit VR little endian).
fn meta_string(part10: &[u8], element: u16) -> Option<String> {
    if part10.len() < 132 || &part10[128..132] != b"DICM" {
        return None;
    }
    let mut pos = 132;
    while pos + 8 <= part10.len() {
        let group = u16::from_le_bytes([part10[pos], part10[pos + 1]]);
        let el = u16::from_le_bytes([part10[pos + 2], part10[pos + 3]]);
        if group != 2 {
            return None;
        }
        let vr = &part10[pos + 4..pos + 6];
        let (len, header) = if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let l = part10.get(pos + 8..pos + 12)?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (
                u16::from_le_bytes([part10[pos + 6], part10[pos + 7]]) as usize,
                8,
            )
        };
        if el == element {
            let v = part10.get(pos + header..pos + header + len)?;
            return Some(
                String::from_utf8_lossy(v)
                    .trim_end_matches(['\0', ' '])
                    .to_string(),
            );
        }
        pos += header + len;
    }
    None
}
