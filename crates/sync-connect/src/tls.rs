//! TLS for database connections: libpq's `sslmode` names over rustls.
//!
//! See [`SslMode`] for what each `sslmode` means here, and [`TlsOptions`] for
//! where the CA certificates come from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{Host, SslMode as WireMode};
use tokio_postgres::Config;
pub(crate) use tokio_postgres_rustls::MakeRustlsConnect;

use crate::conninfo::split_tls_params;
use crate::error::{Error, Result};

/// libpq's `sslmode` values that this crate implements (all but `allow`).
///
/// | `sslmode`      | encrypted                         | server certificate checked                 |
/// |----------------|-----------------------------------|--------------------------------------------|
/// | `disable`      | never                             | —                                          |
/// | `prefer` (default) | when the server offers TLS, else plaintext | **no** (as libpq: stops eavesdroppers only) |
/// | `require`      | always                            | chain to a trusted CA **and** host name    |
/// | `verify-ca`    | always                            | chain to a trusted CA (any host name)      |
/// | `verify-full`  | always                            | chain to a trusted CA **and** host name    |
///
/// `require` is stricter than libpq's (which checks nothing unless a root
/// certificate file exists): a connection that is required to be encrypted is
/// also authenticated, so a man in the middle cannot take it over. The trusted
/// CAs are the PEM file given by [`TlsOptions::ca_file`] (`--ca-file`,
/// `sslrootcert=`, `PGSSLROOTCERT`), else the operating system's store, else —
/// when the system has none — the Mozilla roots compiled in (webpki-roots).
/// rustls sends the host name as SNI whenever the host is a DNS name (Neon routes
/// on it), never for an IP address. Unix-socket connections are never encrypted
/// (the server offers no TLS there, and libpq ignores `sslmode` for them too).
/// `prefer` falls back to plaintext when the server declines TLS; a handshake
/// that fails after the server accepted TLS is an error (libpq would retry in
/// plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it (certificate not checked), else plaintext.
    Prefer,
    /// TLS, certificate chain and host name checked.
    Require,
    /// TLS, certificate chain checked, host name not.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn wire(self) -> WireMode {
        match self {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            _ => WireMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "sslmode={other} is not supported; use disable, prefer, require, verify-ca or verify-full"
                    ),
                })
            }
        })
    }
}

/// How to secure connections: the TLS mode and which certificate authorities to trust.
///
/// `TlsOptions::default()` means: the mode written in the [`Config`] (tokio-postgres
/// knows `disable`, `prefer` — its default — and `require`), and the system's CAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Overrides the [`Config`]'s `sslmode` when set (needed for `verify-ca` and
    /// `verify-full`, which [`Config`] cannot hold).
    pub ssl_mode: Option<SslMode>,
    /// PEM file with the certificate authorities to trust *instead of* the system's.
    pub ca_file: Option<PathBuf>,
}

impl TlsOptions {
    /// The TLS options the way libpq finds them, for the connection string `url`
    /// (else `DATABASE_URL`): its `sslmode` and `sslrootcert` parameters, else the
    /// `PGSSLMODE` and `PGSSLROOTCERT` environment variables; `ca_file` (the CLI's
    /// `--ca-file`) wins over both. `sslrootcert=system` means the system's CAs.
    ///
    /// Pair it with [`resolve_config`](crate::resolve_config) on the same `url`.
    pub fn resolve(url: Option<&str>, ca_file: Option<&Path>) -> Result<TlsOptions> {
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let text = url.map(str::to_owned).or_else(|| env("DATABASE_URL"));
        let mut options = match text {
            Some(text) => TlsOptions::from_connection_string(&text)?,
            None => TlsOptions::default(),
        };
        if options.ssl_mode.is_none() {
            options.ssl_mode = env("PGSSLMODE").map(|m| m.parse()).transpose()?;
        }
        if options.ca_file.is_none() {
            options.ca_file = env("PGSSLROOTCERT").map(PathBuf::from);
        }
        if let Some(file) = ca_file {
            options.ca_file = Some(file.to_owned());
        }
        if options.ca_file.as_deref() == Some(Path::new("system")) {
            options.ca_file = None;
        }
        Ok(options)
    }

    /// The `sslmode` and `sslrootcert` written in a connection string (URL or
    /// `key=value`), and nothing from the environment.
    pub fn from_connection_string(text: &str) -> Result<TlsOptions> {
        let (_, params) = split_tls_params(text).map_err(|e| Error::InvalidConfig {
            reason: format!("the connection string is not valid: {e}"),
        })?;
        Ok(TlsOptions {
            ssl_mode: params.sslmode.as_deref().map(str::parse).transpose()?,
            ca_file: params.sslrootcert.map(PathBuf::from),
        })
    }

    /// The mode that applies to `config`: [`Self::ssl_mode`], else the config's own.
    pub fn effective_mode(&self, config: &Config) -> SslMode {
        self.ssl_mode.unwrap_or(match config.get_ssl_mode() {
            WireMode::Disable => SslMode::Disable,
            WireMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        })
    }
}

