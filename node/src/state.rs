//! Small persistent state beside the spool: the next `seq` (SPEC: per node,
//! monotonic, survives restarts) and the replay checkpoint (per stream, the
//! onset of the last detection spooled), written atomically after every
//! spooled detection, to `state.json` and then to a copy, `state.json.bak`.
//!
//! Crash window: the spool entry is written before the state file. If the
//! node dies between the two, [`PersistedState::reconcile`] reads the newer
//! spool entries at start-up and moves `seq_next` and the checkpoint past
//! them, so no seq is reused and no detection is spooled twice.
//!
//! A lost or corrupt state file does not stop the node ([`recover`]): a
//! corrupt one is moved aside (`state.json.corrupt-<n>`, kept for
//! inspection), the backup is read instead, and `seq_next` is raised above
//! the highest seq in any spool or quarantine entry name. The backup is what
//! keeps seqs unique when the spool is empty (everything acknowledged):
//! without it the node would start again at 1, and subscribers, which
//! de-duplicate by `(node_id, seq)`, would drop its new detections.
//!
//! A failed save (a full disk) is not fatal either: the caller logs and
//! counts it, and the next start reconciles from the spool.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use blastnet_contract::{Detection, UtcNs};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;
use crate::spool::Spool;

/// File name of the state inside the state folder.
pub const STATE_FILE: &str = "state.json";
/// File name of the copy of the state written after it.
pub const STATE_BACKUP: &str = "state.json.bak";
/// The `format` of the state file.
pub const STATE_FORMAT: &str = "blastnet.node-state/1";

/// Where a replay has got to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// Identity of the source (scenario, node); a different source starts afresh.
    pub key: String,
    /// The source was played to its end.
    pub completed: bool,
    /// Per stream name: onset of the last detection spooled.
    pub last_onset: BTreeMap<String, UtcNs>,
}

/// The persistent state (not to be confused with the SPEC's
/// `blastnet_contract::NodeState`, a node's online/offline state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// `blastnet.node-state/1`.
    pub format: String,
    /// The seq the next detection gets.
    pub seq_next: u64,
    /// Replay checkpoint, when the source is replayable.
    #[serde(default)]
    pub resume: Option<ResumePoint>,
}

impl Default for PersistedState {
    fn default() -> Self {
        PersistedState {
            format: STATE_FORMAT.into(),
            seq_next: 1,
            resume: None,
        }
    }
}

/// Where [`StateStore::load`] found the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// `state.json`.
    File,
    /// `state.json.bak` (`state.json` was missing or corrupt).
    Backup,
    /// Neither file exists: a new node, or both were deleted.
    Fresh,
    /// Neither file could be used (corrupt, unreadable): moved aside.
    Lost,
}

/// The state file and its folder.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    fsync: bool,
}

/// The state in `path`; `Ok(None)` if there is no such file, `Err` (the
/// path and what was expected) if it cannot be used.
fn read_state(path: &Path) -> Result<Option<PersistedState>, String> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let st: PersistedState = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: expected a {STATE_FORMAT} JSON object: {e}",
            path.display()
        )
    })?;
    if st.format != STATE_FORMAT {
        return Err(format!(
            "{}: expected format {STATE_FORMAT:?}, got {:?}",
            path.display(),
            st.format
        ));
    }
    Ok(Some(st))
}

