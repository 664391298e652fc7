//! A throwaway PostgreSQL cluster of a test's own, for tests that must stop,
//! restart or kill the server (never the shared one other tests use).
//!
//! [`Cluster::start`] runs `initdb` into a fresh temporary directory and starts
//! the server on a free TCP port of 127.0.0.1 (unix socket in the data
//! directory). As root, every server binary runs as the `postgres` OS user
//! through `runuser` (util-linux; no `sudo`). Dropping the cluster stops it
//! (`immediate`) and removes its directory.
//!
//! Every wait is bounded: `pg_ctl -w -t 60` for start, stop and restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio_postgres::Config;

/// How `pg_ctl` stops the server (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `smart`: waits for every client to disconnect.
    Smart,
    /// `fast`: rolls back open transactions, disconnects clients.
    Fast,
    /// `immediate`: every server process quits at once; crash recovery on start.
    Immediate,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL cluster owned by one test.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The server options (`pg_ctl -o`) it was started with.
    opts: String,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A TCP port of 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Cluster {
    /// `initdb` (trust authentication, superuser `postgres`, no fsync of the
    /// initial files) and start on a free port; `settings` are extra
    /// `-c name=value` server settings.
    ///
    /// # Panics
    /// When the PostgreSQL binaries are missing (see `pg_config --bindir`), or
    /// `initdb` / the start fail (the server log is in the message).
    pub fn start(settings: &[(&str, &str)]) -> Cluster {
        let bin = crate::tempcluster::bindir()
            .expect("PostgreSQL server binaries (initdb, pg_ctl) must be installed");
        let dir = std::env::temp_dir().join(format!("sync-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let out = Command::new("chown")
                .args(["postgres"])
                .arg(&dir)
                .output()
                .expect("chown");
            assert!(out.status.success(), "chown: {out:?}");
        }
        let mut cluster = Cluster {
            data: dir.join("data"),
            dir,
            bin,
            port: 0,
            as_postgres,
            opts: String::new(),
        };
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data_str(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        // Retry on another port if the free one was taken in between.
        for _ in 0..5 {
            cluster.port = free_port();
            let mut opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
                cluster.port,
                cluster.data_str()
            );
            for (k, v) in settings {
                opts.push_str(&format!(" -c {k}={v}"));
            }
            let out = cluster.pg_ctl(&["-o", &opts, "-l", &cluster.log_str(), "start"]);
            if out.status.success() {
                cluster.opts = opts;
                return cluster;
            }
        }
        panic!("the throwaway cluster did not start: {}", cluster.log());
    }

    fn data_str(&self) -> String {
        self.data.to_string_lossy().into_owned()
    }

    fn log_str(&self) -> String {
        self.dir.join("server.log").to_string_lossy().into_owned()
    }

    /// Runs server binary `name` (as `postgres` when we are root).
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "-D",
            self.data.to_str().expect("utf-8 path"),
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// The TCP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Connection settings for `dbname` as superuser `postgres` over TCP,
    /// with a 5 s connect timeout.
    pub fn config(&self, dbname: &str) -> Config {
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// `postgres://postgres@127.0.0.1:<port>/<dbname>`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `pg_ctl restart -m <mode>`, waiting (at most 60 s) until it accepts
    /// connections again.
    ///
    /// # Panics
    /// When the restart fails (the server log is in the message).
    pub fn restart(&self, mode: StopMode) {
        let out = self.pg_ctl(&["-m", mode.flag(), "-l", &self.log_str(), "restart"]);
        assert!(
            out.status.success(),
            "restart failed: {}\n{}",
            text(&out),
            self.log()
        );
    }

    /// `pg_ctl stop -m <mode>` (at most 60 s).
    ///
    /// # Panics
    /// When the stop fails.
    pub fn stop(&self, mode: StopMode) {
        let out = self.pg_ctl(&["-m", mode.flag(), "stop"]);
        assert!(out.status.success(), "stop failed: {}", text(&out));
    }

    /// Starts a stopped (or killed) cluster again with the same options,
    /// retrying for up to ~10 s while the processes of a killed postmaster
    /// still hold its shared memory.
    ///
    /// # Panics
    /// When the start fails.
    pub fn start_again(&self) {
        let mut last = None;
        for _ in 0..10 {
            let out = self.pg_ctl(&["-o", &self.opts, "-l", &self.log_str(), "start"]);
            if out.status.success() {
                return;
            }
            last = Some(out);
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "start failed: {}\n{}",
            last.map(|o| text(&o)).unwrap_or_default(),
            self.log()
        );
    }

    /// SIGKILLs the postmaster (its children quit when they notice), as a
    /// crash would; [`Cluster::start_again`] recovers.
    ///
    /// # Panics
    /// When there is no `postmaster.pid`.
    pub fn kill_postmaster(&self) {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))
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
        assert!(out.status.success(), "kill -KILL {pid}: {}", text(&out));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