/// The settings and rustls connector to open connections with under `tls`: a copy
/// of `config` whose `sslmode` tokio-postgres understands (`disable` when every
/// host is a unix socket), and a [`MakeRustlsConnect`] that checks the server's
/// certificate as [`SslMode`] says. Use it for your own pool or `connect`.
///
/// Fails when the CA file cannot be read or holds no certificate.
pub(crate) fn tls_connector(
    config: &Config,
    tls: &TlsOptions,
) -> Result<(Config, MakeRustlsConnect)> {
    let mode = tls.effective_mode(config);
    let unix_only = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)));
    let mut wire = config.clone();
    wire.ssl_mode(if unix_only {
        WireMode::Disable
    } else {
        mode.wire()
    });
    let client_config = client_config(mode, tls.ca_file.as_deref())?;
    Ok((wire, MakeRustlsConnect::new(client_config)))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

fn tls_error(reason: String) -> Error {
    Error::Unavailable { reason }
}

fn client_config(mode: SslMode, ca_file: Option<&Path>) -> Result<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer => Arc::new(AcceptAnyCertificateForPrefer {
            provider: provider.clone(),
        }),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = roots(ca_file)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| tls_error(format!("setting up certificate verification: {e}")))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("setting up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What PostgreSQL 17+ expects; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>> {
    let Some(path) = ca_file else {
        return Ok(system_roots());
    };
    let unreadable = |e: &dyn fmt::Display| {
        tls_error(format!(
            "cannot read the CA file {}: {e}; give a PEM file of CA certificates (--ca-file, PGSSLROOTCERT or sslrootcert=)",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(unreadable(&"it holds no usable certificate"));
    }
    Ok(Arc::new(store))
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if store.is_empty() {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(store)
        })
        .clone()
}

/// `sslmode=prefer`: encrypts but, like libpq, does not authenticate the server.
/// Handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificateForPrefer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificateForPrefer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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

/// `sslmode=verify-ca`: the full webpki check, except that a certificate which
/// chains to a trusted CA but names another host is accepted. Sound because the
/// webpki verifier checks the chain (and validity dates) before the name, so a
/// name error means everything else passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Says what to do about a failed connection attempt when TLS is the cause.
pub(crate) fn tls_hint(err: &tokio_postgres::Error, mode: SslMode) -> Option<&'static str> {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let rustls_err = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| s.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls_err {
            return Some(match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "The server's certificate is not signed by a certificate authority this client trusts: \
                     pass the CA certificate that signed it with --ca-file, PGSSLROOTCERT or sslrootcert=<file>"
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "The server's certificate does not name the host you connected to: connect with a host \
                     name the certificate lists, or use sslmode=verify-ca to check only the certificate authority"
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "The server's certificate is outside its validity dates (or this machine's clock is wrong)"
                }
                _ => "The server's certificate was rejected",
            });
        }
        if s.to_string().contains("server does not support TLS") {
            return Some(
                "The server does not accept TLS: switch `ssl` on at the server, or connect with sslmode=prefer \
                 or disable only on a trusted network",
            );
        }
        source = s.source();
    }
    (mode != SslMode::Disable && err.to_string().contains("TLS"))
        .then_some("The TLS handshake failed; check sslmode and the server's TLS settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_names_round_trip_and_allow_is_refused() {
        for m in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(m.as_str().parse::<SslMode>().unwrap(), m);
        }
        let err = "allow".parse::<SslMode>().unwrap_err().to_string();
        assert!(err.contains("sslmode=allow is not supported"), "{err}");
    }

    #[test]
    fn connection_string_carries_mode_and_ca_file() {
        let t = TlsOptions::from_connection_string(
            "postgresql://u@h/db?sslmode=verify-full&sslrootcert=/x/ca.pem",
        )
        .unwrap();
        assert_eq!(t.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("/x/ca.pem")));
        let config: Config = "host=h sslmode=disable".parse().unwrap();
        assert_eq!(
            TlsOptions::default().effective_mode(&config),
            SslMode::Disable
        );
        let config: Config = "host=h".parse().unwrap();
        assert_eq!(
            TlsOptions::default().effective_mode(&config),
            SslMode::Prefer
        );
    }

    #[test]
    fn ca_file_argument_wins_and_sslrootcert_system_means_system_roots() {
        let t = TlsOptions::resolve(
            Some("postgres://h/db?sslmode=verify-ca&sslrootcert=/a.pem"),
            Some(Path::new("/b.pem")),
        )
        .unwrap();
        assert_eq!(t.ssl_mode, Some(SslMode::VerifyCa));
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("/b.pem")));
        let t = TlsOptions::resolve(
            Some("postgres://h/db?sslmode=require&sslrootcert=system"),
            None,
        )
        .unwrap();
        assert_eq!(t.ca_file, None);
    }

    #[test]
    fn unix_socket_hosts_never_ask_for_tls() {
        let config: Config = "host=/var/run/postgresql sslmode=require".parse().unwrap();
        let (wire, _) = tls_connector(&config, &TlsOptions::default()).unwrap();
        assert_eq!(wire.get_ssl_mode(), WireMode::Disable);
        let config: Config = "host=db.example.com".parse().unwrap();
        let tls = TlsOptions {
            ssl_mode: Some(SslMode::VerifyCa),
            ca_file: None,
        };
        let (wire, _) = tls_connector(&config, &tls).unwrap();
        assert_eq!(wire.get_ssl_mode(), WireMode::Require);
    }

    #[test]
    fn unreadable_ca_file_is_a_clear_error() {
        let config: Config = "host=db.example.com".parse().unwrap();
        let tls = TlsOptions {
            ssl_mode: Some(SslMode::Require),
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        let err = tls_connector(&config, &tls).err().unwrap().to_string();
        assert!(
            err.contains("cannot read the CA file /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