impl StateStore {
    /// Open (creating) the state folder.
    pub fn new(dir: &Path, fsync: bool) -> Result<StateStore, NodeError> {
        fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, "cannot create state folder", e))?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            fsync,
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Read the state: `state.json`, else its backup, else a fresh state.
    /// Never fails: a file that cannot be used is moved aside
    /// (`<name>.corrupt-<n>`) and logged. The caller raises `seq_next`
    /// above the spool ([`PersistedState::reconcile`], or [`recover`]).
    pub fn load(&self) -> (PersistedState, StateSource) {
        let main_missing = match read_state(&self.path()) {
            Ok(Some(st)) => return (st, StateSource::File),
            Ok(None) => true,
            Err(reason) => {
                self.move_aside(STATE_FILE, &reason);
                false
            }
        };
        let bak = self.dir.join(STATE_BACKUP);
        match read_state(&bak) {
            Ok(Some(st)) => {
                tracing::warn!(
                    "{}: {}; continuing from its backup {} (seq_next {})",
                    self.path().display(),
                    if main_missing { "missing" } else { "unusable" },
                    bak.display(),
                    st.seq_next
                );
                (st, StateSource::Backup)
            }
            Ok(None) if main_missing => (PersistedState::default(), StateSource::Fresh),
            Ok(None) => (PersistedState::default(), StateSource::Lost),
            Err(reason) => {
                self.move_aside(STATE_BACKUP, &reason);
                (PersistedState::default(), StateSource::Lost)
            }
        }
    }

    /// Rename the unusable file `name` to the first free `name.corrupt-<n>`.
    fn move_aside(&self, name: &str, reason: &str) {
        let from = self.dir.join(name);
        let Some(to) = (1u32..)
            .map(|n| self.dir.join(format!("{name}.corrupt-{n}")))
            .find(|p| p.symlink_metadata().is_err())
        else {
            return;
        };
        match fs::rename(&from, &to) {
            Ok(()) => tracing::warn!("{reason}; moved aside to {}", to.display()),
            Err(e) => tracing::error!(
                "{reason}; cannot move it aside to {}: {e}; the next save replaces it",
                to.display()
            ),
        }
    }

    /// Write the state atomically (tmp, fsync, rename), then its backup the
    /// same way, then fsync the folder. On an error the files are as they
    /// were (or the backup one save behind) and no `.tmp` is left.
    pub fn save(&self, st: &PersistedState) -> Result<(), NodeError> {
        let text = serde_json::to_vec_pretty(st).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.write_atomic(STATE_FILE, &text)?;
        self.write_atomic(STATE_BACKUP, &text)?;
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| NodeError::io(&self.dir, "cannot fsync state folder", e))?;
        }
        Ok(())
    }

    fn write_atomic(&self, name: &str, text: &[u8]) -> Result<(), NodeError> {
        let p = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let r = (|| {
            let mut f = File::create(&tmp)
                .map_err(|e| NodeError::io(&tmp, "cannot write node state", e))?;
            f.write_all(text)
                .map_err(|e| NodeError::io(&tmp, "cannot write node state", e))?;
            if self.fsync {
                f.sync_all()
                    .map_err(|e| NodeError::io(&tmp, "cannot fsync node state", e))?;
            }
            fs::rename(&tmp, &p)
                .map_err(|e| NodeError::io(&p, "cannot rename node state into place", e))
        })();
        if r.is_err() {
            // Give back the space a partial file holds (on a full disk).
            let _ = fs::remove_file(&tmp);
        }
        r
    }
}

impl PersistedState {
    /// The seq for the next detection and the `seq_next` after it. Never
    /// wraps: once `seq_next` is `u64::MAX` every further detection is
    /// refused with [`NodeError::SeqExhausted`].
    pub fn next_seq(&self) -> Result<(u64, u64), NodeError> {
        let seq = self.seq_next;
        seq.checked_add(1)
            .map(|next| (seq, next))
            .ok_or(NodeError::SeqExhausted { seq })
    }

    /// Bring the state up to date with the spool: past every seq in a
    /// spool or quarantine entry name, and the checkpoint past the spool
    /// entries written after the last save (a crash between the two
    /// writes). Returns how many such entries were found.
    pub fn reconcile(&mut self, spool: &Spool) -> u64 {
        let mut found = 0;
        let before = self.seq_next;
        for seq in spool.seqs() {
            if seq < before {
                continue;
            }
            found += 1;
            let Some(bytes) = spool.read(seq) else {
                continue;
            };
            let Ok(d) = serde_json::from_slice::<Detection>(&bytes) else {
                continue;
            };
            if let Some(r) = self.resume.as_mut() {
                let e = r
                    .last_onset
                    .entry(d.stream.as_str().to_string())
                    .or_insert(d.onset_utc);
                *e = (*e).max(d.onset_utc);
            }
        }
        if let Some(h) = spool.highest_seq() {
            // Saturating: a (hand-made) entry named u64::MAX leaves the
            // counter exhausted, not wrapped to 0.
            self.seq_next = self.seq_next.max(h.saturating_add(1));
        }
        found
    }
}

