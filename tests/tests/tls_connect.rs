//! TLS against a throwaway PostgreSQL with `ssl = on` and a CA made by the test
//! setup: the library's `connect` / `pool`, libpq's sslmode semantics, and the CLI.

use std::path::Path;

use sync_connect::{SslMode, TlsOptions};
use sync_tests::{sync_migrate_bin, TlsServer};
use tokio_postgres::Client;

/// `(ssl, version)` of this connection from `pg_stat_ssl`.
async fn ssl_state(client: &Client) -> (bool, Option<String>) {
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Settings and TLS options for `url`, from the URL alone (no environment).
fn settings(url: &str, ca_file: Option<&Path>) -> (tokio_postgres::Config, TlsOptions) {
    let config = sync_connect::resolve_config(Some(url)).unwrap();
    let mut tls = TlsOptions::from_connection_string(url).unwrap();
    if let Some(ca) = ca_file {
        tls.ca_file = Some(ca.to_owned());
    }
    (config, tls)
}

async fn connect_err(url: &str, ca_file: Option<&Path>) -> String {
    let (config, tls) = settings(url, ca_file);
    match sync_connect::connect(&config, &tls).await {
        Ok(_) => panic!("connecting to {url} should have failed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn require_with_the_ca_file_connects_over_tls() {
    let server = TlsServer::start();
    let (config, tls) = settings(
        &server.url("localhost", "sslmode=require"),
        Some(&server.ca_file()),
    );
    assert_eq!(tls.effective_mode(&config), SslMode::Require);
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    let (ssl, version) = ssl_state(&client).await;
    assert!(ssl, "the session must be encrypted");
    assert!(version.unwrap_or_default().starts_with("TLSv1."));
}

#[tokio::test]
async fn require_without_the_ca_fails_naming_the_certificate() {
    let server = TlsServer::start();
    let message = connect_err(&server.url("localhost", "sslmode=require"), None).await;
    println!("{message}");
    assert!(
        message.contains("certificate")
            && message.contains("UnknownIssuer")
            && message.contains("--ca-file"),
        "{message}"
    );
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let server = TlsServer::start();
    let ca = server.ca_file();
    // The certificate names `localhost` only.
    let (config, tls) = settings(&server.url("localhost", "sslmode=verify-full"), Some(&ca));
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(ssl_state(&client).await.0);

    let message = connect_err(&server.url("127.0.0.1", "sslmode=verify-full"), Some(&ca)).await;
    println!("{message}");
    assert!(
        message.contains("does not name the host") && message.contains("verify-ca"),
        "{message}"
    );

    let (config, tls) = settings(&server.url("127.0.0.1", "sslmode=verify-ca"), Some(&ca));
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(ssl_state(&client).await.0);

    // verify-ca still checks the chain.
    let message = connect_err(&server.url("127.0.0.1", "sslmode=verify-ca"), None).await;
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[tokio::test]
async fn sslrootcert_in_the_connection_string_is_used() {
    let server = TlsServer::start();
    let ca = server.ca_file();
    let url = server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let (config, tls) = settings(&url, None);
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(ssl_state(&client).await.0);
}

#[tokio::test]
async fn prefer_encrypts_without_checking_and_disable_stays_plain() {
    let server = TlsServer::start();
    // No CA: prefer, like libpq, encrypts without authenticating the server.
    let (config, tls) = settings(&server.url("127.0.0.1", "sslmode=prefer"), None);
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(ssl_state(&client).await.0);
    // No sslmode at all is prefer too.
    let (config, tls) = settings(&server.url("127.0.0.1", ""), None);
    assert_eq!(tls.effective_mode(&config), SslMode::Prefer);
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(ssl_state(&client).await.0);

    let (config, tls) = settings(&server.url("127.0.0.1", "sslmode=disable"), None);
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    assert!(!ssl_state(&client).await.0);
}

#[tokio::test]
async fn prefer_falls_back_to_plaintext_and_require_refuses_a_server_without_tls() {
    sync_tests::skip_without_pgbouncer!();
    // The shared test server: a harness database's settings, TLS switched off
    // for this check by pointing at PgBouncer, which offers no TLS to clients.
    let db = sync_tests::TestDb::empty().await;
    let bouncer = sync_tests::PgBouncer::start(&db, sync_tests::PoolMode::Session).await;
    let url = bouncer.url();
    let (config, tls) = settings(&format!("{url}?sslmode=prefer"), None);
    let client = sync_connect::connect(&config, &tls).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let message = connect_err(&format!("{url}?sslmode=require"), None).await;
    assert!(
        message.contains("server does not support TLS") && message.contains("switch `ssl` on"),
        "{message}"
    );
}

#[tokio::test]
async fn pool_uses_the_same_tls_settings() {
    let server = TlsServer::start();
    let (config, tls) = settings(
        &server.url("localhost", "sslmode=verify-full"),
        Some(&server.ca_file()),
    );
    let pool = sync_connect::pool(&config, &tls, 2).unwrap();
    let client = pool.get().await.unwrap();
    assert!(ssl_state(&client).await.0);

    let (config, tls) = settings(&server.url("localhost", "sslmode=verify-full"), None);
    let pool = sync_connect::pool(&config, &tls, 2).unwrap();
    let err = match pool.get().await {
        Ok(_) => panic!("no CA: the pool must not connect"),
        Err(e) => e,
    };
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

#[tokio::test]
async fn sni_carries_the_host_name_but_not_an_ip_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fake server: answers the SSLRequest with 'S' and records the SNI of the
    // ClientHello, then hangs up.
    async fn sni_seen(host: &str) -> Option<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut ssl_request = [0u8; 8];
            stream.read_exact(&mut ssl_request).await.unwrap();
            assert_eq!(ssl_request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
            stream.write_all(b"S").await.unwrap();
            let acceptor = tokio_rustls::LazyConfigAcceptor::new(
                tokio_rustls::rustls::server::Acceptor::default(),
                stream,
            );
            let start = acceptor.await.unwrap();
            start.client_hello().server_name().map(str::to_owned)
        });
        let url = format!("postgresql://u@{host}:{port}/db?sslmode=prefer");
        let (config, tls) = settings(&url, None);
        // The handshake cannot complete; only the ClientHello matters.
        let _ = sync_connect::connect(&config, &tls).await;
        server.await.unwrap()
    }
    assert_eq!(sni_seen("localhost").await.as_deref(), Some("localhost"));
    assert_eq!(sni_seen("127.0.0.1").await, None);
}

#[tokio::test]
async fn cli_status_over_tls_with_ca_file_or_pgsslrootcert() {
    let server = TlsServer::start();
    let bin = sync_migrate_bin();
    let url = server.url("localhost", "sslmode=require");
    let run = |extra: &[&str], env_ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["status", "--database-url", &url])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT");
        if let Some(ca) = env_ca {
            cmd.env("PGSSLROOTCERT", ca);
        }
        cmd.output().unwrap()
    };
    let ca = server.ca_file();
    let out = run(&["--ca-file", ca.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sync_preview_progress_logs") && stdout.contains("pending"),
        "{stdout}"
    );

    let out = run(&[], Some(&ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&[], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("--ca-file"),
        "{stderr}"
    );
}
