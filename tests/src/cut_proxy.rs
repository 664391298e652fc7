//! A TCP proxy in front of a test server that can lose a connection at the
//! worst moment on purpose: after the server has done the work, before the
//! client hears of it (the "outcome unknown" case of a write).
//!
//! [`CutProxy::arm`] makes the next connection that receives server data the
//! victim: from then on its server replies are swallowed (the client waits).
//! [`CutProxy::cut`] then closes both sides of the victim. A test arms, starts
//! a write, waits until the write is visible from another connection (so it
//! certainly committed), and cuts: the client sees the connection lost with
//! the write applied. Other connections are forwarded untouched.
//!
//! [`CutProxy::lose_every`] loses replies at random-looking but counted points
//! instead: every n-th chunk the server sends closes its connection unforwarded,
//! as a network failure right after the server did the work would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_postgres::config::Host;
use tokio_postgres::Config;

struct State {
    armed: AtomicBool,
    /// Id of the victim connection (0 = none).
    victim: AtomicU64,
    next_id: AtomicU64,
    cut: tokio::sync::watch::Sender<u64>,
    /// Lose every n-th server chunk (0 = never).
    lose_every: AtomicU64,
    chunks: AtomicU64,
    lost: AtomicU64,
}

/// See the module documentation.
pub struct CutProxy {
    port: u16,
    upstream: Config,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect_upstream(config: &Config) -> std::io::Result<Box<dyn Stream>> {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => Ok(Box::new(
            UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?,
        )),
        Some(Host::Tcp(host)) => Ok(Box::new(TcpStream::connect((host.as_str(), port)).await?)),
        None => Ok(Box::new(
            UnixStream::connect(format!("/var/run/postgresql/.s.PGSQL.{port}")).await?,
        )),
    }
}

impl CutProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to the server of
    /// `upstream` (TCP or unix socket).
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(upstream: &Config) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            armed: AtomicBool::new(false),
            victim: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            cut: tokio::sync::watch::channel(0).0,
            lose_every: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let upstream_config = upstream.clone();
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = connect_upstream(&upstream_config).await else {
                    continue;
                };
                let id = st.next_id.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(pipe(id, client, server, st.clone()));
            }
        });
        CutProxy {
            port,
            upstream: upstream.clone(),
            state,
            task,
        }
    }

    /// The upstream's user, password, database and timeouts, with the proxy as
    /// the one host (a fresh `Config`: `Config::host` would add a second host).
    pub fn config(&self) -> Config {
        let up = &self.upstream;
        let mut c = Config::new();
        c.host("127.0.0.1").port(self.port);
        if let Some(user) = up.get_user() {
            c.user(user);
        }
        if let Some(password) = up.get_password() {
            c.password(password);
        }
        if let Some(db) = up.get_dbname() {
            c.dbname(db);
        }
        if let Some(t) = up.get_connect_timeout() {
            c.connect_timeout(*t);
        }
        c
    }

    /// The next connection that receives server data becomes the victim: its
    /// replies are swallowed until [`CutProxy::cut`].
    pub fn arm(&self) {
        self.state.victim.store(0, Ordering::SeqCst);
        self.state.armed.store(true, Ordering::SeqCst);
    }

    /// Whether a victim was chosen since [`CutProxy::arm`].
    pub fn has_victim(&self) -> bool {
        self.state.victim.load(Ordering::SeqCst) != 0
    }

    /// From now on every `n`-th chunk of server data (counted over all
    /// connections) is not forwarded, and its connection is closed; `0` stops it.
    pub fn lose_every(&self, n: u64) {
        self.state.lose_every.store(n, Ordering::SeqCst);
    }

    /// How many connections [`CutProxy::lose_every`] closed.
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::SeqCst)
    }

    /// Closes both sides of the victim connection.
    pub fn cut(&self) {
        self.state.cut.send_modify(|g| *g += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(id: u64, client: TcpStream, server: Box<dyn Stream>, st: Arc<State>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let mut cut = st.cut.subscribe();
    let to_server = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    };
    let to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if st.victim.load(Ordering::SeqCst) == id {
                continue; // swallowed
            }
            let every = st.lose_every.load(Ordering::SeqCst);
            if every > 0 && st.chunks.fetch_add(1, Ordering::SeqCst) % every == every - 1 {
                st.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if st.armed.swap(false, Ordering::SeqCst) {
                st.victim.store(id, Ordering::SeqCst);
                continue;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let cut_me = async {
        loop {
            if cut.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if st.victim.load(Ordering::SeqCst) == id {
                return;
            }
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
        _ = cut_me => {}
    }
    // Dropping the halves closes both sockets.
}
