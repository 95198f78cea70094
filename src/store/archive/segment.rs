//! Segment files: an account's archived events as gzip-compressed NDJSON. The first line is a
//! header naming the account, the positions and the chain's links at both ends; each other
//! line is an event exactly as `ctxd export` writes it, so `zcat` reads a segment and
//! `ctxd import` loads segments followed by the live log's export into a scratch store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StoreError;
use crate::store::chain::{self, Hash};
use crate::store::db::Connection;
use crate::store::transfer::{self, Selection};

/// The first line of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub account: String,
    pub first_seq: u64,
    pub through_seq: u64,
    /// Hex of the link before `first_seq` (zeros for the account's first event).
    pub previous_hash: String,
    /// Hex of the link at `through_seq`.
    pub through_hash: String,
    pub created_at: String,
}

/// The header line's one key, which no event line has.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderLine {
    pub ctxd_segment: Header,
}

/// A segment written.
pub struct Written {
    /// Its name in the archive directory (`<account>/<first>-<through>.ndjson.gz`).
    pub name: String,
    pub path: PathBuf,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
    /// The file, open and locked (`locked_file`) until its archive commits or fails.
    pub claim: File,
}

/// Creates `dir` if needed, readable by its owner only (segments hold tenants' data, as the
/// store does).
fn private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(crate::store::named(dir, error).into())
        }
        _ => Ok(()),
    }
}

/// Creates (or truncates) `path`, readable and writable by its owner only.
pub(super) fn private_file(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| crate::store::named(path, error).into())
}

/// A new segment file, or a segment's rewrite, created and locked (`flock`, exclusive) before
/// anything is written to it. While the lock is held — it goes with the open file, through its
/// rename — no cleanup takes the file for a leftover (`archive::remove_unrecorded`); a process
/// that dies releases it.
pub(super) fn locked_file(path: &Path) -> Result<File, StoreError> {
    let file = private_file(path)?;
    file.lock().map_err(|error| crate::store::named(path, error))?;
    Ok(file)
}

/// The directory of an account's segments: its id percent-encoded, so that any id is one
/// plain file name.
pub(super) fn account_dir(account: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');
    percent_encoding::utf8_percent_encode(account, KEEP).to_string()
}

/// A file that hashes what is written to it.
struct Hashing {
    file: File,
    hasher: Sha256,
}

impl Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the segment `header` describes, from the events of `conn`, into `dir`: to a
/// `.partial` file first, synced, then renamed, so that a crash leaves no half segment under
/// the final name. Each segment's name ends in random letters of its own: two attempts at one
/// range (a retried request, two nodes sharing the directory) never write one file.
pub fn write(conn: &Connection, dir: &Path, header: &Header) -> Result<Written, StoreError> {
    let account_dir = account_dir(&header.account);
    let unique = hex::encode(&crate::store::chain::new_salt()[..4]);
    let name =
        format!("{account_dir}/{:012}-{:012}-{unique}.ndjson.gz", header.first_seq, header.through_seq);
    let folder = dir.join(&account_dir);
    private_dir(dir)?;
    private_dir(&folder)?;
    let path = dir.join(&name);
    let partial = path.with_extension("gz.partial");
    let file = locked_file(&partial)?;
    let mut out = GzEncoder::new(Hashing { file, hasher: Sha256::new() }, Compression::new(6));
    serde_json::to_writer(&mut out, &HeaderLine { ctxd_segment: header.clone() })
        .map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    let selection = Selection {
        account: Some(header.account.clone()),
        after: header.first_seq - 1,
        through: Some(header.through_seq),
        streams: None,
    };
    let mut buffered = std::io::BufWriter::new(&mut out);
    let written = transfer::export_within(conn, &selection, &mut buffered).map_err(|error| match error {
        transfer::TransferError::Store(error) => error,
        other => StoreError::Corrupt(other.to_string()),
    })?;
    // Its last bytes' error, if any, here rather than lost when it is dropped.
    buffered.flush()?;
    drop(buffered);
    if written != header.through_seq - header.first_seq + 1 {
        return Err(StoreError::Corrupt(format!(
            "account {}: events {} to {} are not all in the log",
            header.account, header.first_seq, header.through_seq
        )));
    }
    let Hashing { file, hasher } = out.finish()?;
    file.sync_all().map_err(|error| crate::store::named(&partial, error))?;
    std::fs::rename(&partial, &path).map_err(|error| crate::store::named(&path, error))?;
    File::open(&folder)?.sync_all()?;
    Ok(Written { name, path, sha256: hex::encode(hasher.finalize()), claim: file })
}

/// A file that hashes what is read from it; `finish` reads what is left and answers the hex
/// sha256 of the whole file.
#[derive(Clone)]
struct HashedRead(std::sync::Arc<std::sync::Mutex<(File, Sha256)>>);

impl std::io::Read for HashedRead {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let mut inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let read = inner.0.read(buffer)?;
        inner.1.update(&buffer[..read]);
        Ok(read)
    }
}

