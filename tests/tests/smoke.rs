//! Quick end-to-end check of the harness and the migrator.
use sync_tests::TestDb;

#[tokio::test]
async fn apply_twice_verify_rollback_apply() {
    let db = TestDb::empty().await;
    let mut c = db.client().await;
    let opts = sync_migrations::MigrateOptions::default();
    let first = sync_migrations::apply(&mut c, &opts).await.unwrap();
    assert_eq!(
        first.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![1, 24]
    );
    let second = sync_migrations::apply(&mut c, &opts).await.unwrap();
    assert!(second.applied.is_empty());
    let report = sync_migrations::verify(&c).await.unwrap();
    println!("{}", report.to_table());
    assert!(report.is_ok());
    let out = sync_migrations::rollback_0024_dropping_data(&mut c, &opts)
        .await
        .unwrap();
    assert_eq!(out, sync_migrations::RollbackOutcome::RolledBack);
    assert!(!sync_migrations::verify(&c).await.unwrap().is_ok());
    let third = sync_migrations::apply(&mut c, &opts).await.unwrap();
    assert_eq!(
        third.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![24]
    );
}