/// The state at start-up: [`StateStore::load`], then
/// [`PersistedState::reconcile`] with the spool, saved if that changed it
/// (a failed save is logged, not fatal: a node on a full disk must still
/// start and drain its spool). Logs how `seq_next` was found.
pub fn recover(store: &StateStore, spool: &Spool) -> PersistedState {
    let (loaded, source) = store.load();
    let mut state = loaded.clone();
    let found = state.reconcile(spool);
    let highest = spool
        .highest_seq()
        .map_or("none".to_string(), |h| h.to_string());
    let seq = state.seq_next;
    match source {
        StateSource::File if found > 0 => tracing::info!(
            "{found} detection(s) spooled after the last state save; seq continues at {seq}"
        ),
        StateSource::File => {}
        StateSource::Fresh if spool.highest_seq().is_none() => {}
        StateSource::Fresh | StateSource::Backup | StateSource::Lost => tracing::warn!(
            "{}: {}: seq continues at {seq} (highest seq in {} and {}: {highest})",
            store.path().display(),
            match source {
                StateSource::Backup =>
                    format!("read from the backup (seq_next {})", loaded.seq_next),
                StateSource::Fresh => "missing, and no backup".to_string(),
                _ => "unusable, and no usable backup".to_string(),
            },
            spool.dir().display(),
            spool.quarantine_dir().display(),
        ),
    }
    if source == StateSource::Lost && spool.highest_seq().is_none() {
        tracing::warn!(
            "no spool entry tells which seqs were used: seq starts again at {seq}; \
             subscribers may drop detections under a seq they have seen"
        );
    }
    // What a restart would read back: the spool keeps the record of any
    // seq used above it (`Spool::state_saved`).
    let mut on_disk = match source {
        StateSource::File | StateSource::Backup => loaded.seq_next,
        StateSource::Fresh | StateSource::Lost => 0,
    };
    if state != loaded || !matches!(source, StateSource::File | StateSource::Fresh) {
        match store.save(&state) {
            Ok(()) => on_disk = state.seq_next,
            Err(e) => tracing::error!(
                "{e}; continuing with the state in memory (rebuilt again at the next start)"
            ),
        }
    }
    spool.state_saved(on_disk);
    state
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use blastnet_contract::testing::DetectionBuilder;
    use blastnet_contract::{ClockSource, SourceKind};

    fn det(seq: u64, onset: i64) -> Detection {
        DetectionBuilder::new("n", seq, UtcNs(onset))
            .onset_uncertainty_s(1e-5)
            .kind(SourceKind::Explosion, 0.5)
            .peak(1.0)
            .snr_db(20.0)
            .clock(ClockSource::Replay, 0.0)
            .build()
    }

    fn spool_in(dir: &Path) -> Spool {
        Spool::open(&dir.join("spool"), 1 << 20, true).unwrap().0
    }

    fn append(spool: &Spool, seq: u64) {
        spool
            .append(
                seq,
                &serde_json::to_vec(&det(seq, seq as i64 * 100)).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn a_crash_between_spool_and_state_reuses_no_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let spool = spool_in(dir.path());
        let (mut st, source) = store.load();
        assert_eq!(source, StateSource::Fresh);
        st.resume = Some(ResumePoint {
            key: "k".into(),
            ..Default::default()
        });
        append(&spool, 1);
        st.seq_next = 2;
        store.save(&st).unwrap();
        // Spooled, then killed before the state was saved:
        append(&spool, 2);
        let (mut back, source) = store.load();
        assert_eq!(source, StateSource::File);
        assert_eq!(back.seq_next, 2);
        assert_eq!(back.reconcile(&spool), 1);
        assert_eq!(back.seq_next, 3);
        assert_eq!(back.resume.unwrap().last_onset["acoustic"], UtcNs(200));
    }

    /// state.json and its backup both deleted, the spool holding 5..=7 (1
    /// to 4 acknowledged): seq continues at 8, and the rebuilt state is saved.
    #[test]
    fn a_deleted_state_file_continues_above_the_highest_spooled_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let spool = spool_in(dir.path());
        for seq in 1..=7 {
            append(&spool, seq);
        }
        for seq in 1..=4 {
            spool.remove(seq).unwrap();
        }
        store
            .save(&PersistedState {
                seq_next: 8,
                ..Default::default()
            })
            .unwrap();
        fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        fs::remove_file(dir.path().join(STATE_BACKUP)).unwrap();
        let spool = spool_in(dir.path());
        let st = recover(&store, &spool);
        assert_eq!(st.seq_next, 8);
        assert_eq!(read_state(&store.path()).unwrap().unwrap().seq_next, 8);
    }

    /// With the spool empty (everything acknowledged) only the backup
    /// knows the seqs used: a deleted state.json continues from it.
    #[test]
    fn a_deleted_state_file_with_an_empty_spool_continues_from_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let spool = spool_in(dir.path());
        store
            .save(&PersistedState {
                seq_next: 42,
                ..Default::default()
            })
            .unwrap();
        fs::remove_file(store.path()).unwrap();
        assert_eq!(store.load().1, StateSource::Backup);
        assert_eq!(recover(&store, &spool).seq_next, 42);
        assert_eq!(read_state(&store.path()).unwrap().unwrap().seq_next, 42);
    }

    #[test]
    fn a_corrupt_state_file_is_moved_aside_and_seq_continues_above_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let spool = spool_in(dir.path());
        store
            .save(&PersistedState {
                seq_next: 3,
                ..Default::default()
            })
            .unwrap();
        // Spooled 3..=5 and the state file cut short (the backup is behind).
        for seq in 3..=5 {
            append(&spool, seq);
        }
        let garbage = br#"{"format":"blastnet.node-state/1","seq_ne"#;
        fs::write(store.path(), garbage).unwrap();
        assert_eq!(recover(&store, &spool).seq_next, 6);
        let aside = dir.path().join("state.json.corrupt-1");
        assert_eq!(fs::read(&aside).unwrap(), garbage, "kept as it was");
        assert_eq!(read_state(&store.path()).unwrap().unwrap().seq_next, 6);
        let reason = read_state(&aside).unwrap_err();
        assert!(reason.contains("state.json.corrupt-1"), "{reason}");
        assert!(
            reason.contains("expected a blastnet.node-state/1 JSON object"),
            "{reason}"
        );

        // Both files corrupt, the spool empty but one damaged entry, seq 9,
        // in the quarantine: seq continues at 10.
        for seq in 3..=5 {
            spool.remove(seq).unwrap();
        }
        fs::write(spool.dir().join(format!("{:020}.json", 9)), b"\x00\x01").unwrap();
        fs::write(store.path(), b"\xff\xfe").unwrap();
        fs::write(
            dir.path().join(STATE_BACKUP),
            br#"{"format":"other/2","seq_next":1}"#,
        )
        .unwrap();
        let spool = spool_in(dir.path());
        assert_eq!(spool.backlog(), 0);
        assert_eq!(spool.quarantined(), 1);
        assert_eq!(recover(&store, &spool).seq_next, 10);
        assert!(dir.path().join("state.json.corrupt-2").exists());
        assert!(dir.path().join("state.json.bak.corrupt-1").exists());
        assert_eq!(read_state(&store.path()).unwrap().unwrap().seq_next, 10);
    }

    #[test]
    fn seq_at_u64_max_is_refused_not_wrapped() {
        let mut st = PersistedState {
            seq_next: u64::MAX - 1,
            ..Default::default()
        };
        assert_eq!(st.next_seq().unwrap(), (u64::MAX - 1, u64::MAX));
        st.seq_next = u64::MAX;
        let err = st.next_seq().unwrap_err();
        assert!(matches!(err, NodeError::SeqExhausted { seq: u64::MAX }));
        assert!(err.to_string().contains("rather than wrap to 0"), "{err}");

        // A spool entry named u64::MAX leaves the counter exhausted, not at 0.
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_in(dir.path());
        fs::write(spool.dir().join(format!("{}.json", u64::MAX)), b"x").unwrap();
        let spool = spool_in(dir.path());
        let mut st = PersistedState::default();
        st.reconcile(&spool);
        assert_eq!(st.seq_next, u64::MAX);
        assert!(st.next_seq().is_err());
    }

    /// A directory where `state.json.tmp` goes makes the write fail (as a
    /// full disk would): the error names the file, the state on disk is
    /// the last one saved, and no `.tmp` is left when it was a file.
    #[test]
    fn a_failed_state_write_leaves_the_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let st = |seq_next| PersistedState {
            seq_next,
            ..Default::default()
        };
        store.save(&st(3)).unwrap();
        fs::create_dir(dir.path().join("state.json.tmp")).unwrap();
        let err = store.save(&st(4)).unwrap_err().to_string();
        assert!(err.contains("state.json.tmp"), "{err}");
        assert_eq!(store.load(), (st(3), StateSource::File));
        fs::remove_dir(dir.path().join("state.json.tmp")).unwrap();
        store.save(&st(4)).unwrap();
        assert_eq!(store.load(), (st(4), StateSource::File));
    }
}
