//! Checksums (`u64`) serialised as decimal strings: a JSON number above 2^53
//! loses digits in JavaScript and jq, and a checksum must compare exactly.

pub(crate) fn serialize<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) mod option {
    pub(crate) fn serialize<S: serde::Serializer>(
        v: &Option<u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}
