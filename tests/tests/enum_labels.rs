//! Labels the database has and this build does not read as `Other(label)`:
//! any label survives a read intact; known labels keep their variant; caller
//! input stays strict.

use proptest::prelude::*;
use sync_store::{SyncAction, SyncEntityType, SyncStatus, SyncType};

proptest! {
    #[test]
    fn any_label_reads_back_intact(label in "[a-z_]{1,63}") {
        let a = SyncAction::from_db_label(&label);
        prop_assert_eq!(a.as_str(), label.as_str());
        prop_assert_eq!(a.is_known(), label.parse::<SyncAction>().is_ok());
        let s = SyncStatus::from_db_label(&label);
        prop_assert_eq!(s.as_str(), label.as_str());
        let e = SyncEntityType::from_db_label(&label);
        prop_assert_eq!(e.to_string(), label.clone());
        let t = SyncType::from_db_label(&label);
        prop_assert_eq!(serde_json::to_string(&t).unwrap(), serde_json::to_string(&label).unwrap());
        // The same label twice is the same value (interned once).
        prop_assert_eq!(SyncAction::from_db_label(&label), a);
    }

    #[test]
    fn unicode_labels_read_back_intact(label in "\\PC{1,20}") {
        prop_assert_eq!(SyncStatus::from_db_label(&label).as_str(), label.as_str());
    }
}

#[test]
fn known_labels_keep_their_variant_and_input_stays_strict() {
    for a in SyncAction::ALL {
        assert_eq!(SyncAction::from_db_label(a.as_str()), *a);
        assert!(a.is_known());
    }
    for s in SyncStatus::ALL {
        assert_eq!(SyncStatus::from_db_label(s.as_str()), *s);
    }
    assert_eq!(
        SyncStatus::from_db_label("partial"),
        SyncStatus::Other("partial")
    );
    assert!("partial".parse::<SyncStatus>().is_err());
    assert!(serde_json::from_str::<SyncStatus>("\"partial\"").is_err());
    assert_eq!(
        serde_json::from_str::<SyncStatus>("\"completed\"").unwrap(),
        SyncStatus::Completed
    );
    assert_eq!(
        serde_json::to_string(&SyncAction::Other("sync_error")).unwrap(),
        "\"sync_error\""
    );
}
