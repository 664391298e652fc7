//! Keyset cursor of activity listings: the (created_at, id) of the last entry seen.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;

/// Where the next page of an activity listing starts: strictly after this
/// `(created_at, id)` in newest-first order. Stable across pages even when many
/// entries share one `created_at`. Renders as an opaque token
/// (`<unix microseconds>.<id>`) for APIs, parsed back with [`FromStr`].
///
/// `from_str(&c.to_string()) == Ok(c)` for every cursor whose `created_at` is
/// in UTC with whole microseconds (as read from the database); parsing any
/// other string returns [`BadCursor`] and never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActivityCursor {
    /// `created_at` of the last entry of the previous page.
    pub created_at: OffsetDateTime,
    /// `id` of the last entry of the previous page.
    pub id: Uuid,
}

/// A token that is not an [`ActivityCursor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{token:?} is not an activity cursor (expected <unix microseconds>.<uuid>, as returned in ActivityPage::next)")]
pub struct BadCursor {
    /// The rejected token.
    pub token: String,
}

impl fmt::Display for ActivityCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.created_at.unix_timestamp_nanos().div_euclid(1000);
        write!(f, "{micros}.{}", self.id.simple())
    }
}

impl FromStr for ActivityCursor {
    type Err = BadCursor;

    /// Parses `<unix microseconds>.<uuid>`.
    ///
    /// # Errors
    /// [`BadCursor`] for anything else, including microseconds outside an
    /// `i64` or outside what `OffsetDateTime` holds.
    ///
    /// # Panics
    /// Never (all arithmetic is checked).
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor {
            token: s.to_owned(),
        };
        let (micros, id) = s.split_once('.').ok_or_else(bad)?;
        // i64 microseconds cover every timestamp `time` can hold (and far more);
        // the multiplication is checked, so no token can wrap or panic.
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let nanos = i128::from(micros).checked_mul(1000).ok_or_else(bad)?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
        let id = Uuid::try_parse(id).map_err(|_| bad())?;
        Ok(ActivityCursor { created_at, id })
    }
}
