//! The read-your-writes token: a WAL position of the primary.

use std::fmt;
use std::str::FromStr;

/// A position in the primary's write-ahead log (a `pg_lsn`) that a read must
/// see: the store waits (bounded) until the replica has replayed past it, else
/// reads the primary.
///
/// Text form is PostgreSQL's `pg_lsn` text, `X/Y` with both halves in upper-case
/// hexadecimal without leading zeros (e.g. `0/16B3748`), so it fits an HTTP
/// header (`X-Sync-Consistency` in `sync-api`) and compares with
/// `pg_current_wal_lsn()` by eye. Parsing accepts either case and leading zeros
/// (at most 8 digits per half), and nothing else: no sign, no spaces, no empty
/// half. Serde uses the same text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsistencyToken(u64);

impl ConsistencyToken {
    /// The token for WAL position `lsn` (the `u64` of a `pg_lsn`).
    pub const fn from_lsn(lsn: u64) -> ConsistencyToken {
        ConsistencyToken(lsn)
    }

    /// The WAL position, as the `u64` of a `pg_lsn`.
    pub const fn lsn(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A token text that is not `X/Y` in hexadecimal (see [`ConsistencyToken`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a consistency token (want a pg_lsn such as 0/16B3748, as sent in X-Sync-Consistency); drop the header to read without it")]
#[non_exhaustive]
pub struct BadToken;

impl FromStr for ConsistencyToken {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<ConsistencyToken, BadToken> {
        let (hi, lo) = s.split_once('/').ok_or(BadToken)?;
        let half = |h: &str| -> Result<u64, BadToken> {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BadToken);
            }
            u64::from_str_radix(h, 16).map_err(|_| BadToken)
        };
        Ok(ConsistencyToken((half(hi)? << 32) | half(lo)?))
    }
}

impl serde::Serialize for ConsistencyToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConsistencyToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConsistencyToken, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_pg_lsn_text() {
        let t = ConsistencyToken::from_lsn(0x0000_0001_016B_3748);
        assert_eq!(t.to_string(), "1/16B3748");
        assert_eq!("1/16b3748".parse::<ConsistencyToken>(), Ok(t));
        assert_eq!("00000001/016B3748".parse::<ConsistencyToken>(), Ok(t));
        assert_eq!(ConsistencyToken::from_lsn(0).to_string(), "0/0");
        assert_eq!(
            ConsistencyToken::from_lsn(u64::MAX).to_string(),
            "FFFFFFFF/FFFFFFFF"
        );
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "1/2/3",
            " 1/2",
            "1/2 ",
            "+1/2",
            "-1/2",
            "1/g",
            "123456789/0",
            "0/123456789",
            "1/２",
        ] {
            assert_eq!(bad.parse::<ConsistencyToken>(), Err(BadToken), "{bad:?}");
        }
    }
}
