//! A throwaway PostgreSQL cluster started from the installed server binaries,
//! without `sudo`.
//!
//! `initdb`, `pg_ctl` and the server refuse to run as root. As root they are run
//! as the `postgres` operating-system user through the process API
//! (`CommandExt::uid`/`gid`, which also drops root's supplementary groups);
//! otherwise as the current user. Nothing beyond the PostgreSQL server package is
//! needed (no `sudo`, no client package).
//!
//! The cluster listens on `127.0.0.1` at a free port (and on a unix socket in its
//! own directory only), trusts every local login, and is stopped (`pg_ctl stop -m
//! fast`, then immediate) and its directory removed when the [`TempCluster`] drops.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio_postgres::Config;

/// The installed PostgreSQL server binaries: `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
pub fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// A running throwaway cluster (see the module docs).
#[derive(Debug)]
pub struct TempCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    stopped: bool,
}

impl TempCluster {
    /// Starts a cluster with `params` (`postgresql.conf` settings, e.g.
    /// `("ssl", "on")`) on top of `max_connections = 200` and `fsync = off`.
    ///
    /// # Errors
    /// A message naming the step that failed (no server binaries; no `postgres`
    /// user when root; `initdb` or `pg_ctl start` failing, with the server log).
    pub fn start(params: &[(&str, &str)]) -> Result<TempCluster, String> {
        let bin = bindir().ok_or(
            "no PostgreSQL server binaries (initdb) found: install the PostgreSQL server \
             (apt-get install -y postgresql) or point DATABASE_URL at a server",
        )?;
        let run_as = if crate::running_as_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        // A port picked free can be taken before the server binds it: retry.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!(
                "sync-tempcluster-{}",
                uuid::Uuid::new_v4().simple()
            ));
            let mut cluster = TempCluster {
                bin: bin.clone(),
                dir,
                port: crate::free_loopback_port(),
                run_as,
                stopped: true,
            };
            match cluster.init_and_start(params) {
                Ok(()) => {
                    cluster.stopped = false;
                    return Ok(cluster);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir)
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("starting {what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({}):\n{}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            ))
        }
    }

    fn init_and_start(&self, params: &[(&str, &str)]) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let fail = |e: String| {
            let _ = std::fs::remove_dir_all(&self.dir);
            e
        };
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("chmod {}: {e}", self.dir.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .map_err(|e| fail(format!("chown {} to postgres: {e}", self.dir.display())))?;
        }
        let data = self.data_dir();
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"]);
        self.run(initdb, "initdb").map_err(fail)?;
        let mut conf = String::from("\n# sync-tests throwaway cluster\n");
        let port = self.port.to_string();
        let socket_dir = self.dir.display().to_string();
        let base = [
            ("listen_addresses", "127.0.0.1"),
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_str()),
            ("max_connections", "200"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
        ];
        for (k, v) in base.iter().chain(params) {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        text.push_str(&conf);
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "120", "start"]);
        self.run(start, "pg_ctl start").map_err(|e| {
            self.stop();
            fail(e)
        })
    }

    /// Starts a hot standby of this cluster: `pg_basebackup -R -X stream`
    /// (run as the same operating-system user as the server) into a new
    /// temporary directory, its own free port and socket directory, then
    /// `pg_ctl start`, which returns once the standby accepts read-only
    /// connections. The primary must allow replication connections from
    /// 127.0.0.1 — a throwaway cluster does: `initdb`'s `pg_hba.conf` has the
    /// `host replication all 127.0.0.1/32 trust` line, and the defaults
    /// `wal_level = replica` and `max_wal_senders = 10` are kept. Wait for
    /// [`TempCluster::wait_streaming`] before relying on replay.
    ///
    /// The standby is an ordinary [`TempCluster`]: dropped, it stops and its
    /// files are removed. Stop it before the primary to keep the primary's log
    /// free of walsender noise (not required).
    ///
    /// # Errors
    /// A message naming the step that failed (`pg_basebackup`, `pg_ctl start`,
    /// with its output and the standby's log).
    pub fn start_standby(&self) -> Result<TempCluster, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let standby = TempCluster {
                bin: self.bin.clone(),
                dir: std::env::temp_dir().join(format!(
                    "sync-tempcluster-standby-{}",
                    uuid::Uuid::new_v4().simple()
                )),
                port: crate::free_loopback_port(),
                run_as: self.run_as,
                stopped: true,
            };
            match standby.clone_and_start(self) {
                Ok(()) => {
                    let mut standby = standby;
                    standby.stopped = false;
                    return Ok(standby);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn clone_and_start(&self, primary: &TempCluster) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let fail = |e: String| {
            let _ = std::fs::remove_dir_all(&self.dir);
            e
        };
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("chmod {}: {e}", self.dir.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))
                .map_err(|e| fail(format!("chown {} to postgres: {e}", self.dir.display())))?;
        }
        let data = self.data_dir();
        let mut backup = self.command("pg_basebackup");
        backup
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]);
        self.run(backup, "pg_basebackup").map_err(fail)?;
        let port = self.port.to_string();
        let socket_dir = self.dir.display().to_string();
        // Later lines win: the primary's port and socket directory, copied by
        // the backup, are overridden.
        let mut conf = String::from("\n# sync-tests throwaway standby\n");
        for (k, v) in [
            ("port", port.as_str()),
            ("unix_socket_directories", socket_dir.as_str()),
            ("hot_standby", "on"),
        ] {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        text.push_str(&conf);
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
        self.start_server_inner().map_err(|e| {
            self.stop();
            fail(e)
        })
    }

    fn start_server_inner(&self) -> Result<(), String> {
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "120", "start"]);
        self.run(start, "pg_ctl start")
    }

    /// Waits (at most 60 s) until this standby's WAL receiver is streaming
    /// (`pg_stat_wal_receiver.status = 'streaming'`).
    ///
    /// # Errors
    /// When it does not stream within the bound (the standby's log is in the message).
    pub async fn wait_streaming(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mut config = self.config();
            config.connect_timeout(std::time::Duration::from_secs(5));
            if let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await {
                let task = tokio::spawn(conn);
                let streaming = client
                    .query_opt(
                        "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                        &[],
                    )
                    .await
                    .is_ok_and(|r| r.is_some());
                drop(client);
                let _ = task.await;
                if streaming {
                    return Ok(());
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the standby on port {} is not streaming after 60 s:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`, then immediate) and keeps its
    /// files; [`TempCluster::start_server`] starts it again.
    pub fn stop_server(&mut self) {
        if !self.stopped {
            self.stop();
            self.stopped = true;
        }
    }

    /// Starts a server stopped by [`TempCluster::stop_server`] (`pg_ctl start
    /// -w`: a standby resumes replication).
    ///
    /// # Errors
    /// When `pg_ctl start` fails (the server log is in the message).
    pub fn start_server(&mut self) -> Result<(), String> {
        if self.stopped {
            self.start_server_inner()?;
            self.stopped = false;
        }
        Ok(())
    }

    fn stop(&self) {
        for mode in ["fast", "immediate"] {
            let mut stop = self.command("pg_ctl");
            stop.arg("-D")
                .arg(self.data_dir())
                .args(["-m", mode, "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if stop.status().is_ok_and(|s| s.success()) {
                return;
            }
        }
    }

    /// The cluster's directory (data directory, socket, log all inside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory (`SHOW data_directory` on the server).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The port the server listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser `postgres`, database `postgres`, at 127.0.0.1 (trust auth).
    pub fn config(&self) -> Config {
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        c
    }

    /// [`TempCluster::config`] as a URL.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// [`TempCluster::config`] for database `dbname`.
    pub fn config_for(&self, dbname: &str) -> Config {
        let mut c = self.config();
        c.dbname(dbname);
        c
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `pg_ctl restart -m <mode>`, waiting (at most 120 s) until it accepts
    /// connections again.
    ///
    /// # Panics
    /// When the restart fails (the server log is in the message).
    pub fn restart(&self, mode: StopMode) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-m", mode.flag(), "-w", "-t", "120", "restart"]);
        if let Err(e) = self.run(cmd, "pg_ctl restart") {
            panic!("{e}");
        }
    }

    /// SIGKILLs the postmaster, as a crash would; [`TempCluster::restart`]
    /// (or a start) recovers.
    ///
    /// # Panics
    /// When there is no `postmaster.pid` or the signal cannot be sent.
    pub fn kill_postmaster(&self) {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("postmaster.pid (is the cluster running?)");
        let pid = pid_file
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let out = Command::new("kill")
            .args(["-KILL", &pid])
            .output()
            .expect("kill");
        assert!(out.status.success(), "kill -KILL {pid}: {out:?}");
    }
}

/// How `pg_ctl` stops the server (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `fast`: rolls back open transactions, disconnects clients.
    Fast,
    /// `immediate`: every server process quits at once; crash recovery on start.
    Immediate,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop();
            self.stopped = true;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Uid and gid of the `postgres` operating-system user, from the user database.
fn postgres_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("running `id`: {e}"))?;
        if !out.status.success() {
            return Err(
                "running as root, and there is no `postgres` operating-system user \
                        to run the server as (install PostgreSQL: apt-get install -y postgresql)"
                    .to_owned(),
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("`id {flag} postgres`: {e}"))
    };
    Ok((id("-u")?, id("-g")?))
}
