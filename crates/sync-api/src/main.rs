//! `sync-api`: serve the sync endpoints (see the crate README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};
use sync_api::auth::{AuthConfig, KeySource, Verifier};
use sync_api::{AppState, Limits};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The sync API service (and its live dashboard at `/`). Every flag can also
/// be given as the environment variable shown in `--help`.
#[derive(Parser, Debug)]
#[command(name = "sync-api", version)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Option<Args>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// DEVELOPMENT ONLY: print a JWT for `--user`, signed with a local key
    /// file, to try the dashboard and the API without an auth provider.
    DevToken(DevTokenArgs),
}

// `sync-api dev-token …` is parsed on its own, so the service's variables in
// the environment (`DATABASE_URL`, …) do not make the service's flags required.
/// DEVELOPMENT ONLY: print a JWT for `--user`, signed with a local key file,
/// to try the dashboard and the API without an auth provider.
#[derive(Parser, Debug)]
#[command(name = "sync-api dev-token")]
struct DevTokenCli {
    #[command(flatten)]
    args: DevTokenArgs,
}

#[derive(clap::Args, Debug)]
struct DevTokenArgs {
    /// The user (`sub`), a UUID with an `auth.users_extended` row.
    #[arg(long, required_unless_present = "print_jwks")]
    user: Option<uuid::Uuid>,
    /// A PEM private key (EC P-256, RSA, Ed25519) or an HS256 secret file (≥ 32 bytes).
    #[arg(long)]
    jwt_signing_key_file: PathBuf,
    /// `iss` of the token (the service's `--jwt-issuer`).
    #[arg(long, env = "SYNC_API_JWT_ISSUER", default_value = "sync-api-dev")]
    jwt_issuer: String,
    /// `aud` of the token.
    #[arg(long, env = "SYNC_API_JWT_AUDIENCE", default_value = "authenticated")]
    jwt_audience: String,
    /// Lifetime in seconds (at most one day).
    #[arg(long, default_value_t = 3600)]
    ttl_seconds: u64,
    /// `kid` of an asymmetric key (token header and JWKS).
    #[arg(long, default_value = "sync-api-dev")]
    kid: String,
    /// Print the key's public JWKS (for the service's `--jwks-file`) instead of a token.
    #[arg(long)]
    print_jwks: bool,
}

fn dev_token(args: DevTokenArgs) -> Result<String, String> {
    let path = &args.jwt_signing_key_file;
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let key = sync_api::dev_token::DevKey::from_file_bytes(&bytes, &args.kid)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if args.print_jwks {
        return key.public_jwks();
    }
    let user = args.user.ok_or("give --user <uuid>")?;
    eprintln!(
        "sync-api dev-token: a DEVELOPMENT token ({:?}) for user {user}, valid {} s; \
         never configure a production service to trust this key",
        key.algorithm(),
        args.ttl_seconds
    );
    key.sign(user, &args.jwt_issuer, &args.jwt_audience, args.ttl_seconds)
}

