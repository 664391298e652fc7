//! The harness itself: fresh databases, isolation, cleanup, and the throwaway
//! cluster used when no server answers (forced with SYNC_TEST_TEMP_CLUSTER=1,
//! which `.ci/run` does once so that path cannot rot; and checked here with no
//! server answering at all).

use sync_tests::TestDb;

/// Set by [`no_server_answering_falls_back_to_a_throwaway_cluster`] for the
/// child run: the harness must have fallen back to its throwaway cluster.
const EXPECT_THROWAWAY: &str = "SYNC_TEST_EXPECT_THROWAWAY";

#[tokio::test]
async fn uses_the_expected_server() {
    let db = TestDb::empty().await;
    let c = db.client().await;
    let data_dir: String = c
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    let expect_throwaway = ["SYNC_TEST_TEMP_CLUSTER", EXPECT_THROWAWAY]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| v == "1"));
    if expect_throwaway {
        assert!(
            db.on_throwaway_cluster() && data_dir.contains("sync-tempcluster-"),
            "expected a throwaway cluster, got {data_dir}"
        );
    } else if std::env::var_os("DATABASE_URL").is_some() || std::env::var_os("CI").is_some() {
        // A server was named (or CI started one): it must be the one used.
        assert!(
            !db.on_throwaway_cluster() && !data_dir.contains("sync-tempcluster-"),
            "a throwaway cluster was started although a server answers"
        );
    }
    let name: String = c
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.name());
}

/// The README's promise: a plain `cargo test` with no server answering falls
/// back to a throwaway cluster. Runs this test binary again, filtered to
/// [`uses_the_expected_server`], with the libpq environment pointing at a
/// socket directory where nothing listens and an unused port.
#[test]
fn no_server_answering_falls_back_to_a_throwaway_cluster() {
    if std::env::var_os(EXPECT_THROWAWAY).is_some() {
        return; // the child run itself
    }
    let empty = std::env::temp_dir().join(format!("sync-no-server-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let unused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (host, port) in [
        (empty.display().to_string(), "5432".to_owned()),
        ("127.0.0.1".to_owned(), unused_port.to_string()),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "uses_the_expected_server", "--nocapture"])
            .env_remove("DATABASE_URL")
            .env_remove("SYNC_TEST_TEMP_CLUSTER")
            .env("PGHOST", &host)
            .env("PGPORT", &port)
            .env(EXPECT_THROWAWAY, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "PGHOST={host} PGPORT={port}: the harness did not fall back:\n{text}"
        );
    }
    let _ = std::fs::remove_dir(&empty);
}

#[tokio::test]
async fn databases_and_roles_are_dropped_with_the_test_db() {
    let db = TestDb::migrated().await;
    let (role, _) = db.login_role("probe").await;
    let name = db.name().to_owned();
    let observer = TestDb::empty().await;
    drop(db);
    let c = observer.client().await;
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) + (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
            &[&name, &role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn two_test_databases_do_not_share_rows() {
    let a = TestDb::migrated().await;
    let b = TestDb::migrated().await;
    a.client()
        .await
        .batch_execute("INSERT INTO organization (name) VALUES ('only in a')")
        .await
        .unwrap();
    let n: i64 = b
        .client()
        .await
        .query_one("SELECT count(*) FROM organization", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
