//! Test harness: every test gets its own fresh database on a real PostgreSQL.
//!
//! Which server:
//! 1. `DATABASE_URL`, when set (any database on the server; the harness only
//!    uses it to create and drop its own databases);
//! 2. else the local server found the way `psql` finds it (`PGHOST`…, else the
//!    unix socket), when it answers;
//! 3. else (nothing answers within 3 s), or when `SYNC_TEST_TEMP_CLUSTER=1`, a
//!    throwaway cluster ([`tempcluster::TempCluster`]) started from the installed
//!    PostgreSQL binaries (`pg_config --bindir`, else
//!    `/usr/lib/postgresql/<newest>/bin`). As root they run as the `postgres`
//!    operating-system user (no `sudo` needed). The cluster lives while any
//!    [`TestDb`] of the process does and is shut down (and its directory
//!    removed) when the last one drops. [`TestDb::on_throwaway_cluster`] says
//!    which server a test got.
//!
//! Each [`TestDb`] creates database `sync_test_<uuid>` and drops it (`WITH (FORCE)`)
//! when dropped, together with every login role it created, so tests run in
//! parallel and never see each other's rows.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub mod cut_proxy;
pub mod replica_pair;

use tokio_postgres::Config;

pub use sync_testdb::{
    config_url, connect, free_loopback_port, pool_for, running_as_root, tempcluster, POOL_SIZE,
};

/// A fresh database for one test ([`sync_testdb::TestDb`]: created on the first
/// server that answers, or a throwaway cluster; dropped with its roles), with
/// the constructors that need this workspace's crates.
pub struct TestDb(sync_testdb::TestDb);

impl std::ops::Deref for TestDb {
    type Target = sync_testdb::TestDb;

    fn deref(&self) -> &sync_testdb::TestDb {
        &self.0
    }
}

impl TestDb {
    /// A fresh, empty database (nothing applied).
    pub async fn empty() -> TestDb {
        TestDb(sync_testdb::TestDb::empty().await)
    }

    /// A fresh database with every embedded migration applied
    /// (`sync_migrations::apply`, history included).
    ///
    /// # Panics
    /// When a migration fails.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.client().await;
        sync_migrations::apply(&mut client, &sync_migrations::MigrateOptions::default())
            .await
            .unwrap_or_else(|e| panic!("applying migrations: {e}"));
        db
    }
}

/// Uid and gid of the `postgres` operating-system user (from `id`).
fn postgres_os_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("running `id`");
        assert!(
            out.status.success(),
            "there is no `postgres` operating-system user to run the server as \
             (install PostgreSQL: apt-get install -y postgresql)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// A new directory under the temp dir that the `postgres` user can read.
fn shared_temp_dir(prefix: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).expect("creating a temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Writes `contents` to `path` with `mode`, owned by the `postgres` user when we are root.
fn write_for_postgres(path: &std::path::Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if running_as_root() {
        let (uid, gid) = postgres_os_user();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }
}

/// Where a working PgBouncer is installed (`PATH`, `/usr/sbin`,
/// `/usr/local/sbin`; `pgbouncer --version` must succeed). Checked once.
fn pgbouncer_binary() -> Option<PathBuf> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
                .map(|d| d.join("pgbouncer"))
                .find(|p| p.is_file())
                .filter(|p| {
                    std::process::Command::new(p)
                        .arg("--version")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
        })
        .clone()
}

/// Whether a test that needs PgBouncer can run. When `pgbouncer` is missing it
/// prints a skip message naming the test and the fix, and returns `false` —
/// except under CI (`CI` set), where a missing PgBouncer is a failure (the test
/// script installs it), so a pooler test can never be skipped silently there.
///
/// # Panics
/// Under CI, when `pgbouncer` is not installed.
pub fn pgbouncer_available(test: &str) -> bool {
    if pgbouncer_binary().is_some() {
        return true;
    }
    let fix = "install it (`apt-get install -y pgbouncer`), or run `scripts/test.sh`, \
               which installs the test prerequisites";
    // (a `pgbouncer` that does not run counts as missing)
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: `pgbouncer` is not installed, and CI must run the pooler tests: {fix}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: `pgbouncer` is not installed (or does not run); {fix}"
    );
    false
}

/// Returns from the calling test, with a skip message, when PgBouncer is not
/// installed (see [`pgbouncer_available`]).
#[macro_export]
macro_rules! skip_without_pgbouncer {
    () => {
        if !$crate::pgbouncer_available(
            ::std::thread::current()
                .name()
                .unwrap_or(::std::module_path!()),
        ) {
            return;
        }
    };
}

