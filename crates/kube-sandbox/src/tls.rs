//! TLS for the sandbox listener, and the accept loop that serves the router over it.
//!
//! kubectl (client-go's clientcmd) only reads a kubeconfig user's credentials when the
//! cluster URL is https ("only try to read the auth information if we are secure"), so a
//! bearer token over plain http is never sent and every request would be anonymous. The
//! sandbox therefore generates, at start, a throwaway CA and a server certificate for
//! 127.0.0.1/localhost signed by it (rcgen, ring), serves https with rustls, and puts the CA
//! in the kubeconfig as `certificate-authority-data`. Nothing is written to disk but the
//! kubeconfig, unless a state directory keeps the certificates for the next start
//! (`state.rs`).

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A server identity ready to serve.
pub struct Identity {
    /// PEM of the CA certificate clients must trust.
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// The PEM texts an identity is made of: what `state.rs` keeps in a state directory so that a
/// restarted sandbox presents the same certificate (and an old kubeconfig still works). The CA
/// key is not kept: nothing is signed after the first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pems {
    pub ca_cert: String,
    pub server_cert: String,
    /// PKCS#8.
    pub server_key: String,
}

/// A new CA, and a server certificate for 127.0.0.1/localhost/::1 signed by it.
pub fn generate() -> Result<Pems, String> {
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rollbackd sandbox CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;

    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ])
    .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "rollbackd-sandbox");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    Ok(Pems {
        ca_cert: ca.pem(),
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
    })
}

/// The rustls configuration serving `pems` (the chain sent is the server certificate, then
/// the CA's).
pub fn identity(pems: &Pems) -> Result<Identity, String> {
    let cert = |what: &str, pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("the {what} certificate is not PEM: {e}"))
    };
    let chain = vec![
        cert("server", &pems.server_cert)?,
        cert("CA", &pems.ca_cert)?,
    ];
    let key = PrivateKeyDer::from_pem_slice(pems.server_key.as_bytes())
        .map_err(|e| format!("the server key is not PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem: pems.ca_cert.clone(),
        config: Arc::new(config),
    })
}

/// Accept TLS connections and serve `app` on each until `stop` turns true; then close all.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut conns = JoinSet::new();
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "sandbox accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        conns.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

/// Standard base64 (for `certificate-authority-data`).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