/// How the service runs.
#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("keys").required(true).args(["jwks_url", "jwks_file", "jwt_hs256_secret_file"])))]
struct Args {
    /// PostgreSQL connection string (`sslmode`, `sslrootcert` honoured).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// CA file for verifying the database's TLS certificate.
    #[arg(long, env = "SYNC_API_DB_CA_FILE")]
    db_ca_file: Option<PathBuf>,
    /// Address of the public listener.
    #[arg(long, env = "SYNC_API_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Address of the Prometheus `/metrics` listener (none unless given).
    #[arg(long, env = "SYNC_API_METRICS_BIND")]
    metrics_bind: Option<SocketAddr>,
    /// JWKS URL of the auth provider (asymmetric keys: ES256, RS256, EdDSA…).
    #[arg(long, env = "SYNC_API_JWKS_URL")]
    jwks_url: Option<String>,
    /// JWKS file (asymmetric keys).
    #[arg(long, env = "SYNC_API_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// File holding a shared HS256 secret (≥ 32 bytes); only HS256 tokens are then accepted.
    #[arg(long, env = "SYNC_API_JWT_HS256_SECRET_FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "SYNC_API_JWT_ISSUER")]
    jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "SYNC_API_JWT_AUDIENCE", default_value = "authenticated")]
    jwt_audience: String,
    /// Most pooled database connections.
    #[arg(long, env = "SYNC_API_POOL_SIZE", default_value_t = 16)]
    pool_size: usize,
    /// Bound on a pool checkout and on opening a database connection, in ms.
    #[arg(long, env = "SYNC_API_POOL_TIMEOUT_MS", default_value_t = 5000)]
    pool_timeout_ms: u64,
    /// `statement_timeout` of every tenant transaction, in ms.
    #[arg(long, env = "SYNC_API_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    statement_timeout_ms: u64,
    /// Bound on a whole request (body read and handling), in ms.
    #[arg(long, env = "SYNC_API_REQUEST_TIMEOUT_MS", default_value_t = 15000)]
    request_timeout_ms: u64,
    /// Bound on reading a request's headers (and keep-alive idle), in ms.
    #[arg(long, env = "SYNC_API_HEADER_READ_TIMEOUT_MS", default_value_t = 10000)]
    header_read_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in ms.
    #[arg(long, env = "SYNC_API_SHUTDOWN_DRAIN_MS", default_value_t = 20000)]
    shutdown_drain_ms: u64,
    /// A hot standby of the database (connection string, same TLS settings):
    /// activity listings (and the store's other stale-tolerant reads) are
    /// read there, with read-your-writes (`X-Sync-Consistency`); any replica
    /// failure falls back to the primary.
    #[arg(long, env = "SYNC_API_REPLICA_URL")]
    replica_url: Option<String>,
    /// Longest wait for the replica to replay a request's writes before its
    /// read goes to the primary, in ms.
    #[arg(long, env = "SYNC_API_REPLICA_MAX_WAIT_MS", default_value_t = 250)]
    replica_max_wait_ms: u64,
    /// Connection for the spec's MONITORING gauges on `--metrics-bind`: a role
    /// that sees every org (table owner or BYPASSRLS). None: no such gauges.
    #[arg(long, env = "SYNC_API_MONITORING_DATABASE_URL")]
    monitoring_database_url: Option<String>,
    /// Also one MONITORING series per org (label `org`, at most 1000 orgs).
    /// Org ids are tenant identifiers: only for operators' own Prometheus.
    #[arg(long, env = "SYNC_API_METRICS_PER_ORG")]
    metrics_per_org: bool,
    /// Session connection for `LISTEN` (live progress): a direct endpoint or a
    /// session-mode pooler, never a transaction-mode pooler. Default: the
    /// `DATABASE_URL` host, or its direct host for a Neon `-pooler` host.
    #[arg(long, env = "SYNC_API_LISTEN_DATABASE_URL")]
    listen_database_url: Option<String>,
    /// No LISTEN connection: live progress polls only (lets an idle Neon
    /// compute scale to zero; a held LISTEN connection keeps it awake).
    #[arg(
        long,
        env = "SYNC_API_NO_LISTEN",
        conflicts_with = "listen_database_url"
    )]
    no_listen: bool,
    /// How often live progress polls the versions of the subscribed syncs, in ms.
    #[arg(long, env = "SYNC_API_SSE_POLL_MS", default_value_t = 100)]
    sse_poll_ms: u64,
    /// A connection whose writes make no progress for this long is closed, in ms.
    #[arg(long, env = "SYNC_API_WRITE_TIMEOUT_MS", default_value_t = 30000)]
    write_timeout_ms: u64,
    /// Log format.
    #[arg(long, env = "SYNC_API_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(args: Args) -> Result<(), String> {
    let keys = if let Some(url) = args.jwks_url {
        KeySource::JwksUrl(url)
    } else if let Some(path) = args.jwks_file {
        KeySource::JwksFile(path)
    } else if let Some(path) = args.jwt_hs256_secret_file {
        let mut secret =
            std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        KeySource::Hs256Secret(secret)
    } else {
        return Err("give --jwks-url, --jwks-file or --jwt-hs256-secret-file".into());
    };
    let verifier = Verifier::new(AuthConfig {
        keys,
        issuer: args.jwt_issuer,
        audience: args.jwt_audience,
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await?;

    let config = sync_connect::resolve_config(Some(&args.database_url))
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    let tls =
        sync_connect::TlsOptions::resolve(Some(&args.database_url), args.db_ca_file.as_deref())
            .map_err(|e| format!("database TLS settings: {e}"))?;
    let pool = sync_connect::pool_with_wait(
        &config,
        &tls,
        args.pool_size.max(1),
        Duration::from_millis(args.pool_timeout_ms),
    )
    .map_err(|e| format!("database pool: {e}"))?;
    let mut store = sync_store::Store::new(pool.clone());
    if let Some(url) = args.replica_url.as_deref() {
        let replica_config =
            sync_connect::resolve_config(Some(url)).map_err(|e| format!("--replica-url: {e}"))?;
        let replica_tls = sync_connect::TlsOptions::resolve(Some(url), args.db_ca_file.as_deref())
            .map_err(|e| format!("replica TLS settings: {e}"))?;
        let replica = sync_connect::pool_with_wait(
            &replica_config,
            &replica_tls,
            args.pool_size.max(1),
            Duration::from_millis(args.pool_timeout_ms),
        )
        .map_err(|e| format!("replica pool: {e}"))?;
        let mut options = sync_store::ReplicaOptions::default();
        options.max_wait = Duration::from_millis(args.replica_max_wait_ms);
        options.statement_timeout = Duration::from_millis(args.statement_timeout_ms);
        options.checkout_timeout = Duration::from_millis(args.pool_timeout_ms);
        store = store.with_replica(replica, options);
        tracing::info!("reading activity listings from the replica");
    }
    let limits = Limits {
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        statement_timeout: Duration::from_millis(args.statement_timeout_ms),
        ..Limits::default()
    };
    let listen = if args.no_listen {
        None
    } else {
        let url = match &args.listen_database_url {
            Some(url) => url.clone(),
            None => direct_url(&args.database_url, &config),
        };
        let config = sync_connect::resolve_config(Some(&url))
            .map_err(|e| format!("--listen-database-url: {e}"))?;
        let tls = sync_connect::TlsOptions::resolve(Some(&url), args.db_ca_file.as_deref())
            .map_err(|e| format!("listen connection TLS settings: {e}"))?;
        Some(sync_api::sse::ListenTarget { config, tls })
    };
    let feed = sync_api::sse::Feed::new(sync_api::sse::FeedConfig {
        poll_interval: Duration::from_millis(args.sse_poll_ms.max(10)),
        listen,
        ..sync_api::sse::FeedConfig::default()
    });
    let app = sync_api::router(
        AppState::new(store.clone(), Arc::new(verifier), limits).with_feed(feed.clone()),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = args.metrics_bind {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("metrics recorder: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding --metrics-bind {addr}: {e}"))?;
        tracing::info!(%addr, "metrics listening");
        let monitoring = match &args.monitoring_database_url {
            Some(url) => {
                let config = sync_connect::resolve_config(Some(url))
                    .map_err(|e| format!("--monitoring-database-url: {e}"))?;
                let tls = sync_connect::TlsOptions::resolve(Some(url), args.db_ca_file.as_deref())
                    .map_err(|e| format!("monitoring connection TLS settings: {e}"))?;
                let pool = sync_connect::pool_with_wait(
                    &config,
                    &tls,
                    2,
                    Duration::from_millis(args.pool_timeout_ms),
                )
                .map_err(|e| format!("monitoring pool: {e}"))?;
                Some(sync_api::monitoring::Monitoring::new(
                    sync_store::Store::new(pool),
                    args.metrics_per_org,
                ))
            }
            None => None,
        };
        let metrics =
            sync_api::server::metrics_router_with_store(handle, store.clone(), monitoring);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, metrics)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("binding --bind {}: {e}", args.bind))?;
    tracing::info!(addr = %args.bind, "sync-api listening");
    sync_api::server::serve_with(
        listener,
        app,
        sync_api::server::ServeOptions {
            header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
            drain: Duration::from_millis(args.shutdown_drain_ms),
            write_timeout: Duration::from_millis(args.write_timeout_ms.max(1)),
        },
        async move {
            sync_api::server::shutdown_signal().await;
            // Live-progress streams get a final event and end, so the drain
            // does not wait for them.
            feed.shutdown();
        },
    )
    .await
    .map_err(|e| format!("serving: {e}"))?;
    let _ = stop_tx.send(true);
    drop(stop_rx);
    tracing::info!("stopped");
    Ok(())
}

/// `url` with its Neon `-pooler` host (transaction mode: no LISTEN) replaced
/// by the direct host; `url` itself otherwise.
fn direct_url(url: &str, config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let mut out = url.to_owned();
    for host in config.get_hosts() {
        if let Host::Tcp(name) = host {
            if let Some(direct) = sync_connect::pooler::direct_host_for(name) {
                out = out.replacen(name.as_str(), &direct, 1);
            }
        }
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "dev-token") {
        let cli = DevTokenCli::parse_from(std::env::args_os().skip(1));
        return match dev_token(cli.args) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sync-api dev-token: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    let (Some(args), None) = (cli.serve, cli.command) else {
        eprintln!(
            "sync-api: give the service's flags (see --help), or `sync-api dev-token --help`"
        );
        return ExitCode::FAILURE;
    };
    init_logs(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("sync-api: {e}");
            eprintln!("sync-api: {e}");
            ExitCode::FAILURE
        }
    }
}
