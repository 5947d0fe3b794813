//! Small persistent state beside the spool: the next `seq` (SPEC: per node,
//! monotonic, survives restarts) and the replay checkpoint (per stream, the
//! onset of the last detection spooled), written atomically after every
//! spooled detection.
//!
//! Crash window: the spool entry is written before the state file. If the
//! node dies between the two, [`PersistedState::reconcile`] reads the newer
//! spool entries at start-up and moves `seq_next` and the checkpoint past
//! them, so no seq is reused and no detection is spooled twice.

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
            format: "blastnet.node-state/1".into(),
            seq_next: 1,
            resume: None,
        }
    }
}

/// The state file and its folder.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    fsync: bool,
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

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Read the state; a missing file is a fresh node.
    pub fn load(&self) -> Result<PersistedState, NodeError> {
        let p = self.path();
        match fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| NodeError::Corrupt {
                path: p,
                msg: format!("expected a blastnet.node-state/1 JSON object: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedState::default()),
            Err(e) => Err(NodeError::io(p, "cannot read node state", e)),
        }
    }

    /// Write the state atomically (tmp, fsync, rename, fsync folder).
    pub fn save(&self, st: &PersistedState) -> Result<(), NodeError> {
        let p = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let text = serde_json::to_vec_pretty(st).map_err(|e| NodeError::Internal(e.to_string()))?;
        {
            let mut f = File::create(&tmp)
                .map_err(|e| NodeError::io(&tmp, "cannot write node state", e))?;
            f.write_all(&text)
                .map_err(|e| NodeError::io(&tmp, "cannot write node state", e))?;
            if self.fsync {
                f.sync_all()
                    .map_err(|e| NodeError::io(&tmp, "cannot fsync node state", e))?;
            }
        }
        fs::rename(&tmp, &p)
            .map_err(|e| NodeError::io(&p, "cannot rename node state into place", e))?;
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| NodeError::io(&self.dir, "cannot fsync state folder", e))?;
        }
        Ok(())
    }
}

impl PersistedState {
    /// Bring the state up to date with spool entries written after the last
    /// save (a crash between the two writes). Returns how many were found.
    pub fn reconcile(&mut self, spool: &Spool) -> Result<u64, NodeError> {
        let mut found = 0;
        for seq in spool.seqs() {
            if seq < self.seq_next {
                continue;
            }
            found += 1;
            self.seq_next = seq + 1;
            let Some(bytes) = spool.read(seq)? else {
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
        Ok(found)
    }
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

    #[test]
    fn a_crash_between_spool_and_state_reuses_no_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), true).unwrap();
        let (spool, _) = Spool::open(&dir.path().join("spool"), 1 << 20, true).unwrap();
        let mut st = store.load().unwrap();
        st.resume = Some(ResumePoint {
            key: "k".into(),
            ..Default::default()
        });
        spool
            .append(1, &serde_json::to_vec(&det(1, 100)).unwrap())
            .unwrap();
        st.seq_next = 2;
        store.save(&st).unwrap();
        // Spooled, then killed before the state was saved:
        spool
            .append(2, &serde_json::to_vec(&det(2, 200)).unwrap())
            .unwrap();
        let mut back = store.load().unwrap();
        assert_eq!(back.seq_next, 2);
        assert_eq!(back.reconcile(&spool).unwrap(), 1);
        assert_eq!(back.seq_next, 3);
        assert_eq!(back.resume.unwrap().last_onset["acoustic"], UtcNs(200));
    }

    #[test]
    fn a_corrupt_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = StateStore::new(dir.path(), false)
            .unwrap()
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