/// How a [`PgBouncer`] pools server connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// One server connection per client connection, for the client's lifetime.
    Session,
    /// A server connection per transaction (Neon's pooled endpoints).
    Transaction,
}

/// A PgBouncer process of this test, started from the installed binary
/// (Debian's `pgbouncer`; as root it is run with `-u postgres`), listening on a
/// free 127.0.0.1 port, in front of the [`TestDb`]'s server. It serves every
/// database name of that server (`* =` entry), trusts the users it was given
/// (auth file) and logs in to the server with their passwords. Killed, and its
/// files removed, on drop.
pub struct PgBouncer {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
    config: Config,
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` in front of `db`'s server, for `db`'s superuser.
    pub async fn start(db: &TestDb, mode: PoolMode) -> PgBouncer {
        PgBouncer::start_with(db, mode, &[], "").await
    }

    /// Like [`PgBouncer::start`], also letting in the users of `logins` (e.g. from
    /// [`TestDb::login_role`]), with their passwords.
    pub async fn start_for(db: &TestDb, mode: PoolMode, logins: &[Config]) -> PgBouncer {
        PgBouncer::start_with(db, mode, logins, "").await
    }

    /// Like [`PgBouncer::start_for`], with `extra_settings` (lines for the
    /// `[pgbouncer]` section, e.g. `"server_round_robin = 1\n"`) appended.
    pub async fn start_with(
        db: &TestDb,
        mode: PoolMode,
        logins: &[Config],
        extra_settings: &str,
    ) -> PgBouncer {
        use std::fmt::Write;
        use tokio_postgres::config::Host;
        let binary = pgbouncer_binary().unwrap_or_else(|| {
            panic!("`pgbouncer` is not installed, or does not run: `apt-get install -y pgbouncer`")
        });
        let dir = shared_temp_dir("sync-pgbouncer");
        let admin = db.config();
        let mut users = String::new();
        for c in std::iter::once(&admin).chain(logins) {
            let user = c.get_user().unwrap_or("postgres");
            let password = c
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            writeln!(users, "\"{user}\" \"{}\"", password.replace('"', "\"\"")).unwrap();
        }
        write_for_postgres(&dir.join("users.txt"), &users, 0o600);
        let server_host = match admin.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        let server_port = admin.get_ports().first().copied().unwrap_or(5432);
        let port = free_loopback_port();
        let ini = format!(
            "[databases]\n\
             * = host={server_host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {auth}\n\
             pool_mode = {mode}\n\
             default_pool_size = 10\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             {extra_settings}\n",
            auth = dir.join("users.txt").display(),
            mode = match mode {
                PoolMode::Session => "session",
                PoolMode::Transaction => "transaction",
            },
        );
        write_for_postgres(&dir.join("pgbouncer.ini"), &ini, 0o644);
        let log = std::fs::File::create(dir.join("pgbouncer.log")).expect("log file");
        let mut cmd = std::process::Command::new(&binary);
        if running_as_root() {
            // PgBouncer refuses to run as root; -u switches user at start-up.
            cmd.args(["-u", "postgres"]);
        }
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let config = at_loopback_port(&admin, port);
        let mut bouncer = PgBouncer {
            child,
            dir,
            port,
            config,
        };
        bouncer.wait_until_listening().await;
        bouncer
    }

    async fn wait_until_listening(&mut self) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited ({status}) at start-up:\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "pgbouncer did not listen on 127.0.0.1:{} within 10 s:\n{}",
            self.port,
            self.log()
        );
    }

    /// What PgBouncer logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    /// The port PgBouncer listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The [`TestDb`]'s superuser settings, pointed at PgBouncer.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// `login` (e.g. from [`TestDb::login_role`]) pointed at PgBouncer; its user
    /// must have been given to [`PgBouncer::start_for`].
    pub fn config_for(&self, login: &Config) -> Config {
        at_loopback_port(login, self.port)
    }

    /// A libpq URL for [`PgBouncer::config`].
    pub fn url(&self) -> String {
        config_url(&self.config)
    }
}

/// `c`'s user, password, database and application name, at 127.0.0.1:`port`
/// (`Config::host` adds a host rather than replacing, so start afresh).
fn at_loopback_port(c: &Config, port: u16) -> Config {
    let mut out = Config::new();
    out.host("127.0.0.1").port(port);
    if let Some(user) = c.get_user() {
        out.user(user);
    }
    if let Some(password) = c.get_password() {
        out.password(password);
    }
    if let Some(db) = c.get_dbname() {
        out.dbname(db);
    }
    if let Some(app) = c.get_application_name() {
        out.application_name(app);
    }
    out
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway PostgreSQL cluster with TLS switched on, its certificates made by
/// the test setup (rcgen): a CA ("sync-tests CA") and a server certificate for
/// the host name `localhost` only — so connecting to `127.0.0.1` passes
/// `verify-ca` but not `verify-full`. Shared by the tests of one process while
/// any holds it; stopped and removed when the last handle drops.
pub struct TlsServer {
    cluster: Option<tempcluster::TempCluster>,
    dir: PathBuf,
}

static TLS_SERVER: Mutex<std::sync::Weak<TlsServer>> = Mutex::new(std::sync::Weak::new());

impl TlsServer {
    /// Starts (or joins) the process's TLS cluster.
    pub fn start() -> Arc<TlsServer> {
        let mut shared = TLS_SERVER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let dir = shared_temp_dir("sync-tls");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sync-tests CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        write_for_postgres(&dir.join("ca.pem"), &ca.pem(), 0o644);
        write_for_postgres(&dir.join("server.crt"), &server_cert.pem(), 0o644);
        write_for_postgres(&dir.join("server.key"), &server_key.serialize_pem(), 0o600);
        let cert = dir.join("server.crt").display().to_string();
        let key = dir.join("server.key").display().to_string();
        let cluster = tempcluster::TempCluster::start(&[
            ("ssl", "on"),
            ("ssl_cert_file", &cert),
            ("ssl_key_file", &key),
        ])
        .unwrap_or_else(|e| panic!("starting the TLS cluster: {e}"));
        let server = Arc::new(TlsServer {
            cluster: Some(cluster),
            dir,
        });
        *shared = Arc::downgrade(&server);
        server
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's port (on localhost).
    pub fn port(&self) -> u16 {
        self.cluster.as_ref().expect("running").port()
    }

    /// A URL for the superuser `postgres` (password `postgres`), database
    /// `postgres`, on `host` (`localhost` or `127.0.0.1`), followed by `params`
    /// (e.g. `sslmode=require`; empty for none).
    pub fn url(&self, host: &str, params: &str) -> String {
        let cluster = self.cluster.as_ref().expect("running");
        let mut url = format!(
            "postgresql://postgres:postgres@{host}:{}/postgres",
            cluster.port()
        );
        if !params.is_empty() {
            url = format!("{url}?{params}");
        }
        url
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        drop(self.cluster.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `sync-migrate` executable, built once per test process with the same
/// cargo and target directory as the tests.
pub fn sync_migrate_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built(&["-p", "sync-cli", "--bin", "sync-migrate"], "sync-migrate"))
        .clone()
}

/// The `sync_worker` example's executable, built once per test process.
pub fn sync_worker_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built(&["--example", "sync_worker"], "sync_worker"))
        .clone()
}

/// The `count_worker` example of this crate (the reporter crash test's
/// worker), built once per test process.
pub fn count_worker_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        built(
            &["-p", "sync-tests", "--example", "count_worker"],
            "count_worker",
        )
    })
    .clone()
}

/// `cargo build <args>` of this workspace; the executable of target `name`.
fn built(args: &[&str], name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--message-format=json"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("running cargo build for {name}: {e}"));
    assert!(
        out.status.success(),
        "building {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == name)
        .find_map(|v| v.get("executable")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for {name}"))
}

/// Waits until no other session of `c`'s database is running a statement or
/// holding a transaction open: after a `kill -9` of a client, a statement it
/// had sent (a `COMMIT`, say) may still be running on its backend, and reads
/// made before it ends race with it. Panics after `bound`.
pub async fn wait_for_other_sessions_to_settle(
    c: &tokio_postgres::Client,
    bound: std::time::Duration,
) {
    let started = std::time::Instant::now();
    loop {
        let busy: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')",
                &[],
            )
            .await
            .expect("reading pg_stat_activity")
            .get(0);
        if busy == 0 {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "another session of this database stays busy for {bound:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Every embedded migration's version, oldest first (`[1, 24, 25, …]`): what
/// `apply` on an empty database applies. Checked against the folder's known
/// start, so a lost migration fails here rather than passing everywhere.
pub fn all_versions() -> Vec<i32> {
    let v: Vec<i32> = sync_migrations::embedded_migrations()
        .iter()
        .map(|m| m.version)
        .collect();
    assert!(v.starts_with(&[1, 24, 25, 26, 27, 28, 29]), "{v:?}");
    assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
    v
}

/// The embedded versions from `first` on (e.g. 24: what `apply` applies when
/// only 0001 is in the history).
pub fn versions_from(first: i32) -> Vec<i32> {
    all_versions().into_iter().filter(|v| *v >= first).collect()
}
