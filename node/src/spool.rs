//! The on-disk spool: store-and-forward for detections.
//!
//! One file per detection, `{seq:020}-{crc32:08x}.json`, holding the exact
//! payload to publish; the CRC-32 of those bytes is in the name, so the
//! file stays the JSON a subscriber gets (`cat` shows it) and the name and
//! the checksum appear together in the one atomic rename. An append writes
//! `{seq}.tmp`, fsyncs it, renames it into place and fsyncs the folder, so
//! after a crash (SIGKILL, power cut) an entry is either wholly there or
//! not at all, and a stray `.tmp` is discarded. An entry is removed only
//! when the broker's PUBACK for it arrives.
//!
//! Why files and not a log or an embedded database: detections are rare
//! (a few a minute at most), so the cost of a file per entry is nothing,
//! while the crash behaviour of rename is simple to reason about and to
//! inspect by hand on a Pi (`ls /var/lib/blastnet/node/spool`).
//!
//! Every entry is checked when the spool is opened and again before it is
//! published: its checksum (entries of earlier versions, `{seq:020}.json`,
//! have none and are checked as a detection only), a SPEC detection with
//! the seq of its name, and a size that fits one MQTT packet
//! ([`MAX_ENTRY_BYTES`]). An entry that fails is moved to `quarantine/`
//! beside the spool folder (kept for inspection, never deleted), logged
//! once with the reason and counted (`spool_quarantined` in status): a
//! damaged file neither goes out as it is nor blocks the entries behind
//! it (a 2 MB entry refused by the broker would have been retried forever).
//!
//! The spool is bounded by `max_bytes`; beyond it the oldest entries are
//! evicted and counted (reported in status as `spool_evictions`).
//!
//! The seqs used must be known after a restart even when the state file is
//! lost or could not be saved ([`crate::state`] raises `seq_next` above
//! every entry name). So the acknowledged entry with the highest seq is not
//! deleted while the state on disk is behind it ([`Spool::state_saved`]):
//! it stays, out of the index, and if the node stops before the state
//! catches up, it is published again at the next start (same seq, same
//! bytes: subscribers de-duplicate). Without this a PUBACK arriving before
//! the state save (or every save failing, on a full disk) could delete the
//! last record of a seq, and the next start would use it again.
//!
//! On a full disk the spool still opens and drains: opening, reading,
//! quarantining (a rename) and removing need no free space, and a failed
//! append leaves nothing behind (its `.tmp` is removed) and no entry.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blastnet_contract::broker::MAX_PACKET_BYTES;
use blastnet_contract::{Detection, DETECTION_SCHEMA};

use crate::error::NodeError;

/// Name of the folder, beside the spool folder, that damaged entries are moved to.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The largest spool entry (payload), bytes: one that fits an MQTT PUBLISH
/// of at most [`MAX_PACKET_BYTES`] whatever the topic, since the packet adds
/// at most 5 bytes of fixed header, a 2-byte topic length, the topic (at
/// most 65 535 bytes) and a 2-byte packet id. (A detection is under 1 kB.)
pub const MAX_ENTRY_BYTES: u64 = (MAX_PACKET_BYTES - (5 + 2 + u16::MAX as usize + 2)) as u64;

/// The spool of one node. Shared between the pipeline (append) and the
/// publisher (read, remove); file I/O happens outside the index lock.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    quarantine: PathBuf,
    max_bytes: u64,
    fsync: bool,
    index: Mutex<Index>,
}

/// One entry on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    len: u64,
    /// CRC-32 of the payload (from the file name); `None` for an entry
    /// written before entries carried one.
    crc: Option<u32>,
}

#[derive(Debug, Default)]
struct Index {
    /// seq → entry.
    entries: BTreeMap<u64, Entry>,
    bytes: u64,
    evictions: u64,
    quarantined: u64,
    /// The highest seq in the name of any entry seen (spool or quarantine).
    highest_seq: Option<u64>,
    /// The `seq_next` of the state on disk ([`Spool::state_saved`]).
    saved_seq_next: u64,
    /// An acknowledged entry whose file is kept because its seq is at or
    /// above `saved_seq_next`: the only record on disk that it was used.
    kept: Option<(u64, Entry)>,
}

