//! An exported month on disk: a zstd-compressed binary `COPY` of its rows
//! (`<partition>-<stamp>.copy.zst`) and a JSON manifest beside it
//! (`<partition>-<stamp>.manifest.json`) naming the rows, bounds, columns and
//! the file's SHA-256.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::copy_binary::CopyBinaryCounter;
use super::error::PartitionError;
use super::month::Month;

/// `format` of every manifest this crate writes.
pub const ARCHIVE_FORMAT: &str = "sync-activity-log-archive";
/// `format_version` this crate writes and reads.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;
/// `encoding` of the data file: PostgreSQL's binary COPY format, zstd-compressed.
pub const ARCHIVE_ENCODING: &str = "postgresql-copy-binary+zstd";

/// One column of the exported table: name and type as `format_type` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveColumn {
    /// Column name.
    pub name: String,
    /// Its type, e.g. `uuid`, `character varying(255)`, `sync_action`.
    #[serde(rename = "type")]
    pub type_name: String,
}

/// The manifest of one exported month (`*.manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveManifest {
    /// Always [`ARCHIVE_FORMAT`].
    pub format: String,
    /// [`ARCHIVE_FORMAT_VERSION`] when written by this crate.
    pub format_version: u32,
    /// The partition the rows came from, e.g. `sync_activity_log_2025_11`.
    pub partition: String,
    /// Its month, `YYYY-MM`.
    pub month: String,
    /// Lower bound (inclusive) of `created_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// Upper bound (exclusive) of `created_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// Rows in the data file.
    pub rows: u64,
    /// The data file's name (same directory as the manifest).
    pub data_file: String,
    /// Size of the data file in bytes.
    pub data_bytes: u64,
    /// Lower-case hex SHA-256 of the data file as stored (compressed).
    pub sha256: String,
    /// Always [`ARCHIVE_ENCODING`].
    pub encoding: String,
    /// The columns, in the order of the COPY.
    pub columns: Vec<ArchiveColumn>,
    /// The newest migration version applied to the source database (refinery
    /// history), when known.
    pub schema_version: Option<i32>,
    /// When the export was written.
    #[serde(with = "time::serde::rfc3339")]
    pub exported_at: OffsetDateTime,
}

impl ArchiveManifest {
    /// The month named by the manifest, checked against its bounds.
    pub(crate) fn checked_month(&self, path: &Path) -> Result<Month, PartitionError> {
        let corrupt = |reason: String| PartitionError::ArchiveFileInvalid {
            path: path.display().to_string(),
            reason,
        };
        if self.format != ARCHIVE_FORMAT || self.format_version != ARCHIVE_FORMAT_VERSION {
            return Err(corrupt(format!(
                "format {:?} version {} is not {ARCHIVE_FORMAT:?} version {ARCHIVE_FORMAT_VERSION}",
                self.format, self.format_version
            )));
        }
        if self.encoding != ARCHIVE_ENCODING {
            return Err(corrupt(format!("unknown encoding {:?}", self.encoding)));
        }
        let month: Month = self
            .month
            .parse()
            .map_err(|_| corrupt(format!("invalid month {:?}", self.month)))?;
        if self.from != month.start() || self.to != month.next().start() {
            return Err(corrupt(format!(
                "bounds {} .. {} are not the month {month}",
                self.from, self.to
            )));
        }
        if self.data_file.contains(['/', '\\']) || self.data_file.starts_with('.') {
            return Err(corrupt(format!(
                "data file {:?} is not a plain file name",
                self.data_file
            )));
        }
        Ok(month)
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> PartitionError {
    PartitionError::ExportIo {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file being written: `<final>.partial` until [`DataWriter::finish`] renames it.
pub(crate) struct DataWriter {
    encoder: zstd::stream::write::Encoder<'static, Hashing<BufWriter<File>>>,
    counter: CopyBinaryCounter,
    partial: PathBuf,
    path: PathBuf,
}

/// What [`DataWriter::finish`] wrote.
pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

impl DataWriter {
    /// Creates `path.partial` (never overwriting anything).
    pub(crate) fn create(path: &Path) -> Result<DataWriter, PartitionError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        if path.exists() {
            return Err(io_err(
                path,
                "creating the export file",
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| io_err(&partial, "creating the export file", e))?;
        let inner = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let encoder = zstd::stream::write::Encoder::new(inner, 3)
            .map_err(|e| io_err(&partial, "starting zstd", e))?;
        Ok(DataWriter {
            encoder,
            counter: CopyBinaryCounter::new(),
            partial,
            path: path.to_owned(),
        })
    }

    /// Rows complete so far.
    pub(crate) fn rows(&self) -> u64 {
        self.counter.rows()
    }

    /// Appends COPY bytes.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), PartitionError> {
        self.counter
            .feed(data)
            .map_err(|reason| PartitionError::ExportIo {
                path: self.partial.display().to_string(),
                reason: format!("the server's COPY stream: {reason}"),
            })?;
        self.encoder
            .write_all(data)
            .map_err(|e| io_err(&self.partial, "writing", e))
    }

    /// Ends the stream, fsyncs the file, renames it to its final name and fsyncs
    /// the directory.
    pub(crate) fn finish(self) -> Result<Written, PartitionError> {
        let rows = self
            .counter
            .finish()
            .map_err(|reason| PartitionError::ExportIo {
                path: self.partial.display().to_string(),
                reason: format!("the server's COPY stream: {reason}"),
            })?;
        let mut hashing = self
            .encoder
            .finish()
            .map_err(|e| io_err(&self.partial, "finishing zstd", e))?;
        hashing
            .flush()
            .map_err(|e| io_err(&self.partial, "flushing", e))?;
        let Hashing { inner, hash, bytes } = hashing;
        let file = inner
            .into_inner()
            .map_err(|e| io_err(&self.partial, "flushing", e.into_error()))?;
        file.sync_all()
            .map_err(|e| io_err(&self.partial, "fsync", e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path)
            .map_err(|e| io_err(&self.path, "renaming the finished file", e))?;
        sync_dir(&self.path)?;
        Ok(Written {
            rows,
            bytes,
            sha256: hex(&hash.finalize()),
        })
    }
}

/// fsyncs the directory holding `path` (so a rename survives a crash).
fn sync_dir(path: &Path) -> Result<(), PartitionError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "fsync of the directory", e))
}

/// Writes `manifest` to `path` (via `.partial`, fsync, rename, fsync of the directory).
pub(crate) fn write_manifest(
    path: &Path,
    manifest: &ArchiveManifest,
) -> Result<(), PartitionError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| PartitionError::ExportIo {
        path: path.display().to_string(),
        reason: format!("serialising the manifest: {e}"),
    })?;
    let mut f = File::create(&partial).map_err(|e| io_err(&partial, "creating", e))?;
    f.write_all(&json)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&partial, "writing", e))?;
    drop(f);
    std::fs::rename(&partial, path).map_err(|e| io_err(path, "renaming", e))?;
    sync_dir(path)
}

