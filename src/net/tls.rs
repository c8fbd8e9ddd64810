//! TLS on the connection layer, with [rustls]: a listener or connector given a rustls config
//! runs the handshake on the connection's worker before its stage hears `Opened` (or
//! `Connected`), then [`NetEvent::Secured`](super::NetEvent::Secured) tells the protocol
//! (ALPN), the server name asked for (SNI), the version and suite, and whether the session was
//! resumed. The handler's view is unchanged: plaintext `Data`, plaintext sends.
//!
//! What is copied, and why: rustls decrypts a record into its own plaintext buffer, from which
//! the driver copies the plaintext into one `IoBuf` per receive (the ciphertext's pool buffer
//! goes back at once); a send's plaintext views are joined and encrypted into one ciphertext
//! buffer, which is what the kernel sends. Decrypting in place in the pool buffer (rustls's
//! unbuffered API) would save the first copy; this is not done yet. Files sent on a TLS
//! connection (`NetCmd::SendFile`) are read 256 KiB at a time with `pread` on the worker (fast
//! from the page cache, a stall on a cold disk) and encrypted, one chunk in memory at a time,
//! since only kernel TLS (`CONFIG_TLS`) could splice them; see [`ktls_available`].
//!
//! Failures, each ending the connection with a counted reason and never reaching the handler
//! as data:
//! - a handshake that fails (garbage instead of a ClientHello, a record over the size limit,
//!   an untrusted or expired certificate on the client side, no common version or suite):
//!   its alert is sent, then the close (`tls_handshake_failed`);
//! - a handshake not done within
//!   [`ListenConfig::tls_handshake_timeout`](super::ListenConfig::tls_handshake_timeout):
//!   aborted (`tls_handshake_timeouts`);
//! - a bad record after the handshake: an alert and the close (`tls_errors`). rustls refuses a
//!   TLS 1.2 renegotiation with a `no_renegotiation` alert and goes on; TLS 1.3 has none;
//! - a peer that ends its stream without `close_notify`: closed, not given an `Eof` it could
//!   take for a complete message (`tls_truncated`).
//!
//! A graceful close sends `close_notify`.
//!
//! [rustls]: https://docs.rs/rustls

use std::sync::Arc;

pub use rustls;

/// What a TLS handshake settled, in [`NetEvent::Secured`](super::NetEvent::Secured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// The application protocol agreed by ALPN (`b"h2"`, `b"http/1.1"`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI); `None` on the client side.
    pub server_name: Option<String>,
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: Option<rustls::ProtocolVersion>,
    /// The cipher suite.
    pub suite: Option<rustls::CipherSuite>,
    /// The session was resumed (a ticket or session id), not a full handshake.
    pub resumed: bool,
}

/// The TLS side of a listener or connector.
#[derive(Clone, Debug)]
pub(crate) enum TlsSetup {
    Server(Arc<rustls::ServerConfig>),
    Client(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>),
}

/// A certificate chain and its private key, read from PEM files (the chain's first
/// certificate is the server's). Errors name the file and what is wrong with it.
pub fn load_pem(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<(Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(format!("{}: no certificate in it", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

/// A server config as most servers want it: rustls's default provider (aws-lc-rs), its safe
/// default versions (TLS 1.3 and 1.2) and suites, `alpn` offered in order, TLS 1.3 session
/// tickets and TLS 1.2 resumption on.
///
/// # Examples
///
/// ```no_run
/// use ringstage::net::tls;
/// use ringstage::prelude::*;
///
/// let (chain, key) = tls::load_pem("cert.pem".as_ref(), "key.pem".as_ref())?;
/// let config = tls::server_config(chain, key, &[b"http/1.1"])?;
/// let listen = ListenConfig::new("0.0.0.0:443".parse().unwrap(), [0]).tls(config);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let bad = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(bad)?;
    Ok(Arc::new(cfg))
}

/// Whether this kernel offers kernel TLS (the `tls` upper-layer protocol, `CONFIG_TLS`), which
/// would let sends and file splices stay zero copy after the handshake. Read from
/// `/proc/sys/net/ipv4/tcp_available_ulp`. ringstage encrypts in user space either way today;
/// where this is `false` (this project's CI machine) that is the only possible path.
pub fn ktls_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|s| s.split_whitespace().any(|u| u == "tls"))
}
