//! Counting the rows of a PostgreSQL binary `COPY` stream as it goes by, and
//! checking that it is complete (header, whole tuples, trailer, nothing after).

/// The 11-byte signature of `COPY … (FORMAT binary)`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the 19 fixed header bytes (signature, flags, extension length).
    Header,
    /// Skipping `n` bytes of the header extension.
    Extension(u64),
    /// Reading the 2-byte field count of the next tuple (or the trailer, -1).
    FieldCount,
    /// Reading the 4-byte length of a field; `n` fields left in the tuple after it.
    FieldLen(u16),
    /// Skipping `len` bytes of field data; `n` fields left after it.
    FieldData(u64, u16),
    /// The trailer was read: nothing may follow.
    Done,
}

/// Counts tuples in a binary COPY stream fed in arbitrary slices.
#[derive(Debug)]
pub(crate) struct CopyBinaryCounter {
    state: State,
    /// Bytes of a fixed-size item (header, count, length) read so far.
    pending: Vec<u8>,
    rows: u64,
    fields: Option<u16>,
}

impl CopyBinaryCounter {
    pub(crate) fn new() -> Self {
        CopyBinaryCounter {
            state: State::Header,
            pending: Vec::with_capacity(19),
            rows: 0,
            fields: None,
        }
    }

    /// Complete tuples seen so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Feeds the next bytes; `Err` with a reason when they cannot be binary COPY
    /// (bad signature, a tuple with another field count, bytes after the trailer).
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                State::Header => {
                    if let Some(h) = self.take_fixed(&mut data, 19) {
                        if &h[..11] != SIGNATURE {
                            return Err(
                                "not a PostgreSQL binary COPY stream (bad signature)".into()
                            );
                        }
                        let ext = u32::from_be_bytes([h[15], h[16], h[17], h[18]]);
                        self.state = State::Extension(u64::from(ext));
                    }
                }
                State::Extension(n) => {
                    let k = (n as usize).min(data.len());
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = if left == 0 {
                        State::FieldCount
                    } else {
                        State::Extension(left)
                    };
                }
                State::FieldCount => {
                    if let Some(b) = self.take_fixed(&mut data, 2) {
                        let n = i16::from_be_bytes([b[0], b[1]]);
                        if n == -1 {
                            self.state = State::Done;
                        } else if n < 0 {
                            return Err(format!("invalid field count {n}"));
                        } else {
                            let n = n as u16;
                            match self.fields {
                                Some(f) if f != n => {
                                    return Err(format!(
                                        "row {} has {n} fields, earlier rows {f}",
                                        self.rows + 1
                                    ))
                                }
                                _ => self.fields = Some(n),
                            }
                            self.state = if n == 0 {
                                self.rows += 1;
                                State::FieldCount
                            } else {
                                State::FieldLen(n - 1)
                            };
                        }
                    }
                }
                State::FieldLen(left) => {
                    if let Some(b) = self.take_fixed(&mut data, 4) {
                        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        let len = if len == -1 {
                            0
                        } else if len < 0 {
                            return Err(format!("invalid field length {len}"));
                        } else {
                            len as u64
                        };
                        self.state = State::FieldData(len, left);
                        if len == 0 {
                            self.end_field(left);
                        }
                    }
                }
                State::FieldData(len, left) => {
                    let k = (len as usize).min(data.len());
                    data = &data[k..];
                    let rest = len - k as u64;
                    if rest == 0 {
                        self.end_field(left);
                    } else {
                        self.state = State::FieldData(rest, left);
                    }
                }
                State::Done => {
                    return Err(format!("{} byte(s) after the trailer", data.len()));
                }
            }
        }
        Ok(())
    }

    /// Ok with the row count when the stream ended right after its trailer.
    pub(crate) fn finish(&self) -> Result<u64, String> {
        if self.state == State::Done {
            Ok(self.rows)
        } else {
            Err(format!(
                "the stream ends early (after {} complete row(s), no trailer)",
                self.rows
            ))
        }
    }

    fn end_field(&mut self, left: u16) {
        if left == 0 {
            self.rows += 1;
            self.state = State::FieldCount;
        } else {
            self.state = State::FieldLen(left - 1);
        }
    }

    /// Collects `n` bytes across calls; `Some` once they are all there.
    fn take_fixed(&mut self, data: &mut &[u8], n: usize) -> Option<Vec<u8>> {
        let k = (n - self.pending.len()).min(data.len());
        self.pending.extend_from_slice(&data[..k]);
        *data = &data[k..];
        if self.pending.len() == n {
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(b"ext");
        for r in rows {
            v.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in *r {
                match f {
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        v.extend_from_slice(b);
                    }
                }
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    #[test]
    fn counts_rows_in_any_slicing_and_refuses_damage() {
        let s = stream(&[
            &[Some(b"abc"), None],
            &[Some(b""), Some(b"xyzw")],
            &[None, None],
        ]);
        for chunk in 1..s.len() {
            let mut c = CopyBinaryCounter::new();
            for part in s.chunks(chunk) {
                c.feed(part).unwrap();
            }
            assert_eq!(c.finish(), Ok(3), "chunk {chunk}");
        }
        let mut c = CopyBinaryCounter::new();
        c.feed(&s[..s.len() - 1]).unwrap();
        assert!(c.finish().is_err(), "truncated");
        let mut c = CopyBinaryCounter::new();
        assert!(c.feed(&[&s[..], b"x"].concat()).is_err(), "trailing bytes");
        let mut bad = s.clone();
        bad[0] = b'Q';
        assert!(CopyBinaryCounter::new().feed(&bad).is_err(), "signature");
        let odd = stream(&[&[Some(b"a")], &[Some(b"a"), Some(b"b")]]);
        assert!(CopyBinaryCounter::new().feed(&odd).is_err(), "field count");
    }
}
