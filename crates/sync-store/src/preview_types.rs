//! Row and input types of the preview cache.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::enums::SyncType;

/// A cached preview (`sync_preview_cache` row). `cache_key` is the caller's key,
/// without the `<org_id>:` prefix it is stored with (a row written by plain SQL
/// under a plain key shows that key as written).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PreviewEntry {
    /// Row id.
    pub id: Uuid,
    /// Owning org.
    pub org_id: Uuid,
    /// Source system.
    pub sync_type: SyncType,
    /// The sync this preview belongs to.
    pub sync_id: String,
    /// The computed delta.
    pub delta_json: serde_json::Value,
    /// When the delta was computed.
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
    /// When it stops being returned.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who computed it.
    pub computed_by: Option<Uuid>,
    /// The caller's key (no org prefix).
    pub cache_key: String,
    /// Row creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Input of `put_preview`.
#[derive(Debug, Clone, PartialEq)]
pub struct PutPreview {
    /// Source system.
    pub sync_type: SyncType,
    /// The sync this preview belongs to (1..=255 characters).
    pub sync_id: String,
    /// The caller's key (1..=[`crate::validate::MAX_CACHE_KEY_CHARS`] characters); stored
    /// as `<org_id>:<key>`, never visible to or collidable by other orgs.
    pub cache_key: String,
    /// The delta (at most [`crate::validate::MAX_DELTA_JSON_BYTES`] serialized, nested at
    /// most [`crate::validate::MAX_JSON_DEPTH`], no NUL in strings or keys).
    pub delta_json: serde_json::Value,
    /// When it was computed; `None` = the server's `now()`. Within
    /// [`crate::validate::MIN_TIMESTAMP`]..[`crate::validate::MAX_TIMESTAMP`] in UTC;
    /// stored floored to whole microseconds.
    pub computed_at: Option<OffsetDateTime>,
    /// Time to live from `computed_at` (positive, at most
    /// [`crate::validate::MAX_PREVIEW_TTL`]); `None` = the database default of 1 hour.
    pub ttl: Option<time::Duration>,
    /// Who computed it; in tenant scope `None` or the tenant user (`None` = the user).
    pub computed_by: Option<Uuid>,
}

impl PutPreview {
    /// A preview with the default TTL, computed now, by nobody in particular.
    pub fn new(
        sync_type: SyncType,
        sync_id: impl Into<String>,
        cache_key: impl Into<String>,
        delta_json: serde_json::Value,
    ) -> PutPreview {
        PutPreview {
            sync_type,
            sync_id: sync_id.into(),
            cache_key: cache_key.into(),
            delta_json,
            computed_at: None,
            ttl: None,
            computed_by: None,
        }
    }
}
