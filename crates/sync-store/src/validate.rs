//! Checks run before any write, so a bad input is refused with a typed error
//! and nothing reaches the database. The limits are public constants.

use std::io::Write;

use crate::error::{Error, Result};

/// Maximum characters of a `sync_id` or `job_id` (their columns are `varchar(255)`).
pub const MAX_ID_CHARS: usize = 255;
/// Maximum characters of a `source_system` (`varchar(50)`).
pub const MAX_SOURCE_SYSTEM_CHARS: usize = 50;
/// Maximum characters of a caller's cache key: the stored key is
/// `<org_id>:<key>` (37 characters of prefix) in a `varchar(255)`.
pub const MAX_CACHE_KEY_CHARS: usize = 255 - 37;
/// Maximum size of a preview's `delta_json`, serialized (4 MiB).
pub const MAX_DELTA_JSON_BYTES: usize = 4 * 1024 * 1024;
/// Maximum size of a sync's `metadata`, serialized (256 KiB).
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// Largest reporter checkpoint, as compact JSON text, in bytes (a resume
/// point, not a data store; the database's own bound is looser, see migration 0027).
pub const MAX_CHECKPOINT_BYTES: usize = 8 * 1024;
/// Most a reporter's `stall_after` may be (migration 0027's CHECK
/// `sync_progress_stall_after_range`: above zero, at most 7 days).
pub const MAX_STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Maximum size of an `error_message` (64 KiB).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest preview TTL accepted (30 days).
pub const MAX_PREVIEW_TTL: time::Duration = time::Duration::days(30);
/// Largest page of [`crate::ActivityFilter`] listings and recent syncs.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Deepest nesting of arrays / objects accepted in `delta_json` and `metadata`
/// (`{}` is depth 1, `{"a": [1]}` depth 2). Reads decode JSON with serde_json,
/// which refuses 128 levels; PostgreSQL's parser runs out of stack (54001) at a
/// few thousand. 64 leaves room for the store's own wrapping (`_sync_outcome`).
pub const MAX_JSON_DEPTH: usize = 64;
/// Earliest timestamp a caller may write (`computed_at`, `created_at`):
/// 0001-01-01T00:00:00Z.
pub const MIN_TIMESTAMP: time::OffsetDateTime = time::macros::datetime!(0001-01-01 00:00 UTC);
/// Latest timestamp a caller may write, exclusive: 9999-01-01T00:00:00Z. With the
/// longest preview TTL (30 days) every timestamp the database derives from it
/// (`expires_at`) still decodes as a `time::OffsetDateTime` (years up to 9999).
pub const MAX_TIMESTAMP: time::OffsetDateTime = time::macros::datetime!(9999-01-01 00:00 UTC);
/// Reserved key of `sync_progress.metadata`: the outcome of an explicit fail or
/// cancel, written only by [`crate::ServiceScope::fail_sync`] and friends.
pub const OUTCOME_KEY: &str = "_sync_outcome";

pub(crate) fn text(op: &'static str, field: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(
            op,
            field,
            "contains a NUL character, which PostgreSQL text cannot hold",
        ));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(Error::invalid(
            op,
            field,
            format!("is {chars} characters long, at most {max_chars} allowed"),
        ));
    }
    Ok(())
}

pub(crate) fn id(op: &'static str, field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(op, field, "is empty"));
    }
    text(op, field, value, MAX_ID_CHARS)
}

pub(crate) fn cache_key(op: &'static str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(op, "cache_key", "is empty"));
    }
    text(op, "cache_key", key, MAX_CACHE_KEY_CHARS)
}

/// A key to look up or invalidate: the store's own keys (at most
/// [`MAX_CACHE_KEY_CHARS`]) or a key written by plain SQL (at most 255).
pub(crate) fn stored_cache_key(op: &'static str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(op, "cache_key", "is empty"));
    }
    text(op, "cache_key", key, MAX_ID_CHARS)
}

pub(crate) fn non_negative(op: &'static str, field: &str, value: i32) -> Result<()> {
    if value < 0 {
        return Err(Error::invalid(
            op,
            field,
            format!("is {value}, must be >= 0"),
        ));
    }
    Ok(())
}

pub(crate) fn finite_non_negative(op: &'static str, field: &str, value: f64) -> Result<()> {
    if !value.is_finite() || value < 0.0 {
        return Err(Error::invalid(
            op,
            field,
            format!("is {value}, must be a finite number >= 0"),
        ));
    }
    Ok(())
}

