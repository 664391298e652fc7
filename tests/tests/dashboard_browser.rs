//! The dashboard in a real browser: Debian's `chromium` driven through
//! `chromedriver` with fantoccini (WebDriver), against the service on a real
//! listener (login role neither superuser nor owner: RLS decides).
//!
//! A simulated worker ticks a sync through the store; the test asserts the
//! bar advances without a reload (over the SSE stream), that org B's user sees
//! none of org A's syncs, that `<script>`/`<img onerror>` payloads in a sync
//! id and an error message render as text, that the page fits 375 px, and
//! saves screenshots in `$CARGO_TARGET_TMPDIR/dashboard_browser/` (set
//! `DASHBOARD_SCREENSHOT=<path>` to also write the desktop one there, e.g.
//! `docs/dashboard.png`). It prints first paint and live-update latencies.
//!
//! Without chromium/chromedriver it prints SKIPPED; under CI (`CI` set) it
//! fails instead (`.ci/run` installs them through `scripts/test.sh`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sync_api::auth::KeySource;
use sync_store::{ProgressDelta, PutPreview, StartSync, SyncEntityType, SyncType};

mod api_common;
use api_common::{claims, sign_hs256, Service};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-browser";
const XSS_ID: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
const XSS_MESSAGE: &str = "<img src=x onerror=\"window.__xss=3\"><b>bold</b>";

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from))
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// chromium and chromedriver, or `None` after a SKIPPED line (a panic under CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_binary(&["chromium", "chromium-browser", "google-chrome"]));
    let driver = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find_binary(&["chromedriver"]));
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            let fix = "install them (`apt-get install -y chromium chromium-driver`), or run \
                       `scripts/test.sh`, which installs the test prerequisites";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("dashboard_browser: chromium/chromedriver are not installed, and CI must run the browser test: {fix}");
            }
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED dashboard_browser: chromium/chromedriver are not installed; {fix}"
            );
            None
        }
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start(path: &PathBuf) -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn session(driver: &Driver, chromium: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--no-first-run", "--disable-extensions"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

/// Runs `script` (a function body returning a value) until it returns
/// something other than null/false, for at most `secs`.
async fn until(c: &Client, script: &str, secs: u64, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if !(v.is_null() || v == Value::Bool(false)) {
            return v;
        }
        if Instant::now() > deadline {
            let text = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap();
            panic!("timed out waiting for {what}; page text: {text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sign_in(c: &Client, token: &str) {
    let form = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#signin:not([hidden]) #token"))
        .await
        .unwrap();
    form.send_keys(token).await.unwrap();
    c.find(Locator::Css("#signin-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn row_js(sync_id: &str, expr: &str) -> String {
    format!(
        "const id = {}; const tr = [...document.querySelectorAll('#active tbody tr')]\
           .find(t => t.dataset.syncId === id); return tr ? ({expr}) : null;",
        json!(sync_id)
    )
}

#[tokio::test]
async fn dashboard_in_chromium() {
    let Some((chromium, driver_path)) = browser() else {
        return;
    };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard_browser");
    std::fs::create_dir_all(&out).unwrap();

    let s = Service::start(KeySource::Hs256Secret(SECRET.to_vec())).await;
    let (org_a, org_b) = (s.fixture.org_a, s.fixture.org_b);
    let svc = s.fixture.store.service();
    let start = |id: &str, entity: SyncEntityType, total: i32| {
        let mut st = StartSync::new(id, entity);
        st.total_items = Some(total);
        st.source_system = Some("woocommerce".into());
        st
    };
    svc.start_sync(
        org_a,
        &start("woo-products-live", SyncEntityType::Product, 100),
    )
    .await
    .unwrap();
    svc.start_sync(org_a, &start(XSS_ID, SyncEntityType::Order, 50))
        .await
        .unwrap();
    svc.start_sync(
        org_a,
        &start("odoo-customers", SyncEntityType::Customer, 40),
    )
    .await
    .unwrap();
    let tick = |p: i32, f: i32| ProgressDelta {
        processed: p,
        failed: f,
        ..ProgressDelta::default()
    };
    svc.report_progress(org_a, "odoo-customers", &tick(38, 2))
        .await
        .unwrap();
    svc.start_sync(org_a, &start("shopify-orders", SyncEntityType::Order, 30))
        .await
        .unwrap();
    svc.report_progress(org_a, "shopify-orders", &tick(12, 0))
        .await
        .unwrap();
    svc.fail_sync(org_a, "shopify-orders", XSS_MESSAGE)
        .await
        .unwrap();
    svc.report_progress(org_a, XSS_ID, &tick(10, 1))
        .await
        .unwrap();
    svc.put_preview(
        org_a,
        &PutPreview::new(
            SyncType::Woocommerce,
            "woo-products-live",
            "woo-products-live:v1",
            json!({"create": [{"sku": "A-1", "name": "<script>alert(1)</script>"}], "update": [], "delete": []}),
        ),
    )
    .await
    .unwrap();
    svc.start_sync(
        org_b,
        &start("org-b-secret-sync", SyncEntityType::Invoice, 10),
    )
    .await
    .unwrap();

    let driver = Driver::start(&driver_path).await;
    let c = session(&driver, &chromium).await;
    let token_a = sign_hs256(SECRET, &claims(s.fixture.user_a), None);
    let token_b = sign_hs256(SECRET, &claims(s.fixture.user_b), None);

    c.goto(&format!("{}/", s.base)).await.unwrap();
    sign_in(&c, &token_a).await;
    until(
        &c,
        &row_js("woo-products-live", "true"),
        20,
        "org A's active sync",
    )
    .await;
    // The token is in session storage, never in the URL.
    let url = c.current_url().await.unwrap();
    assert!(!url.as_str().contains(&token_a[..20]), "{url}");

    // First paint: reload with the stored token; the browser's own numbers.
    c.refresh().await.unwrap();
    until(
        &c,
        &row_js("woo-products-live", "true"),
        20,
        "the rows after a reload",
    )
    .await;
    let paint = c
        .execute(
            "const fcp = performance.getEntriesByName('first-contentful-paint')[0];
             const data = performance.getEntriesByName('dashboard-data')[0];
             const nav = performance.getEntriesByType('navigation')[0];
             return {fcp: fcp ? fcp.startTime : null, data: data ? data.startTime : null,
                     dcl: nav ? nav.domContentLoadedEventEnd : null};",
            vec![],
        )
        .await
        .unwrap();

    // Live updates without a reload: a marker on window survives only if the
    // page is not reloaded; the stream is up (no polling fallback).
    c.execute("window.__marker = 42; return true", vec![])
        .await
        .unwrap();
    until(
        &c,
        "return document.getElementById('live').textContent === 'live'",
        20,
        "the live stream",
    )
    .await;
    let mut latencies = Vec::new();
    let mut handled = 0;
    for _ in 0..5 {
        let before = now_ms();
        svc.report_progress(org_a, "woo-products-live", &tick(9, 1))
            .await
            .unwrap();
        let committed = now_ms();
        handled += 10;
        let rendered = until(
            &c,
            &row_js(
                "woo-products-live",
                &format!(
                    "tr.dataset.handled === '{handled}' && \
                     tr.querySelector('progress').value === {handled} ? Number(tr.dataset.renderedAt) : null"
                ),
            ),
            20,
            "the bar to advance",
        )
        .await
        .as_f64()
        .unwrap();
        latencies.push((rendered - committed, committed - before));
    }
    let marker = c.execute("return window.__marker", vec![]).await.unwrap();
    assert_eq!(marker, json!(42), "the page was reloaded");
    let cells = c
        .execute(
            &row_js("woo-products-live", "[...tr.cells].map(c => c.textContent)"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cells[2], "45", "{cells}");
    assert_eq!(cells[3], "5", "{cells}");
    assert!(cells[1].as_str().unwrap().contains("50 %"), "{cells}");

    // XSS payloads render as text, nothing runs, no element is made from them.
    let xss = c
        .execute(
            &format!(
                "{} const recent = document.querySelector('#recent').textContent;
                 return {{ran: window.__xss === undefined ? null : window.__xss,
                   link: tr && tr.querySelector('a').textContent,
                   imgs: document.querySelectorAll('main img, main b').length,
                   scripts: document.scripts.length,
                   msg: recent.includes({})}};",
                row_js(XSS_ID, "tr").replacen("return tr ? (tr) : null;", "", 1),
                json!(XSS_MESSAGE)
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(xss["ran"], Value::Null, "{xss}");
    assert_eq!(xss["link"], XSS_ID, "{xss}");
    assert_eq!(xss["imgs"], 0, "{xss}");
    assert_eq!(xss["scripts"], 1, "{xss}");
    assert_eq!(xss["msg"], true, "{xss}");
    // The style sheet applied (style-src 'self') and the metrics rendered.
    let styled = c
        .execute(
            "return getComputedStyle(document.querySelector('header.top')).display === 'flex'
                && document.querySelectorAll('#metrics dd').length > 5
                && document.querySelectorAll('#chart rect').length > 0",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(styled, json!(true));
    let shot = c.screenshot().await.unwrap();
    std::fs::write(out.join("dashboard.png"), &shot).unwrap();
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &shot).unwrap();
    }

    // Readable at 375 px: nothing wider than the viewport (tables scroll inside).
    c.set_window_size(375, 812).await.unwrap();
    let fits = until(
        &c,
        "return document.documentElement.clientWidth <= 375 ? document.documentElement.scrollWidth <= document.documentElement.clientWidth : null",
        10,
        "the narrow window",
    )
    .await;
    assert_eq!(fits, json!(true), "horizontal overflow at 375 px");
    std::fs::write(out.join("dashboard-375.png"), c.screenshot().await.unwrap()).unwrap();
    c.set_window_size(1280, 1000).await.unwrap();

    // A payload in the URL fragment is shown as text too.
    c.execute(
        "location.hash = '#/sync/' + encodeURIComponent('<img src=x onerror=\"window.__xss=4\">'); return true",
        vec![],
    )
    .await
    .unwrap();
    until(
        &c,
        "return document.getElementById('detail-title').textContent === '<img src=x onerror=\"window.__xss=4\">' && document.getElementById('detail-progress').textContent.includes('No such sync')",
        20,
        "the fragment's payload as a title",
    )
    .await;
    assert_eq!(
        c.execute(
            "return [window.__xss === undefined, document.querySelectorAll('main img').length]",
            vec![]
        )
        .await
        .unwrap(),
        json!([true, 0])
    );

    // One sync's page: live progress, pretty-printed preview (as text), activity.
    c.execute(
        "location.hash = '#/sync/' + encodeURIComponent('woo-products-live'); return true",
        vec![],
    )
    .await
    .unwrap();
    let detail = until(
        &c,
        "const pre = document.querySelector('#preview pre');
         const rows = document.querySelectorAll('#activity tbody tr').length;
         return pre && rows > 0 ? {pre: pre.textContent, rows} : null",
        20,
        "the sync's page",
    )
    .await;
    assert!(
        detail["pre"]
            .as_str()
            .unwrap()
            .contains("<script>alert(1)</script>"),
        "{detail}"
    );
    svc.report_progress(org_a, "woo-products-live", &tick(50, 0))
        .await
        .unwrap();
    // Completion arrives live on the sync's page, then on the overview.
    until(
        &c,
        "return document.getElementById('detail-progress').dataset.handled === '100'",
        20,
        "completion on the sync's page",
    )
    .await;
    until(
        &c,
        "return [...document.querySelectorAll('#activity tbody td')].some(td => td.textContent === 'sync_complete')",
        20,
        "the sync_complete entry",
    )
    .await;
    std::fs::write(
        out.join("dashboard-sync.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.execute("location.hash = '#/'; return true", vec![])
        .await
        .unwrap();
    until(
        &c,
        "const r = [...document.querySelectorAll('#recent tbody tr')].find(t => t.dataset.syncId === 'woo-products-live');
         return r && r.textContent.includes('completed') && !document.querySelector('#active tbody tr[data-sync-id=\"woo-products-live\"]')",
        20,
        "the finished sync among the recent ones",
    )
    .await;
    assert_eq!(
        c.execute("return window.__marker", vec![]).await.unwrap(),
        json!(42)
    );

    // Org B's user: none of org A's syncs anywhere on the page.
    c.find(Locator::Id("signout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&c, &token_b).await;
    until(&c, &row_js("org-b-secret-sync", "true"), 20, "org B's sync").await;
    until(
        &c,
        "return document.querySelectorAll('#metrics dd').length > 0",
        20,
        "org B's metrics",
    )
    .await;
    let text = c
        .execute("return document.body.innerText", vec![])
        .await
        .unwrap();
    let text = text.as_str().unwrap();
    for a in [
        "woo-products-live",
        "odoo-customers",
        "shopify-orders",
        "<script>",
    ] {
        assert!(!text.contains(a), "org B sees {a:?}: {text}");
    }
    // Org A's sync page, opened by org B's user: not found.
    c.execute(
        "location.hash = '#/sync/' + encodeURIComponent('woo-products-live'); return true",
        vec![],
    )
    .await
    .unwrap();
    until(
        &c,
        "return document.getElementById('detail-progress').textContent.includes('No such sync')",
        20,
        "the not-found message",
    )
    .await;
    c.close().await.unwrap();

    let live: Vec<f64> = latencies.iter().map(|l| l.0).collect();
    eprintln!(
        "dashboard_browser: first contentful paint {:?} ms, data rendered {:?} ms, DOMContentLoaded {:?} ms after navigation; \
         live update (worker commit -> bar rendered) {:?} ms; screenshots in {}",
        paint["fcp"], paint["data"], paint["dcl"], live.iter().map(|v| v.round()).collect::<Vec<_>>(), out.display()
    );
}

/// The service on `addr` over `login`, until `stop` fires (graceful: the
/// feed ends every stream, then the server drains).
async fn serve_at(
    addr: std::net::SocketAddr,
    login: &tokio_postgres::Config,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let tls = sync_connect::TlsOptions::resolve(None, None).unwrap();
    let pool = sync_connect::pool_with_wait(login, &tls, 4, Duration::from_secs(5)).unwrap();
    let verifier = sync_api::auth::Verifier::new(sync_api::auth::AuthConfig {
        keys: KeySource::Hs256Secret(SECRET.to_vec()),
        issuer: api_common::ISSUER.into(),
        audience: api_common::AUDIENCE.into(),
        jwks_min_refresh: sync_api::auth::JWKS_MIN_REFRESH,
    })
    .await
    .unwrap();
    let feed = sync_api::sse::Feed::new(sync_api::sse::FeedConfig::default());
    let app = sync_api::router(
        sync_api::AppState::new(
            sync_store::Store::new(pool),
            std::sync::Arc::new(verifier),
            sync_api::Limits::default(),
        )
        .with_feed(feed.clone()),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let options = sync_api::server::ServeOptions {
        header_read_timeout: Duration::from_secs(10),
        drain: Duration::from_secs(2),
        write_timeout: Duration::from_secs(10),
    };
    tokio::spawn(async move {
        sync_api::server::serve_with(listener, app, options, async move {
            let _ = stop.await;
            feed.shutdown();
        })
        .await
        .unwrap();
    })
}

#[tokio::test]
async fn the_page_reconnects_after_the_service_restarts() {
    let Some((chromium, driver_path)) = browser() else {
        return;
    };
    let fixture = api_common::Fixture::new().await;
    let (_, login) = fixture.db.login_role("restart").await;
    let svc = fixture.store.service();
    let mut st = StartSync::new("restart-me", SyncEntityType::Product);
    st.total_items = Some(100);
    svc.start_sync(fixture.org_a, &st).await.unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let first = serve_at(addr, &login, stopped).await;

    let driver = Driver::start(&driver_path).await;
    let c = session(&driver, &chromium).await;
    c.goto(&format!("http://{addr}/")).await.unwrap();
    sign_in(&c, &sign_hs256(SECRET, &claims(fixture.user_a), None)).await;
    until(&c, &row_js("restart-me", "true"), 20, "the sync").await;
    until(
        &c,
        "return document.getElementById('live').textContent === 'live'",
        20,
        "the live stream",
    )
    .await;
    c.execute("window.__marker = 7; return true", vec![])
        .await
        .unwrap();
    let tick = ProgressDelta {
        processed: 10,
        ..ProgressDelta::default()
    };

    // The service goes away (its streams end), a tick lands while it is down,
    // and it comes back on the same address: the page reconnects by itself.
    let _ = stop.send(());
    first.await.unwrap();
    svc.report_progress(fixture.org_a, "restart-me", &tick)
        .await
        .unwrap();
    until(
        &c,
        "return document.getElementById('live').textContent.startsWith('reconnecting')",
        20,
        "the page to notice",
    )
    .await;
    let (_stop2, stopped2) = tokio::sync::oneshot::channel();
    let _second = serve_at(addr, &login, stopped2).await;
    until(
        &c,
        &row_js("restart-me", "tr.dataset.handled === '10'"),
        40,
        "the tick made while the service was down",
    )
    .await;
    svc.report_progress(fixture.org_a, "restart-me", &tick)
        .await
        .unwrap();
    until(
        &c,
        &row_js("restart-me", "tr.dataset.handled === '20'"),
        20,
        "a live tick after the reconnect",
    )
    .await;
    assert_eq!(
        c.execute("return window.__marker", vec![]).await.unwrap(),
        json!(7),
        "the page was reloaded"
    );
    c.close().await.unwrap();
}
