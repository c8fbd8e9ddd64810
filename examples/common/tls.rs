//! The examples' TLS options: a server config from `--tls-cert`/`--tls-key` (PEM), or from a
//! self-signed certificate for `localhost` made at start (`--tls-self-signed`, for a first
//! try: clients must be told to trust it, e.g. `curl -k`, `redis-cli --tls --insecure`).

use std::path::Path;
use std::sync::Arc;

use ringstage::net::tls::{self, rustls};

/// The TLS options of an example's command line (`#[command(flatten)]`).
#[derive(clap::Args, Debug)]
pub struct TlsArgs {
    /// Speak TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Speak TLS with a self-signed certificate for localhost made at start (clients must be
    /// told to trust it: `curl -k`, `redis-cli --tls --insecure`).
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,
}

impl TlsArgs {
    /// The server config, `None` when no TLS was asked for; the protocols offered by ALPN.
    pub fn server_config(&self, alpn: &[&[u8]]) -> std::io::Result<Option<Arc<rustls::ServerConfig>>> {
        server_config(self.tls_cert.as_deref(), self.tls_key.as_deref(), self.tls_self_signed, alpn)
    }
}

/// The server config, `None` when no TLS was asked for.
fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    self_signed: bool,
    alpn: &[&[u8]],
) -> std::io::Result<Option<Arc<rustls::ServerConfig>>> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let (chain, key) = match (cert, key, self_signed) {
        (None, None, false) => return Ok(None),
        (Some(cert), Some(key), false) => tls::load_pem(cert, key)?,
        (None, None, true) => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .map_err(|e| bad(format!("self-signed certificate: {e}")))?;
            let key =
                rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).map_err(|e| bad(e.into()))?;
            (vec![rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec())], key)
        }
        _ => return Err(bad("TLS needs --tls-cert and --tls-key together, or --tls-self-signed alone".into())),
    };
    tls::server_config(chain, key, alpn).map(Some)
}