/// A count of what [`Spool::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolRecovery {
    /// Entries waiting to be published.
    pub entries: u64,
    /// Half-written `.tmp` files removed.
    pub partial_removed: u64,
    /// Damaged entries moved to the quarantine.
    pub quarantined: u64,
}

/// File name of entry `seq` (with its checksum, or of the old format).
fn entry_name(seq: u64, crc: Option<u32>) -> String {
    match crc {
        Some(c) => format!("{seq:020}-{c:08x}.json"),
        None => format!("{seq:020}.json"),
    }
}

/// `{seq}-{crc:08x}.json` or the old `{seq}.json` → (seq, crc).
fn parse_name(name: &str) -> Option<(u64, Option<u32>)> {
    let stem = name.strip_suffix(".json")?;
    let (digits, crc) = match stem.split_once('-') {
        Some((d, c)) if c.len() == 8 => (d, Some(u32::from_str_radix(c, 16).ok()?)),
        Some(_) => return None,
        None => (stem, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, crc))
}

/// The seq a quarantined file was spooled under: the digits its name starts with.
fn leading_seq(name: &str) -> Option<u64> {
    let end = name
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(name.len());
    name[..end].parse().ok()
}

/// Why the payload of entry `seq` must not be published, if it must not.
/// `crc` is the checksum from the file name (`None`: an old entry, checked
/// as a detection only).
pub fn check_entry(seq: u64, crc: Option<u32>, payload: &[u8]) -> Result<(), String> {
    if payload.len() as u64 > MAX_ENTRY_BYTES {
        return Err(too_large(payload.len() as u64));
    }
    if let Some(expected) = crc {
        let got = crc32fast::hash(payload);
        if got != expected {
            return Err(format!(
                "CRC-32 of the {} bytes is {got:08x}, expected {expected:08x} (from the file name): \
                 the entry is damaged or truncated",
                payload.len()
            ));
        }
    }
    let d: Detection = serde_json::from_slice(payload)
        .map_err(|e| format!("expected a {DETECTION_SCHEMA} JSON object: {e}"))?;
    if d.schema != DETECTION_SCHEMA {
        return Err(format!(
            "expected schema {DETECTION_SCHEMA:?}, got {:?}",
            d.schema
        ));
    }
    if d.seq != seq {
        return Err(format!(
            "holds seq {}, expected {seq} (from the file name)",
            d.seq
        ));
    }
    Ok(())
}

fn too_large(len: u64) -> String {
    format!(
        "{len} bytes, expected at most {MAX_ENTRY_BYTES} (an MQTT packet of at most \
         {MAX_PACKET_BYTES} bytes, which brokers and clients enforce)"
    )
}

