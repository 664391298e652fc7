#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config, NoTls};

pub mod tempcluster;

/// Maximum connections of a [`TestDb::pool`] (the server allows 100 in all).
pub const POOL_SIZE: usize = 12;

struct Server {
    /// Admin connection settings (superuser) for any existing database.
    admin: Config,
    /// Keeps a throwaway cluster alive; `None` for an external server.
    cluster: Option<tempcluster::TempCluster>,
}

struct Shared {
    server: Option<Arc<Server>>,
    live: usize,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    server: None,
    live: 0,
});

fn start_temp_cluster() -> Server {
    let cluster = tempcluster::TempCluster::start(&[])
        .unwrap_or_else(|e| panic!("no server answered, and a throwaway cluster failed: {e}"));
    Server {
        admin: cluster.config(),
        cluster: Some(cluster),
    }
}

/// Blocking probe of a server, on a private runtime (safe from any context).
fn answers(config: &Config) -> bool {
    let config = config.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut c = config;
            c.connect_timeout(std::time::Duration::from_secs(3));
            c.connect(NoTls).await.is_ok()
        })
    })
    .join()
    .unwrap_or(false)
}

fn server() -> Arc<Server> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared.live += 1;
    if let Some(s) = &shared.server {
        return s.clone();
    }
    let force_temp = std::env::var("SYNC_TEST_TEMP_CLUSTER").is_ok_and(|v| v == "1");
    let external = if force_temp {
        None
    } else {
        sync_connect::resolve_config(None).ok().filter(answers)
    };
    let server = Arc::new(match external {
        Some(admin) => Server {
            admin,
            cluster: None,
        },
        None => start_temp_cluster(),
    });
    shared.server = Some(server.clone());
    server
}

fn release_server() {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared.live -= 1;
    if shared.live == 0 {
        // Dropping the last handle stops a throwaway cluster and removes its files.
        shared.server = None;
    }
}

/// Opens a connection and drives it on the current runtime.
pub async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database: {e:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A pool over `config` (deadpool, fast recycling, [`POOL_SIZE`] connections).
pub fn pool_for(config: &Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .expect("pool")
}

/// A fresh database for one test, dropped with its roles when this is dropped.
pub struct TestDb {
    server: Arc<Server>,
    name: String,
    config: Config,
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    /// A fresh, empty database (nothing applied).
    pub async fn empty() -> TestDb {
        let server = tokio::task::spawn_blocking(server).await.expect("server");
        let name = format!("sync_test_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&server.admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
        let mut config = server.admin.clone();
        config.dbname(&name);
        config.application_name("sync-tests");
        TestDb {
            server,
            name,
            config,
            roles: Mutex::new(Vec::new()),
        }
    }

    /// A fresh database with the workspace's migration files
    /// (`migrations/V*.sql`) run in version order, each in one transaction, as a
    /// plain SQL client would (no migration history is recorded): for examples
    /// and tests of crates that must not depend on `sync-migrations`.
    ///
    /// # Panics
    /// When a file cannot be read or fails.
    pub async fn with_migration_files() -> TestDb {
        let db = TestDb::empty().await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                let version = name.strip_prefix('V')?.split("__").next()?.parse().ok()?;
                Some((version, p))
            })
            .collect();
        files.sort();
        let client = db.client().await;
        for (_, path) in files {
            let sql = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            client
                .batch_execute(&format!("BEGIN;\n{sql}\n;COMMIT;"))
                .await
                .unwrap_or_else(|e| panic!("running {}: {e:?}", path.display()));
        }
        db
    }

    /// Whether this test runs on the harness's throwaway cluster (no server
    /// answered, or `SYNC_TEST_TEMP_CLUSTER=1`) rather than an existing server.
    pub fn on_throwaway_cluster(&self) -> bool {
        self.server.cluster.is_some()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Superuser connection settings for this database.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// A new superuser connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.config).await
    }

    /// A new pool of superuser connections to this database.
    pub fn pool(&self) -> Pool {
        pool_for(&self.config)
    }

    /// A libpq connection URL for this database (for `psql`, `pg_dump`, the CLI).
    pub fn url(&self) -> String {
        config_url(&self.config)
    }

    /// Creates a LOGIN role that is neither superuser nor owner, member of
    /// `sync_tenant` (so the tenant scope can `SET LOCAL ROLE sync_tenant`), with
    /// CONNECT on this database. Returns its name and connection settings. The
    /// role is dropped with the database.
    pub async fn login_role(&self, label: &str) -> (String, Config) {
        let role = format!("{}_{label}", self.name);
        let admin = self.client().await;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT \
                 NOBYPASSRLS PASSWORD 'x' IN ROLE sync_tenant; \
                 GRANT CONNECT ON DATABASE {db} TO {role}; \
                 GRANT USAGE ON SCHEMA public TO {role};",
                db = self.name
            ))
            .await
            .unwrap_or_else(|e| panic!("creating role {role}: {e:?}"));
        self.roles.lock().unwrap().push(role.clone());
        let mut config = self.config.clone();
        config.user(&role);
        config.password("x");
        (role, config)
    }
}

/// Renders settings as a libpq URL (unix-socket hosts go in `?host=`).
pub fn config_url(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut url = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => format!("postgresql://{user}@{h}:{port}/{db}"),
        Some(Host::Unix(p)) => {
            format!("postgresql://{user}@/{db}?host={}&port={port}", p.display())
        }
        None => format!("postgresql://{user}@localhost:{port}/{db}"),
    };
    if let Some(pw) = config.get_password() {
        let pw = String::from_utf8_lossy(pw);
        url = url.replacen(&format!("{user}@"), &format!("{user}:{pw}@"), 1);
    }
    url
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.server.admin.clone();
        let name = self.name.clone();
        let roles = std::mem::take(&mut *self.roles.lock().unwrap());
        // Drop may run inside or outside a runtime: clean up on a thread of our own.
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = connect(&admin).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                for role in roles {
                    client
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            })
        })
        .join();
        release_server();
        if let Ok(Err(e)) = result {
            if !std::thread::panicking() {
                panic!("dropping test database {}: {e:?}", self.name);
            }
        }
    }
}

/// Whether this process runs as root (then PostgreSQL and PgBouncer must be run
/// as the `postgres` operating-system user).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free loopback port")
        .port()
}