impl HashedRead {
    fn finish(mut self) -> std::io::Result<String> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let inner = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(hex::encode(inner.1.clone().finalize()))
    }
}

/// A segment's lines, decompressed as they are read.
type SegmentLines = std::io::Lines<BufReader<MultiGzDecoder<HashedRead>>>;

/// The lines of the segment at `path`, decompressed as they are read, and the file's hash.
fn read_lines(path: &Path) -> Result<(SegmentLines, HashedRead), StoreError> {
    let file = File::open(path).map_err(|error| crate::store::named(path, error))?;
    let hashed = HashedRead(std::sync::Arc::new(std::sync::Mutex::new((file, Sha256::new()))));
    Ok((BufReader::with_capacity(1 << 16, MultiGzDecoder::new(hashed.clone())).lines(), hashed))
}

/// What reading a segment back found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub header: Header,
    pub events: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// The first position that does not verify, and why.
    pub first_bad: Option<(u64, String)>,
    /// The redactions the erasure events of this segment record.
    pub redacted: HashMap<u64, Hash>,
}

/// Reads a segment and checks its chain: every payload hash and link, from the header's
/// `previous_hash` to its `through_hash`, with positions consecutive. A payload that does not
/// match its kept hash is sound only if an erasure redacted it to exactly this content: one in
/// this segment, or in `elsewhere` (a later segment's, the live log's).
pub fn verify(path: &Path, elsewhere: &HashMap<u64, Hash>) -> Result<Report, StoreError> {
    let (mut lines, hashed) = read_lines(path)?;
    let unreadable = |why: String| StoreError::Corrupt(format!("{}: {why}", path.display()));
    let first = lines
        .next()
        .ok_or_else(|| unreadable("it is empty".into()))?
        .map_err(|e| unreadable(e.to_string()))?;
    let HeaderLine { ctxd_segment: header } =
        serde_json::from_str(&first).map_err(|error| unreadable(format!("its header: {error}")))?;
    let parse_hash = |text: &str| -> Result<Hash, StoreError> {
        hex::decode(text)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| unreadable(format!("{text} is not a hash")))
    };
    let mut walk = chain::Walk::new(header.first_seq - 1, parse_hash(&header.previous_hash)?);
    for (number, line) in lines.enumerate() {
        let line = line.map_err(|error| unreadable(format!("line {}: {error}", number + 2)))?;
        match transfer::parse_event(&line) {
            Ok(event) if event.account == header.account => {
                walk.step(&event.columns(), event.data, event.stored())
            }
            Ok(event) => walk.bad(event.seq, format!("it belongs to account {}", event.account)),
            Err(error) => {
                walk.bad(walk.last_seq + 1, format!("line {} does not read: {error}", number + 2));
                break;
            }
        }
    }
    if walk.last_seq != header.through_seq {
        walk.bad(
            walk.last_seq + 1,
            format!("the segment ends at {} but its header says {}", walk.last_seq, header.through_seq),
        );
    } else if hex::encode(walk.head) != header.through_hash {
        walk.bad(header.through_seq, "its hash is not the header's through_hash".into());
    }
    walk.settle(elsewhere);
    let sha256 = hashed.finish()?;
    Ok(Report { events: walk.events, sha256, first_bad: walk.first_bad, redacted: walk.redacted, header })
}

/// Rewrites the segment at `path` with the payloads of `streams`' events redacted (as
/// `domain::erasure` redacts them, their salts removed, their hashes and links kept), to a
/// temporary file renamed over it. Answers the redactions made and the new file's sha256 (the
/// file is left as it was when there is none).
pub fn redact(
    path: &Path,
    streams: &std::collections::BTreeSet<&str>,
) -> Result<(Vec<crate::domain::erasure::Redaction>, String), StoreError> {
    // Streamed: the copy is written as the segment is read, and dropped if nothing changed.
    let (lines, hashed) = read_lines(path)?;
    let partial = path.with_extension("gz.partial");
    let file = locked_file(&partial)?;
    let mut out = GzEncoder::new(Hashing { file, hasher: Sha256::new() }, Compression::new(6));
    let (mut redactions, mut changed) = (Vec::new(), false);
    for line in lines {
        let line = line?;
        let text = match transfer::redacted_line(&line, streams)? {
            Some((text, redaction)) => {
                changed |= text != line;
                redactions.push(redaction);
                text
            }
            None => line,
        };
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
    }
    let sha256 = hashed.finish()?;
    if !changed {
        drop(out);
        let _ = std::fs::remove_file(&partial);
        return Ok((redactions, sha256));
    }
    let Hashing { file, hasher } = out.finish()?;
    file.sync_all()?;
    std::fs::rename(&partial, path).map_err(|error| crate::store::named(path, error))?;
    if let Some(folder) = path.parent() {
        File::open(folder)?.sync_all()?;
    }
    Ok((redactions, hex::encode(hasher.finalize())))
}