/// Size and content check of an entry file at `path` (see [`check_entry`]);
/// an oversized file is refused without being read.
fn check_file(path: &Path, seq: u64, crc: Option<u32>) -> Result<u64, String> {
    let len = fs::metadata(path)
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len > MAX_ENTRY_BYTES {
        return Err(too_large(len));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    check_entry(seq, crc, &bytes)?;
    Ok(bytes.len() as u64)
}

impl Spool {
    /// Open (creating) the spool folder, check every entry in it (moving
    /// damaged ones to the quarantine) and index the rest.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: bool,
    ) -> Result<(Spool, SpoolRecovery), NodeError> {
        fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, "cannot create spool folder", e))?;
        let quarantine = dir
            .parent()
            .map_or_else(|| dir.join(QUARANTINE_DIR), |p| p.join(QUARANTINE_DIR));
        let spool = Spool {
            dir: dir.to_path_buf(),
            quarantine,
            max_bytes,
            fsync,
            index: Mutex::new(Index::default()),
        };
        let mut names = Vec::new();
        let rd =
            fs::read_dir(dir).map_err(|e| NodeError::io(dir, "cannot list spool folder", e))?;
        for ent in rd {
            let ent = ent.map_err(|e| NodeError::io(dir, "cannot list spool folder", e))?;
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
        // In name order, so that of two files for one seq the same one is
        // kept on every start: the one with a checksum (`-` sorts before `.`).
        names.sort();
        let mut rec = SpoolRecovery::default();
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                // Not fatal: a node that cannot tidy up can still drain.
                match fs::remove_file(&path) {
                    Ok(()) => rec.partial_removed += 1,
                    Err(e) => tracing::warn!(
                        "{}: cannot remove partial spool entry: {e}; left in place",
                        path.display()
                    ),
                }
                continue;
            }
            let Some((seq, crc)) = parse_name(&name) else {
                continue;
            };
            spool.saw_seq(seq);
            let checked = if spool.lock().entries.contains_key(&seq) {
                Err(format!(
                    "a second entry for seq {seq}, expected one (the first in name order is kept)"
                ))
            } else {
                check_file(&path, seq, crc)
            };
            match checked {
                Ok(len) => {
                    let mut ix = spool.lock();
                    ix.entries.insert(seq, Entry { len, crc });
                    ix.bytes += len;
                }
                Err(reason) => {
                    spool.quarantine_file(&name, &reason);
                    rec.quarantined += 1;
                }
            }
        }
        spool.scan_quarantine();
        rec.entries = spool.backlog();
        if rec.partial_removed > 0 {
            spool.sync_dir()?;
        }
        Ok((spool, rec))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every
        // mutation is a single insert/remove), so poisoning is ignored.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_dir(&self) -> Result<(), NodeError> {
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| NodeError::io(&self.dir, "cannot fsync spool folder", e))?;
        }
        Ok(())
    }

    fn saw_seq(&self, seq: u64) {
        let mut ix = self.lock();
        ix.highest_seq = ix.highest_seq.max(Some(seq));
    }

    /// Note the seqs of the entries quarantined by earlier runs.
    fn scan_quarantine(&self) {
        match fs::read_dir(&self.quarantine) {
            Ok(rd) => {
                for ent in rd.flatten() {
                    if let Some(seq) = leading_seq(&ent.file_name().to_string_lossy()) {
                        self.saw_seq(seq);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "{}: cannot list the spool quarantine: {e}; the seqs in it are not counted",
                self.quarantine.display()
            ),
        }
    }

    /// Take entry `seq` (as `entry`) out of the index; `false` if it was
    /// already gone (acknowledged or evicted meanwhile).
    fn forget(&self, seq: u64, entry: Entry) -> bool {
        let mut ix = self.lock();
        if ix.entries.get(&seq) != Some(&entry) {
            return false;
        }
        ix.entries.remove(&seq);
        ix.bytes -= entry.len;
        true
    }

    /// Move the spool file `name` (out of the index) to the quarantine,
    /// count it and log why, once. If it cannot be moved (the quarantine
    /// cannot be created), it stays where it is, out of the index, and is
    /// checked again at the next start.
    fn quarantine_file(&self, name: &str, reason: &str) {
        self.lock().quarantined += 1;
        let from = self.dir.join(name);
        let moved = fs::create_dir_all(&self.quarantine).and_then(|()| {
            let mut to = self.quarantine.join(name);
            let mut n = 0u32;
            while to.symlink_metadata().is_ok() {
                n += 1;
                to = self.quarantine.join(format!("{name}.{n}"));
            }
            fs::rename(&from, &to).map(|()| to)
        });
        match moved {
            Ok(to) => {
                tracing::warn!(
                    "{}: moved to {}: {reason}",
                    from.display(),
                    to.display()
                );
                if self.fsync {
                    for d in [&self.dir, &self.quarantine] {
                        if let Err(e) = File::open(d).and_then(|f| f.sync_all()) {
                            tracing::warn!("{}: cannot fsync: {e}", d.display());
                        }
                    }
                }
            }
            Err(e) => tracing::error!(
                "{}: {reason}; cannot move it to {}: {e}; not published, checked again at the next start",
                from.display(),
                self.quarantine.display()
            ),
        }
    }

    /// Path of entry `seq`, if it is in the spool.
    pub fn path_of(&self, seq: u64) -> Option<PathBuf> {
        let e = *self.lock().entries.get(&seq)?;
        Some(self.dir.join(entry_name(seq, e.crc)))
    }

    /// The spool folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder damaged entries are moved to.
    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine
    }

    fn write_tmp(&self, tmp: &Path, payload: &[u8]) -> Result<(), NodeError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| NodeError::io(tmp, "cannot create spool entry", e))?;
        f.write_all(payload)
            .map_err(|e| NodeError::io(tmp, "cannot write spool entry", e))?;
        if self.fsync {
            f.sync_all()
                .map_err(|e| NodeError::io(tmp, "cannot fsync spool entry", e))?;
        }
        Ok(())
    }

    /// Durably store `payload` as entry `seq`. Returns how many old entries
    /// were evicted to stay within the bound. The new entry itself is never
    /// evicted. On an error (a full disk) nothing is left behind and the
    /// spool is as it was: the caller may try again later.
    pub fn append(&self, seq: u64, payload: &[u8]) -> Result<u64, NodeError> {
        if payload.len() as u64 > MAX_ENTRY_BYTES {
            return Err(NodeError::Internal(format!(
                "detection seq {seq} is {}",
                too_large(payload.len() as u64)
            )));
        }
        let crc = crc32fast::hash(payload);
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let path = self.dir.join(entry_name(seq, Some(crc)));
        let written = self.write_tmp(&tmp, payload).and_then(|()| {
            fs::rename(&tmp, &path)
                .map_err(|e| NodeError::io(&path, "cannot rename spool entry into place", e))
        });
        if let Err(e) = written {
            // Give back the space a partial file holds (on a full disk).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = self.sync_dir() {
            // The entry is in place: reporting a failure now would let the
            // caller reuse its seq for another detection.
            tracing::error!("{e}; spool entry {seq} may not survive a power cut");
        }
        let len = payload.len() as u64;
        let mut victims = Vec::new();
        let replaced = {
            let mut ix = self.lock();
            ix.highest_seq = ix.highest_seq.max(Some(seq));
            let old = ix.entries.insert(
                seq,
                Entry {
                    len,
                    crc: Some(crc),
                },
            );
            if let Some(old) = old {
                ix.bytes -= old.len;
            }
            ix.bytes += len;
            while ix.bytes > self.max_bytes {
                let Some((&oldest, &e)) = ix.entries.iter().next() else {
                    break;
                };
                if oldest == seq {
                    break;
                }
                ix.entries.remove(&oldest);
                ix.bytes -= e.len;
                ix.evictions += 1;
                victims.push((oldest, e));
            }
            old.filter(|o| o.crc != Some(crc))
        };
        if let Some(old) = replaced {
            let p = self.dir.join(entry_name(seq, old.crc));
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!("{}: cannot remove replaced spool entry: {e}", p.display());
            }
        }
        for (v, e) in &victims {
            let p = self.dir.join(entry_name(*v, e.crc));
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!("{}: cannot remove evicted spool entry: {e}", p.display());
            }
        }
        if !victims.is_empty() {
            tracing::warn!(
                "spool over {} bytes: evicted {} oldest detection(s)",
                self.max_bytes,
                victims.len()
            );
        }
        Ok(victims.len() as u64)
    }

    /// The payload of entry `seq`, checked (see [`check_entry`]), or `None`
    /// if it is gone (acked or evicted) or was found damaged now (then it
    /// is quarantined, logged and counted like those found at open).
    pub fn read(&self, seq: u64) -> Option<Vec<u8>> {
        let entry = *self.lock().entries.get(&seq)?;
        let name = entry_name(seq, entry.crc);
        let p = self.dir.join(&name);
        let reason = match fs::read(&p) {
            Ok(b) => match check_entry(seq, entry.crc, &b) {
                Ok(()) => return Some(b),
                Err(reason) => reason,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.forget(seq, entry) {
                    tracing::warn!(
                        "{}: spool entry vanished (removed by hand?); skipped",
                        p.display()
                    );
                }
                return None;
            }
            Err(e) => format!("cannot read: {e}"),
        };
        if self.forget(seq, entry) {
            self.quarantine_file(&name, &reason);
        }
        None
    }

    /// Remove entry `seq` (its PUBACK arrived). `false` if it was not there.
    /// Its file is kept if it is the record of the highest seq used while
    /// the state on disk is behind it (see the module docs).
    pub fn remove(&self, seq: u64) -> Result<bool, NodeError> {
        let (entry, keep, unkept) = {
            let mut ix = self.lock();
            let Some(e) = ix.entries.remove(&seq) else {
                return Ok(false);
            };
            ix.bytes -= e.len;
            let keep = seq >= ix.saved_seq_next && ix.kept.is_none_or(|(k, _)| k < seq);
            let unkept = if keep {
                ix.kept.replace((seq, e))
            } else {
                None
            };
            (e, keep, unkept)
        };
        if let Some((k, e)) = unkept {
            self.delete_kept(k, e);
        }
        if keep {
            return Ok(true);
        }
        let p = self.dir.join(entry_name(seq, entry.crc));
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(NodeError::io(
                &p,
                "cannot remove acknowledged spool entry",
                e,
            )),
        }
    }

    /// The state on disk now says `seq_next`: an acknowledged entry below
    /// it is no longer needed as the record that its seq was used.
    pub fn state_saved(&self, seq_next: u64) {
        let unkept = {
            let mut ix = self.lock();
            ix.saved_seq_next = ix.saved_seq_next.max(seq_next);
            if ix.kept.is_some_and(|(k, _)| k < seq_next) {
                ix.kept.take()
            } else {
                None
            }
        };
        if let Some((k, e)) = unkept {
            self.delete_kept(k, e);
        }
    }

    fn delete_kept(&self, seq: u64, e: Entry) {
        let p = self.dir.join(entry_name(seq, e.crc));
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "{}: cannot remove acknowledged spool entry: {e}",
                    p.display()
                );
            }
        }
    }

    /// The smallest seq in the spool that is `>= from`.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        self.lock().entries.range(from..).next().map(|(s, _)| *s)
    }

    /// All seqs in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.lock().entries.keys().copied().collect()
    }

    /// The highest seq in the name of any entry seen since open, in the
    /// spool or its quarantine (including entries published and removed
    /// since): no detection may get it or a lower one again.
    pub fn highest_seq(&self) -> Option<u64> {
        self.lock().highest_seq
    }

    /// Entries waiting for a PUBACK.
    pub fn backlog(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries evicted since open.
    pub fn evictions(&self) -> u64 {
        self.lock().evictions
    }

    /// Entries moved to the quarantine since open (at open included).
    pub fn quarantined(&self) -> u64 {
        self.lock().quarantined
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use blastnet_contract::testing::DetectionBuilder;
    use blastnet_contract::UtcNs;

    /// The payload the node would spool as `seq`.
    fn payload(seq: u64) -> Vec<u8> {
        let d =
            DetectionBuilder::new("n1", seq, UtcNs(1_700_000_000_000_000_000 + seq as i64)).build();
        serde_json::to_vec(&d).unwrap()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn entries_survive_reopen_and_leave_on_remove() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        {
            let (s, rec) = Spool::open(&dir, 1 << 20, true).unwrap();
            assert_eq!(rec.entries, 0);
            for seq in 1..=5 {
                s.append(seq, &payload(seq)).unwrap();
            }
            s.state_saved(6);
            assert!(s.remove(2).unwrap());
            assert!(!s.remove(2).unwrap());
        }
        // A crash mid-append leaves a .tmp: it is discarded on open.
        fs::write(dir.join(format!("{:020}.tmp", 6)), b"{\"se").unwrap();
        let (s, rec) = Spool::open(&dir, 1 << 20, true).unwrap();
        assert_eq!(
            rec,
            SpoolRecovery {
                entries: 4,
                partial_removed: 1,
                quarantined: 0,
            }
        );
        assert_eq!(s.seqs(), vec![1, 3, 4, 5]);
        assert_eq!(s.read(3).unwrap(), payload(3));
        assert_eq!(s.read(2), None);
        assert_eq!(s.next_at_or_after(2), Some(3));
        assert_eq!(s.next_at_or_after(6), None);
        assert_eq!(s.highest_seq(), Some(5));
        // The payload is stored as it is, its CRC-32 in the name.
        let p = s.path_of(3).unwrap();
        assert_eq!(
            p.file_name().unwrap().to_string_lossy(),
            format!("{:020}-{:08x}.json", 3, crc32fast::hash(&payload(3)))
        );
        assert_eq!(fs::read(p).unwrap(), payload(3));
    }

    #[test]
    fn the_highest_acknowledged_entry_stays_until_the_state_records_its_seq() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (s, _) = Spool::open(&dir, 1 << 20, false).unwrap();
        s.state_saved(2);
        for seq in 1..=4 {
            s.append(seq, &payload(seq)).unwrap();
        }
        let file = |seq| entry_name(seq, Some(crc32fast::hash(&payload(seq))));
        // The state on disk says seq_next 2 (its saves after 1 failed).
        for seq in 1..=3 {
            assert!(s.remove(seq).unwrap());
        }
        assert_eq!(s.backlog(), 1);
        assert_eq!(names_in(&dir), vec![file(3), file(4)], "3 is kept");
        assert!(!s.remove(3).unwrap(), "acknowledged once");
        // A node stopped now publishes 3 again at its next start, under 3.
        let (again, rec) = Spool::open(&dir, 1 << 20, false).unwrap();
        assert_eq!((again.seqs(), rec.entries), (vec![3, 4], 2));
        drop(again);
        // Once the state records seq_next 4, 3 is no longer needed.
        s.state_saved(4);
        assert_eq!(names_in(&dir), vec![file(4)]);
        assert!(s.remove(4).unwrap());
        assert_eq!(names_in(&dir), vec![file(4)], "4 is kept until saved");
        s.state_saved(5);
        assert!(names_in(&dir).is_empty());
    }

    #[test]
    fn the_bound_evicts_the_oldest_and_counts_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (s, _) = Spool::open(&dir, 1000, false).unwrap();
        let payload = vec![b'x'; 300];
        let mut evicted = 0;
        for seq in 10..20 {
            evicted += s.append(seq, &payload).unwrap();
        }
        // 1000 bytes hold three 300-byte entries.
        assert_eq!(s.seqs(), vec![17, 18, 19]);
        assert_eq!(evicted, 7);
        assert_eq!(s.evictions(), 7);
        assert_eq!(s.bytes(), 900);
        assert_eq!(names_in(&dir).len(), 3, "evicted files are deleted");
        // An entry larger than the bound is still kept (it is the newest).
        s.append(20, &vec![b'y'; 2000]).unwrap();
        assert_eq!(s.seqs(), vec![20]);
    }

    #[test]
    fn entry_names_round_trip_and_foreign_names_are_ignored() {
        for (seq, crc) in [(0, None), (7, Some(0)), (u64::MAX, Some(0xdead_beef))] {
            assert_eq!(parse_name(&entry_name(seq, crc)), Some((seq, crc)));
        }
        for name in [
            "notes.json",
            "+5.json",
            "-0000abcd.json",
            "00000000000000000005-xyz.json",
            "00000000000000000005-0000abcd0.json",
            "00000000000000000005.json.bak",
            "99999999999999999999.json",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
        assert_eq!(leading_seq("00000000000000000005-0000abcd.json.2"), Some(5));
    }

    /// The damage issue #17 lists, each beside good entries: a truncated
    /// entry, random bytes under an old-format name, a valid detection
    /// padded to 2 MB (over the packet limit), a detection under another
    /// seq's name. Only the good entries stay; the rest are moved, as they
    /// were, to the quarantine, and counted.
    #[test]
    fn damaged_entries_are_quarantined_at_open_and_counted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (s, _) = Spool::open(&dir, 64 << 20, false).unwrap();
        s.append(1, &payload(1)).unwrap();
        s.append(2, &payload(2)).unwrap();
        let p2 = s.path_of(2).unwrap();
        let truncated = payload(2)[..40].to_vec();
        fs::write(&p2, &truncated).unwrap();
        let random = blastnet_contract::testing::noise_bytes(700, 0x2545_F491_4F6C_DD1D);
        fs::write(dir.join(entry_name(3, None)), &random).unwrap();
        // An entry of the previous version (no checksum), good.
        fs::write(dir.join(entry_name(4, None)), payload(4)).unwrap();
        let mut huge = payload(5);
        huge.resize(2 << 20, b' ');
        assert!(serde_json::from_slice::<Detection>(&huge).is_ok());
        fs::write(dir.join(entry_name(5, None)), &huge).unwrap();
        fs::write(dir.join(entry_name(6, None)), payload(9)).unwrap();
        s.append(7, &payload(7)).unwrap();
        drop(s);

        let (s, rec) = Spool::open(&dir, 64 << 20, false).unwrap();
        assert_eq!(
            rec,
            SpoolRecovery {
                entries: 3,
                partial_removed: 0,
                quarantined: 4,
            }
        );
        assert_eq!(s.seqs(), vec![1, 4, 7]);
        assert_eq!(s.quarantined(), 4);
        for seq in [1, 4, 7] {
            assert_eq!(s.read(seq).unwrap(), payload(seq), "seq {seq}");
        }
        let q = root.path().join(QUARANTINE_DIR);
        assert_eq!(s.quarantine_dir(), q);
        let p2_name = p2.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            names_in(&q),
            vec![
                p2_name.clone(),
                entry_name(3, None),
                entry_name(5, None),
                entry_name(6, None),
            ]
        );
        // Moved as they were, not deleted or rewritten.
        assert_eq!(fs::read(q.join(&p2_name)).unwrap(), truncated);
        assert_eq!(fs::read(q.join(entry_name(3, None))).unwrap(), random);
        assert_eq!(fs::read(q.join(entry_name(5, None))).unwrap(), huge);
        assert_eq!(s.highest_seq(), Some(7));

        // The quarantine keeps its seqs: a reopen counts nothing new and
        // still knows the highest seq ever spooled.
        s.state_saved(8);
        s.remove(7).unwrap();
        fs::rename(q.join(entry_name(6, None)), q.join(entry_name(8, None))).unwrap();
        drop(s);
        let (s, rec) = Spool::open(&dir, 64 << 20, false).unwrap();
        assert_eq!(rec.quarantined, 0);
        assert_eq!(s.seqs(), vec![1, 4]);
        assert_eq!(s.highest_seq(), Some(8));
    }

    #[test]
    fn an_entry_damaged_after_open_is_quarantined_before_it_is_published() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (s, _) = Spool::open(&dir, 1 << 20, false).unwrap();
        for seq in 1..=3 {
            s.append(seq, &payload(seq)).unwrap();
        }
        let p2 = s.path_of(2).unwrap();
        let mut bytes = fs::read(&p2).unwrap();
        // One flipped bit inside a number: still a valid detection, so only
        // the checksum can tell.
        let at = bytes.windows(7).position(|w| w == b"\"peak\":").unwrap() + 7;
        assert_eq!(bytes[at], b'5', "peak 50 Pa");
        bytes[at] ^= 0x01;
        fs::write(&p2, &bytes).unwrap();
        assert_eq!(s.read(2), None);
        assert_eq!(s.quarantined(), 1);
        assert_eq!(s.seqs(), vec![1, 3]);
        assert_eq!(s.backlog(), 2);
        assert_eq!(s.bytes(), (payload(1).len() + payload(3).len()) as u64);
        assert_eq!(s.read(1).unwrap(), payload(1));
        assert_eq!(s.read(3).unwrap(), payload(3));
        let q = root.path().join(QUARANTINE_DIR);
        assert_eq!(fs::read(q.join(p2.file_name().unwrap())).unwrap(), bytes);
    }

    #[test]
    fn check_entry_names_what_was_expected() {
        let p = payload(4);
        assert_eq!(check_entry(4, Some(crc32fast::hash(&p)), &p), Ok(()));
        assert_eq!(check_entry(4, None, &p), Ok(()));
        let e = check_entry(4, Some(1), &p).unwrap_err();
        assert!(e.contains("expected 00000001"), "{e}");
        let e = check_entry(4, None, b"{\"schema\":").unwrap_err();
        assert!(
            e.contains("expected a blastnet.detection/1 JSON object"),
            "{e}"
        );
        let e = check_entry(5, None, &p).unwrap_err();
        assert!(e.contains("holds seq 4, expected 5"), "{e}");
        let e = check_entry(4, None, &vec![b' '; MAX_ENTRY_BYTES as usize + 1]).unwrap_err();
        assert!(e.contains("expected at most"), "{e}");
    }

    /// A real ENOSPC: the entry's `.tmp` is a symlink to `/dev/full`, where
    /// every write fails with "No space left on device", as on a full disk.
    /// The append fails naming the file, leaves no entry, and gives back
    /// what it wrote (here: removes the link, as it would remove a partial
    /// file), so the next append of the same seq, with room again, succeeds.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_append_on_a_full_disk_fails_cleanly_and_succeeds_once_there_is_room() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let (s, _) = Spool::open(&dir, 1 << 20, true).unwrap();
        let tmp = dir.join(format!("{:020}.tmp", 1));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = s.append(1, &payload(1)).unwrap_err().to_string();
        assert!(err.contains(&*tmp.to_string_lossy()), "{err}");
        assert!(err.contains("No space left on device"), "{err}");
        assert_eq!(s.backlog(), 0);
        assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
        s.append(1, &payload(1)).unwrap();
        assert_eq!(s.read(1).unwrap(), payload(1));
    }
}
