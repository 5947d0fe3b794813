//! The on-disk spool: store-and-forward for detections.
//!
//! One file per detection, `{seq:020}.json`, holding the exact payload to
//! publish. An append writes `{seq}.tmp`, fsyncs it, renames it into place
//! and fsyncs the folder, so after a crash (SIGKILL, power cut) an entry is
//! either wholly there or not at all, and a stray `.tmp` is discarded. An
//! entry is removed only when the broker's PUBACK for it arrives.
//!
//! Why files and not a log or an embedded database: detections are rare
//! (a few a minute at most), so the cost of a file per entry is nothing,
//! while the crash behaviour of rename is simple to reason about and to
//! inspect by hand on a Pi (`ls /var/lib/blastnet/node/spool`).
//!
//! The spool is bounded by `max_bytes`; beyond it the oldest entries are
//! evicted and counted (reported in status as `spool_evictions`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::NodeError;

/// The spool of one node. Shared between the pipeline (append) and the
/// publisher (read, remove); file I/O happens outside the index lock.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    fsync: bool,
    index: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// seq → bytes on disk.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
    evictions: u64,
    discarded: u64,
}

/// A count of what [`Spool::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolRecovery {
    /// Entries waiting to be published.
    pub entries: u64,
    /// Half-written `.tmp` files removed.
    pub partial_removed: u64,
}

fn entry_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

impl Spool {
    /// Open (creating) the spool folder and index what is in it.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: bool,
    ) -> Result<(Spool, SpoolRecovery), NodeError> {
        fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, "cannot create spool folder", e))?;
        let mut index = Index::default();
        let mut rec = SpoolRecovery::default();
        let rd =
            fs::read_dir(dir).map_err(|e| NodeError::io(dir, "cannot list spool folder", e))?;
        for ent in rd {
            let ent = ent.map_err(|e| NodeError::io(dir, "cannot list spool folder", e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.ends_with(".tmp") {
                fs::remove_file(&path)
                    .map_err(|e| NodeError::io(&path, "cannot remove partial spool entry", e))?;
                rec.partial_removed += 1;
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let len = ent
                .metadata()
                .map_err(|e| NodeError::io(&path, "cannot stat spool entry", e))?
                .len();
            index.entries.insert(seq, len);
            index.bytes += len;
        }
        rec.entries = index.entries.len() as u64;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            fsync,
            index: Mutex::new(index),
        };
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

    /// Path of entry `seq`.
    pub fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(entry_name(seq))
    }

    /// Durably store `payload` as entry `seq`. Returns how many old entries
    /// were evicted to stay within the bound. The new entry itself is never evicted.
    pub fn append(&self, seq: u64, payload: &[u8]) -> Result<u64, NodeError> {
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let path = self.path_of(seq);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| NodeError::io(&tmp, "cannot create spool entry", e))?;
            f.write_all(payload)
                .map_err(|e| NodeError::io(&tmp, "cannot write spool entry", e))?;
            if self.fsync {
                f.sync_all()
                    .map_err(|e| NodeError::io(&tmp, "cannot fsync spool entry", e))?;
            }
        }
        fs::rename(&tmp, &path)
            .map_err(|e| NodeError::io(&path, "cannot rename spool entry into place", e))?;
        self.sync_dir()?;
        let len = payload.len() as u64;
        let mut victims = Vec::new();
        {
            let mut ix = self.lock();
            if let Some(old) = ix.entries.insert(seq, len) {
                ix.bytes -= old;
            }
            ix.bytes += len;
            while ix.bytes > self.max_bytes {
                let Some((&oldest, &n)) = ix.entries.iter().next() else {
                    break;
                };
                if oldest == seq {
                    break;
                }
                ix.entries.remove(&oldest);
                ix.bytes -= n;
                ix.evictions += 1;
                victims.push(oldest);
            }
        }
        for v in &victims {
            let p = self.path_of(*v);
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

    /// The payload of entry `seq`, or `None` if it is gone (acked or evicted).
    pub fn read(&self, seq: u64) -> Result<Option<Vec<u8>>, NodeError> {
        if !self.lock().entries.contains_key(&seq) {
            return Ok(None);
        }
        let p = self.path_of(seq);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::io(&p, "cannot read spool entry", e)),
        }
    }

    /// Remove entry `seq` (its PUBACK arrived). `false` if it was not there.
    pub fn remove(&self, seq: u64) -> Result<bool, NodeError> {
        {
            let mut ix = self.lock();
            let Some(n) = ix.entries.remove(&seq) else {
                return Ok(false);
            };
            ix.bytes -= n;
        }
        let p = self.path_of(seq);
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

    /// Drop an entry that cannot be published (unreadable payload), counting it.
    pub fn discard(&self, seq: u64) -> Result<(), NodeError> {
        if self.remove(seq)? {
            self.lock().discarded += 1;
        }
        Ok(())
    }

    /// The smallest seq in the spool that is `>= from`.
    pub fn next_at_or_after(&self, from: u64) -> Option<u64> {
        self.lock().entries.range(from..).next().map(|(s, _)| *s)
    }

    /// All seqs in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.lock().entries.keys().copied().collect()
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

    /// Entries discarded as unreadable since open.
    pub fn discarded(&self) -> u64 {
        self.lock().discarded
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_survive_reopen_and_leave_on_remove() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, rec) = Spool::open(dir.path(), 1 << 20, true).unwrap();
            assert_eq!(rec.entries, 0);
            for seq in 1..=5 {
                s.append(seq, format!("{{\"seq\":{seq}}}").as_bytes())
                    .unwrap();
            }
            assert!(s.remove(2).unwrap());
            assert!(!s.remove(2).unwrap());
        }
        // A crash mid-append leaves a .tmp: it is discarded on open.
        fs::write(dir.path().join(format!("{:020}.tmp", 6)), b"{\"se").unwrap();
        let (s, rec) = Spool::open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(
            rec,
            SpoolRecovery {
                entries: 4,
                partial_removed: 1
            }
        );
        assert_eq!(s.seqs(), vec![1, 3, 4, 5]);
        assert_eq!(s.read(3).unwrap().unwrap(), b"{\"seq\":3}");
        assert_eq!(s.read(2).unwrap(), None);
        assert_eq!(s.next_at_or_after(2), Some(3));
        assert_eq!(s.next_at_or_after(6), None);
    }

    #[test]
    fn the_bound_evicts_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Spool::open(dir.path(), 1000, false).unwrap();
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
        assert!(!s.path_of(10).exists());
        // An entry larger than the bound is still kept (it is the newest).
        s.append(20, &vec![b'y'; 2000]).unwrap();
        assert_eq!(s.seqs(), vec![20]);
    }
}