pub(crate) fn error_message(op: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(
            op,
            "error_message",
            "contains a NUL character",
        ));
    }
    if value.len() > MAX_ERROR_MESSAGE_BYTES {
        return Err(Error::invalid(
            op,
            "error_message",
            format!(
                "is {} bytes, at most {MAX_ERROR_MESSAGE_BYTES} allowed",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Counts the serialized size of a JSON value without keeping the bytes.
fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

pub(crate) fn json_size_at_most(
    op: &'static str,
    field: &str,
    value: &serde_json::Value,
    max: usize,
) -> Result<()> {
    let size = json_size(value);
    if size > max {
        return Err(Error::invalid(
            op,
            field,
            format!("is {size} bytes serialized, at most {max} allowed"),
        ));
    }
    Ok(())
}

pub(crate) fn metadata(op: &'static str, value: &serde_json::Value) -> Result<()> {
    let Some(map) = value.as_object() else {
        return Err(Error::invalid(op, "metadata", "must be a JSON object"));
    };
    if map.contains_key(OUTCOME_KEY) {
        return Err(Error::invalid(
            op,
            "metadata",
            format!("key {OUTCOME_KEY:?} is reserved for fail_sync / cancel_sync"),
        ));
    }
    json(op, "metadata", value, MAX_METADATA_BYTES)
}

/// A JSON document the store writes and reads back: nested at most
/// [`MAX_JSON_DEPTH`] levels, no NUL character in a string or key (jsonb
/// cannot hold `\u0000`), at most `max_bytes` serialized. The walk is
/// iterative, so a hostile depth cannot overflow the stack here; depth is
/// checked before anything serializes the value recursively.
pub(crate) fn json(
    op: &'static str,
    field: &str,
    value: &serde_json::Value,
    max_bytes: usize,
) -> Result<()> {
    use serde_json::Value;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        let inner = depth + 1;
        match v {
            Value::Array(items) => {
                if inner > MAX_JSON_DEPTH {
                    return Err(too_deep(op, field));
                }
                stack.extend(items.iter().map(|i| (i, inner)));
            }
            Value::Object(map) => {
                if inner > MAX_JSON_DEPTH {
                    return Err(too_deep(op, field));
                }
                for (k, item) in map {
                    if k.contains('\0') {
                        return Err(nul_in_json(op, field));
                    }
                    stack.push((item, inner));
                }
            }
            Value::String(s) if s.contains('\0') => return Err(nul_in_json(op, field)),
            _ => {}
        }
    }
    json_size_at_most(op, field, value, max_bytes)
}

fn too_deep(op: &'static str, field: &str) -> Error {
    Error::invalid(
        op,
        field,
        format!("nests arrays/objects more than {MAX_JSON_DEPTH} levels deep"),
    )
}

fn nul_in_json(op: &'static str, field: &str) -> Error {
    Error::invalid(
        op,
        field,
        "contains a NUL character (\\u0000) in a string or key, which jsonb cannot hold",
    )
}

/// A caller's timestamp: in UTC it lies in [`MIN_TIMESTAMP`]..[`MAX_TIMESTAMP`]
/// (checked without panicking for any offset). Returns what is stored: the
/// instant in UTC, floored to whole microseconds (`timestamptz`'s precision;
/// the driver alone would round towards 2000-01-01).
pub(crate) fn timestamp(
    op: &'static str,
    field: &str,
    t: time::OffsetDateTime,
) -> Result<time::OffsetDateTime> {
    let utc = t.checked_to_offset(time::UtcOffset::UTC);
    match utc {
        Some(u) if (MIN_TIMESTAMP..MAX_TIMESTAMP).contains(&u) => {
            Ok(u - time::Duration::nanoseconds(i64::from(u.nanosecond() % 1000)))
        }
        _ => Err(Error::invalid(
            op,
            field,
            format!("is {t}, must lie in [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}) UTC"),
        )),
    }
}

/// Largest `duration_seconds` accepted (about 31.7 million years).
pub const MAX_DURATION_SECONDS: f64 = 1e15;

/// A non-negative finite `f64` as the exact decimal of its shortest
/// round-trip form (Rust's `Display`), which PostgreSQL's `numeric::float8`
/// reads back as the same `f64`. Refused when that form needs more than 28
/// decimal places (e.g. `1e-30`), since a rounded value would come back changed.
pub(crate) fn exact_decimal(
    op: &'static str,
    field: &str,
    value: f64,
) -> Result<rust_decimal::Decimal> {
    finite_non_negative(op, field, value)?;
    if value > MAX_DURATION_SECONDS {
        return Err(Error::invalid(
            op,
            field,
            format!("is {value}, at most {MAX_DURATION_SECONDS} allowed"),
        ));
    }
    // -0.0 is stored as 0.
    let value = if value == 0.0 { 0.0 } else { value };
    rust_decimal::Decimal::from_str_exact(&value.to_string()).map_err(|e| {
        Error::invalid(
            op,
            field,
            format!("{value} is not stored exactly (at most 28 decimal places): {e}"),
        )
    })
}

pub(crate) fn page_size(op: &'static str, limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Error::invalid(
            op,
            "limit",
            format!("is {limit}, must be 1..={MAX_PAGE_SIZE}"),
        ));
    }
    Ok(())
}

/// In tenant scope a user acts as itself: `given` must be `None` or the user.
pub(crate) fn acting_user(
    op: &'static str,
    field: &str,
    given: Option<uuid::Uuid>,
    tenant_user: uuid::Uuid,
) -> Result<uuid::Uuid> {
    match given {
        Some(other) if other != tenant_user => Err(Error::invalid(
            op,
            field,
            format!("is {other}, but a tenant acts only as itself ({tenant_user}); pass None"),
        )),
        _ => Ok(tenant_user),
    }
}
