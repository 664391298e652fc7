//! The harness itself: fresh databases, isolation, cleanup, and the throwaway
//! cluster used when no server answers (forced with SYNC_TEST_TEMP_CLUSTER=1,
//! which `.ci/run` does once so that path cannot rot).

use sync_tests::TestDb;

#[tokio::test]
async fn uses_the_expected_server() {
    let db = TestDb::empty().await;
    let c = db.client().await;
    let data_dir: String = c
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    if std::env::var("SYNC_TEST_TEMP_CLUSTER").is_ok_and(|v| v == "1") {
        assert!(
            data_dir.contains("pgtemp-"),
            "expected a throwaway cluster, got {data_dir}"
        );
    } else {
        assert!(
            !data_dir.contains("pgtemp-"),
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