/// Reads a manifest; `path` may name the manifest or its data file.
///
/// Returns the manifest, its path and the data file's path.
pub(crate) fn read_manifest(
    path: &Path,
) -> Result<(ArchiveManifest, PathBuf, PathBuf), PartitionError> {
    let name = path.to_string_lossy();
    let manifest_path = match name.strip_suffix(DATA_SUFFIX) {
        Some(stem) => PathBuf::from(format!("{stem}{MANIFEST_SUFFIX}")),
        None => path.to_owned(),
    };
    let text = std::fs::read(&manifest_path)
        .map_err(|e| io_err(&manifest_path, "reading the manifest", e))?;
    let manifest: ArchiveManifest =
        serde_json::from_slice(&text).map_err(|e| PartitionError::ArchiveFileInvalid {
            path: manifest_path.display().to_string(),
            reason: format!("not an archive manifest: {e}"),
        })?;
    manifest.checked_month(&manifest_path)?;
    let data = manifest_path
        .parent()
        .unwrap_or(Path::new(""))
        .join(&manifest.data_file);
    Ok((manifest, manifest_path, data))
}

/// Suffix of data files.
pub(crate) const DATA_SUFFIX: &str = ".copy.zst";
/// Suffix of manifests.
pub(crate) const MANIFEST_SUFFIX: &str = ".manifest.json";

/// File stem for a new export of `partition`: `<partition>-<UTC stamp to the ms>`.
pub(crate) fn stem(partition: &str, at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{partition}-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// A reader that hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a data file, handing each decompressed chunk to `each`, and checks it
/// against `manifest`: SHA-256 and size of the stored bytes, a complete binary
/// COPY stream, the row count. `each` sees every chunk before the checks end, so
/// a caller loading rows must still fail when this returns `Err`.
pub(crate) fn read_data(
    data: &Path,
    manifest: &ArchiveManifest,
    mut each: impl FnMut(&[u8], u64) -> Result<(), PartitionError>,
) -> Result<(), PartitionError> {
    let invalid = |reason: String| PartitionError::ArchiveFileInvalid {
        path: data.display().to_string(),
        reason,
    };
    let file = File::open(data).map_err(|e| io_err(data, "opening the data file", e))?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut counter = CopyBinaryCounter::new();
    let mut buf = vec![0u8; 1 << 20];
    let outcome: Result<(), PartitionError> = (|| {
        let mut decoder = zstd::stream::read::Decoder::new(&mut reader)
            .map_err(|e| invalid(format!("not zstd: {e}")))?;
        loop {
            let n = decoder
                .read(&mut buf)
                .map_err(|e| invalid(format!("decompressing: {e}")))?;
            if n == 0 {
                break;
            }
            counter.feed(&buf[..n]).map_err(&invalid)?;
            each(&buf[..n], counter.rows())?;
        }
        Ok(())
    })();
    // Hash every stored byte, also any the decoder left unread.
    let mut rest = Vec::new();
    let drained = reader.read_to_end(&mut rest);
    let sha = hex(&reader.hash.clone().finalize());
    if sha != manifest.sha256 || reader.bytes != manifest.data_bytes {
        return Err(invalid(format!(
            "SHA-256 {sha} ({} bytes) does not match the manifest's {} ({} bytes): the file was changed or damaged",
            reader.bytes, manifest.sha256, manifest.data_bytes
        )));
    }
    outcome?;
    drained.map_err(|e| io_err(data, "reading", e))?;
    let rows = counter.finish().map_err(&invalid)?;
    if rows != manifest.rows {
        return Err(invalid(format!(
            "{rows} row(s) in the file, the manifest says {}",
            manifest.rows
        )));
    }
    Ok(())
}
