//! The event store: embedded SQLite (WAL), a schema version table with
//! migrations, every revision of every event (or only the latest), and the
//! detections events use.
//!
//! Writes come from one writer (the service's store thread), reads from the
//! HTTP handlers; both go through [`Store`], which holds one connection
//! behind a mutex. SQLite serialises writers anyway, event writes are a few
//! per second at most, and one connection keeps `:memory:` stores working.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use blastnet_aggregator_core::{Calibration, NodeCalibration, SiteCalibration};
use blastnet_contract::{Detection, Event, UtcNs};
use rusqlite::{params, Connection, OptionalExtension};

use crate::config::{KeepRevisions, StorePath};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused (disk full, corrupt file, locked by another process).
    /// At open: fix the path or stop the other process. At write: the event
    /// was still published; the error is counted and logged, and the write
    /// retried every second until it succeeds.
    #[error("event store {path}: {source}")]
    Sqlite {
        /// The database file (or `:memory:`).
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Another process holds the store (one writer per file): stop it, or
    /// give this one another `store.path`.
    #[error(
        "event store {path} is in use by {holder} (lock file {lock}); one aggregator per store"
    )]
    Locked {
        /// The database file.
        path: String,
        /// The lock file.
        lock: String,
        /// Who holds it, as written in the lock file.
        holder: String,
    },
    /// The lock file could not be created.
    #[error("event store {path}: creating the lock file {lock}: {source}")]
    Lock {
        /// The database file.
        path: String,
        /// The lock file.
        lock: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file was written by a newer blastnet. Use that version or another file.
    #[error("event store {path}: schema version {found} is newer than this build's {supported}")]
    TooNew {
        /// The database file.
        path: String,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A stored row does not parse (written by a buggy or foreign writer).
    #[error("event store {path}: stored JSON of {what} does not parse: {source}")]
    Corrupt {
        /// The database file.
        path: String,
        /// Which row.
        what: String,
        /// Parse error.
        source: serde_json::Error,
    },
}

/// Migrations, in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: events (latest revision), revisions, detections and their links.
    "CREATE TABLE events (
        event_id   TEXT PRIMARY KEY,
        revision   INTEGER NOT NULL,
        origin_ns  INTEGER NOT NULL,
        status     TEXT NOT NULL,
        json       TEXT NOT NULL,
        updated_ns INTEGER NOT NULL
     );
     CREATE INDEX events_origin ON events(origin_ns);
     CREATE TABLE event_revisions (
        event_id   TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        origin_ns  INTEGER NOT NULL,
        json       TEXT NOT NULL,
        stored_ns  INTEGER NOT NULL,
        PRIMARY KEY (event_id, revision)
     );
     CREATE TABLE detections (
        node_id   TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        onset_ns  INTEGER NOT NULL,
        json      TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
     );
     CREATE TABLE event_detections (
        event_id  TEXT NOT NULL,
        node_id   TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (event_id, node_id, seq)
     );",
    // 2: what the engine learned (error scales per site, station terms per node).
    "CREATE TABLE error_scales (
        site      TEXT PRIMARY KEY,
        json      TEXT NOT NULL
     );
     CREATE TABLE station_terms (
        node_id   TEXT PRIMARY KEY,
        json      TEXT NOT NULL
     );",
    // 3: the inbox: every node message the broker handed over, written
    // before it is acknowledged, kept for the retention window of data time
    // and read again after a crash.
    "CREATE TABLE inbox (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        topic     TEXT NOT NULL,
        payload   BLOB NOT NULL,
        data_ns   INTEGER NOT NULL
     );
     CREATE INDEX inbox_data ON inbox(data_ns);",
    // 4: the event outbox: whether the broker acknowledged the latest
    // revision of an event (earlier rows count as published). A restart
    // publishes again what it did not.
    "ALTER TABLE events ADD COLUMN published INTEGER NOT NULL DEFAULT 1;
     CREATE INDEX events_unpublished ON events(published) WHERE published = 0;",
    // 5: snippets (waveform evidence, extension), one per detection, as
    // received; pruned oldest first (by data time) to `store.snippet_budget_bytes`.
    "CREATE TABLE snippets (
        node_id   TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        start_ns  INTEGER NOT NULL,
        bytes     INTEGER NOT NULL,
        json      TEXT NOT NULL,
        PRIMARY KEY (node_id, seq)
     );
     CREATE INDEX snippets_start ON snippets(start_ns);",
];

/// Default of `store.snippet_budget_bytes`: 256 MiB, about 8 000 snippets
/// of 1.5 s at 8 kHz (~33 KB of JSON each).
pub const DEFAULT_SNIPPET_BUDGET_BYTES: u64 = 256 << 20;

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An event with its revisions and detections (`GET /api/events/{id}`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    /// Latest revision.
    pub event: Event,
    /// Every stored revision, oldest first (only the latest when keep = latest).
    pub revisions: Vec<Event>,
    /// Detections this event used or rejected, as received.
    pub detections: Vec<Detection>,
}

/// The event store. Cheap to clone (shared connection).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    name: Arc<str>,
    keep: KeepRevisions,
    /// The single-writer lock (file stores), held while any clone lives.
    writer_lock: Option<Arc<std::fs::File>>,
    /// A revision stored is unpublished until [`Store::mark_published`]
    /// (the aggregator with an inbox tracks its publishes); otherwise
    /// stored as published.
    outbox: Arc<AtomicBool>,
    /// Bytes of snippet JSON kept at most (oldest data time pruned first).
    snippet_budget: Arc<std::sync::atomic::AtomicU64>,
}

/// One message of the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// MQTT topic.
    pub topic: String,
    /// Payload as received.
    pub payload: Vec<u8>,
    /// Its data time (onset or status time), ns; 0 where it has none.
    pub data_ns: i64,
}

/// Take the single-writer lock beside `db`: `<db>.lock`, locked exclusively
/// (released by the OS when the process dies, so a crash leaves no stale lock)
/// and holding the holder's pid and host for the message of the next one.
fn lock_store(db: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    let lock = std::path::PathBuf::from(lock);
    let io = |source| StoreError::Lock {
        path: db.display().to_string(),
        lock: lock.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StoreError::Locked {
                path: db.display().to_string(),
                lock: lock.display().to_string(),
                holder: if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let me = format!(
        "pid {} ({})",
        std::process::id(),
        std::env::args().next().unwrap_or_default()
    );
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    f.write_all(me.as_bytes()).map_err(io)?;
    f.flush().map_err(io)?;
    Ok(f)
}

impl Store {
    /// Open (creating if needed) and migrate.
    pub fn open(path: &StorePath, keep: KeepRevisions) -> Result<Store, StoreError> {
        let lock = match path {
            StorePath::Memory => None,
            StorePath::File(p) => Some(Arc::new(lock_store(p)?)),
        };
        let (conn, name) = match path {
            StorePath::Memory => (Connection::open_in_memory(), ":memory:".to_string()),
            StorePath::File(p) => (Connection::open(p), p.display().to_string()),
        };
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = conn.map_err(err)?;
        if matches!(path, StorePath::File(_)) {
            // WAL: readers (HTTP) never block the writer; NORMAL sync is
            // durable across process crashes, may lose the last commit on power loss.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let store = Store {
            conn: Arc::new(Mutex::new(conn)),
            name: name.clone().into(),
            keep,
            writer_lock: lock,
            outbox: Arc::new(AtomicBool::new(false)),
            snippet_budget: Arc::new(std::sync::atomic::AtomicU64::new(
                DEFAULT_SNIPPET_BUDGET_BYTES,
            )),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Open a file store (convenience for tools).
    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        Store::open(&StorePath::File(path.to_path_buf()), KeepRevisions::All)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.name.to_string(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements
        // are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(|e| self.err(e))?;
        let found: Option<i64> = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.name.to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction().map_err(|e| self.err(e))?;
            tx.execute_batch(sql).map_err(|e| self.err(e))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![i as i64 + 1],
            )
            .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            tracing::info!(store = %self.name, "event store migrated to schema version {}", i + 1);
        }
        Ok(())
    }

    /// Whether this store keeps anything on disk (the inbox only makes sense then).
    pub fn is_durable(&self) -> bool {
        self.writer_lock.is_some()
    }

    /// Append messages to the inbox in one transaction: once this returns
    /// they survive a crash of the process.
    pub fn inbox_append(&self, msgs: &[InboxMessage]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut st = tx
                .prepare_cached("INSERT INTO inbox (topic, payload, data_ns) VALUES (?1, ?2, ?3)")
                .map_err(|e| self.err(e))?;
            for m in msgs {
                st.execute(params![m.topic, m.payload, m.data_ns])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forget inbox messages whose data time is before `before_ns`; returns how many.
    pub fn inbox_prune(&self, before_ns: i64) -> Result<usize, StoreError> {
        self.lock()
            .execute("DELETE FROM inbox WHERE data_ns < ?1", params![before_ns])
            .map_err(|e| self.err(e))
    }

    /// Every inbox message, in the order it was written.
    pub fn inbox(&self) -> Result<Vec<InboxMessage>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT topic, payload, data_ns FROM inbox ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(InboxMessage {
                    topic: r.get(0)?,
                    payload: r.get(1)?,
                    data_ns: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.lock()
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Store one revision and the detections it refers to, in one transaction.
    /// An older revision than the stored latest is kept in the history but
    /// does not replace the latest.
    pub fn put_event(&self, event: &Event, detections: &[Detection]) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(|source| StoreError::Corrupt {
            path: self.name.to_string(),
            what: format!("event {}", event.event_id),
            source,
        })?;
        let status = serde_json::to_value(event.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let now = UtcNs::now().0;
        let published = i64::from(!self.outbox.load(Ordering::Relaxed));
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO events (event_id, revision, origin_ns, status, json, updated_ns, published)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(event_id) DO UPDATE SET
               revision = excluded.revision, origin_ns = excluded.origin_ns,
               status = excluded.status, json = excluded.json, updated_ns = excluded.updated_ns,
               published = MAX(excluded.published,
                               events.published AND excluded.revision = events.revision)
             WHERE excluded.revision >= events.revision",
            params![
                event.event_id,
                event.revision,
                event.origin_utc.0,
                status,
                json,
                now,
                published
            ],
        )
        .map_err(|e| self.err(e))?;
        if self.keep == KeepRevisions::All {
            tx.execute(
                "INSERT OR REPLACE INTO event_revisions (event_id, revision, origin_ns, json, stored_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![event.event_id, event.revision, event.origin_utc.0, json, now],
            )
            .map_err(|e| self.err(e))?;
        }
        for d in detections {
            let dj = serde_json::to_string(d).map_err(|source| StoreError::Corrupt {
                path: self.name.to_string(),
                what: format!("detection {}/{}", d.node_id, d.seq),
                source,
            })?;
            tx.execute(
                "INSERT OR IGNORE INTO detections (node_id, seq, onset_ns, json) VALUES (?1, ?2, ?3, ?4)",
                params![d.node_id, d.seq as i64, d.onset_utc.0, dj],
            )
            .map_err(|e| self.err(e))?;
        }
        for r in event.detections.iter().chain(event.outliers.iter()) {
            tx.execute(
                "INSERT OR IGNORE INTO event_detections (event_id, node_id, seq) VALUES (?1, ?2, ?3)",
                params![event.event_id, r.node_id, r.seq as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn parse_event(&self, what: &str, json: &str) -> Result<Event, StoreError> {
        serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
            path: self.name.to_string(),
            what: what.to_string(),
            source,
        })
    }

    /// Track publishing (see [`Store::mark_published`]): revisions stored
    /// from now on count as unpublished until marked.
    pub fn track_publishing(&self) {
        self.outbox.store(true, Ordering::Relaxed);
    }

    /// The broker acknowledged revision `revision` of `event_id`: it is
    /// not published again after a restart (a newer revision stored
    /// meanwhile stays unpublished).
    pub fn mark_published(&self, event_id: &str, revision: u32) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE events SET published = 1 WHERE event_id = ?1 AND revision = ?2",
                params![event_id, revision],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Latest revisions the broker never acknowledged (see
    /// [`Store::track_publishing`]), oldest origin first.
    pub fn unpublished(&self) -> Result<Vec<Event>, StoreError> {
        self.query_events(
            "SELECT event_id, json FROM events WHERE published = 0 ORDER BY origin_ns, event_id",
            [],
        )
    }

    /// The events of `sql` (selecting `event_id, json`) with `params`.
    fn query_events(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Event>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(|e| self.err(e))?;
            out.push(self.parse_event(&format!("event {id}"), &json)?);
        }
        Ok(out)
    }

    /// Latest revisions of events whose origin is in `[from, to)`, oldest
    /// first, at most `limit`.
    pub fn events_between(
        &self,
        from: Option<UtcNs>,
        to: Option<UtcNs>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.query_events(
            "SELECT event_id, json FROM events WHERE origin_ns >= ?1 AND origin_ns < ?2
             ORDER BY origin_ns, event_id LIMIT ?3",
            params![
                from.map_or(i64::MIN, |t| t.0),
                to.map_or(i64::MAX, |t| t.0),
                limit.min(i64::MAX as usize) as i64
            ],
        )
    }

    /// The most recent `limit` events by origin time, oldest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = self.query_events(
            "SELECT event_id, json FROM events ORDER BY origin_ns DESC LIMIT ?1",
            params![limit.min(i64::MAX as usize) as i64],
        )?;
        out.reverse();
        Ok(out)
    }

    /// Replace what the engine learned (one transaction). A site without a
    /// name is stored under the empty string.
    pub fn put_calibration(&self, c: &Calibration) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for s in &c.sites {
            let json = serde_json::to_string(&s.scale).map_err(|source| StoreError::Corrupt {
                path: self.name.to_string(),
                what: "an error scale".into(),
                source,
            })?;
            tx.execute(
                "INSERT OR REPLACE INTO error_scales (site, json) VALUES (?1, ?2)",
                params![s.site.as_deref().unwrap_or(""), json],
            )
            .map_err(|e| self.err(e))?;
        }
        for n in &c.nodes {
            let json = serde_json::to_string(&n.term).map_err(|source| StoreError::Corrupt {
                path: self.name.to_string(),
                what: format!("the station term of {}", n.node_id),
                source,
            })?;
            tx.execute(
                "INSERT OR REPLACE INTO station_terms (node_id, json) VALUES (?1, ?2)",
                params![n.node_id, json],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// What an earlier run learned (empty for a new store).
    pub fn calibration(&self) -> Result<Calibration, StoreError> {
        let conn = self.lock();
        fn parse<T: serde::de::DeserializeOwned>(
            name: &str,
            what: String,
            json: &str,
        ) -> Result<T, StoreError> {
            serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
                path: name.to_string(),
                what,
                source,
            })
        }
        let rows = |sql: &str| -> Result<Vec<(String, String)>, StoreError> {
            let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
        };
        let mut c = Calibration::default();
        for (site, json) in rows("SELECT site, json FROM error_scales ORDER BY site")? {
            c.sites.push(SiteCalibration {
                scale: parse(
                    &self.name,
                    format!("the error scale of site {site:?}"),
                    &json,
                )?,
                site: (!site.is_empty()).then_some(site),
            });
        }
        for (node_id, json) in rows("SELECT node_id, json FROM station_terms ORDER BY node_id")? {
            c.nodes.push(NodeCalibration {
                term: parse(&self.name, format!("the station term of {node_id}"), &json)?,
                node_id,
            });
        }
        Ok(c)
    }

    /// Keep at most `bytes` of snippets (every clone of this store).
    pub fn set_snippet_budget(&self, bytes: u64) {
        self.snippet_budget.store(bytes, Ordering::Relaxed);
    }

    /// Store a snippet (replacing one with the same node and seq), then
    /// delete the oldest (by `start_utc`) until the snippets fit the budget.
    pub fn put_snippet(&self, s: &blastnet_contract::Snippet) -> Result<(), StoreError> {
        let json = serde_json::to_string(s).map_err(|source| StoreError::Corrupt {
            path: self.name.to_string(),
            what: format!("snippet {}/{}", s.node_id, s.seq),
            source,
        })?;
        let budget = i64::try_from(self.snippet_budget.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT OR REPLACE INTO snippets (node_id, seq, start_ns, bytes, json)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                s.node_id,
                s.seq as i64,
                s.start_utc.0,
                json.len() as i64,
                json
            ],
        )
        .map_err(|e| self.err(e))?;
        let total: i64 = tx
            .query_row("SELECT COALESCE(SUM(bytes), 0) FROM snippets", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        if total > budget {
            // Oldest first: each row whose elders sum to less than the
            // excess goes (the window sum is the total up to and with it).
            tx.execute(
                "DELETE FROM snippets WHERE rowid IN (
                    SELECT rowid FROM (
                        SELECT rowid, bytes,
                               SUM(bytes) OVER (ORDER BY start_ns, node_id, seq) AS upto
                        FROM snippets
                    ) WHERE upto - bytes < ?1
                )",
                params![total - budget],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The snippet of detection `seq` of `node_id`, if kept.
    pub fn snippet(
        &self,
        node_id: &str,
        seq: u64,
    ) -> Result<Option<blastnet_contract::Snippet>, StoreError> {
        let conn = self.lock();
        let json: Option<String> = conn
            .query_row(
                "SELECT json FROM snippets WHERE node_id = ?1 AND seq = ?2",
                params![node_id, seq as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|source| StoreError::Corrupt {
                path: self.name.to_string(),
                what: format!("snippet {node_id}/{seq}"),
                source,
            })
        })
        .transpose()
    }

    /// Snippets kept and their bytes of JSON.
    pub fn snippet_usage(&self) -> Result<(u64, u64), StoreError> {
        self.lock()
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM snippets",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// One event with its revisions and detections; `None` if unknown.
    pub fn event(&self, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
        let conn = self.lock();
        let latest: Option<String> = conn
            .query_row(
                "SELECT json FROM events WHERE event_id = ?1",
                params![event_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(latest) = latest else {
            return Ok(None);
        };
        let event = self.parse_event(&format!("event {event_id}"), &latest)?;
        let mut revisions = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, json FROM event_revisions WHERE event_id = ?1 ORDER BY revision",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![event_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (rev, json) = row.map_err(|e| self.err(e))?;
                revisions
                    .push(self.parse_event(&format!("event {event_id} revision {rev}"), &json)?);
            }
        }
        if revisions.is_empty() {
            revisions.push(event.clone());
        }
        let mut detections = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT d.node_id, d.seq, d.json FROM event_detections l
                     JOIN detections d ON d.node_id = l.node_id AND d.seq = l.seq
                     WHERE l.event_id = ?1 ORDER BY d.onset_ns",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![event_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (node, seq, json) = row.map_err(|e| self.err(e))?;
                detections.push(serde_json::from_str(&json).map_err(|source| {
                    StoreError::Corrupt {
                        path: self.name.to_string(),
                        what: format!("detection {node}/{seq}"),
                        source,
                    }
                })?);
            }
        }
        Ok(Some(EventRecord {
            event,
            revisions,
            detections,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blastnet_aggregator_core::{ErrorScale, StationTerm};

    /// What the engine learned comes back as it was stored, and a later
    /// write of one node's term replaces that node's only.
    #[test]
    fn calibration_round_trips_and_updates_per_node() {
        let store = Store::open(&StorePath::Memory, KeepRevisions::Latest).unwrap();
        assert_eq!(store.calibration().unwrap(), Calibration::default());
        let mut scale = ErrorScale::new(0.010);
        scale.learn(0.004);
        let mut term = StationTerm::default();
        term.learn(40.0, -80.0, 0.020);
        let c = Calibration {
            sites: vec![
                SiteCalibration {
                    site: None,
                    scale: ErrorScale::new(0.010),
                },
                SiteCalibration {
                    site: Some("north".into()),
                    scale,
                },
            ],
            nodes: vec![
                NodeCalibration {
                    node_id: "n01".into(),
                    term: term.clone(),
                },
                NodeCalibration {
                    node_id: "n02".into(),
                    term: StationTerm::default(),
                },
            ],
        };
        store.put_calibration(&c).unwrap();
        assert_eq!(store.calibration().unwrap(), c);
        term.learn(40.0, -80.0, 0.021);
        let one = Calibration {
            sites: c.sites.clone(),
            nodes: vec![NodeCalibration {
                node_id: "n02".into(),
                term: term.clone(),
            }],
        };
        store.put_calibration(&one).unwrap();
        let back = store.calibration().unwrap();
        assert_eq!(back.nodes[0], c.nodes[0]);
        assert_eq!(back.nodes[1].term, term);
    }

    /// Snippets are kept by (node, seq) and pruned oldest first (data
    /// time) to the byte budget.
    #[test]
    fn snippets_are_kept_by_node_and_seq_within_the_budget() {
        use blastnet_contract::{Snippet, StreamKind};
        let store = Store::open(&StorePath::Memory, KeepRevisions::Latest).unwrap();
        let snip = |node: &str, seq: u64, t: i64| {
            Snippet::encode(
                node,
                seq,
                StreamKind::Acoustic,
                UtcNs(t * 1_000_000_000),
                8000,
                &vec![0.5; 1000],
            )
        };
        let one = serde_json::to_string(&snip("n01", 1, 0)).unwrap().len() as u64;
        // Room for three and a half.
        store.set_snippet_budget(one * 7 / 2);
        // Stored out of data-time order: n02/9 is the oldest.
        for (node, seq, t) in [
            ("n01", 1, 10),
            ("n02", 9, 5),
            ("n01", 2, 20),
            ("n01", 3, 30),
        ] {
            store.put_snippet(&snip(node, seq, t)).unwrap();
        }
        assert_eq!(store.snippet_usage().unwrap().0, 3);
        assert!(store.snippet("n02", 9).unwrap().is_none(), "oldest pruned");
        let back = store.snippet("n01", 2).unwrap().unwrap();
        let want = snip("n01", 2, 20);
        assert!(back.data == want.data && back.start_utc == want.start_utc);
        // The same (node, seq) again replaces it.
        store.put_snippet(&snip("n01", 2, 20)).unwrap();
        assert_eq!(store.snippet_usage().unwrap().0, 3);
        store.put_snippet(&snip("n01", 4, 40)).unwrap();
        assert!(store.snippet("n01", 1).unwrap().is_none());
        assert!(store.snippet("n01", 4).unwrap().is_some());
        assert!(store.snippet_usage().unwrap().1 <= one * 7 / 2);
        store.set_snippet_budget(0);
        store.put_snippet(&snip("n01", 5, 50)).unwrap();
        assert_eq!(
            store.snippet_usage().unwrap(),
            (0, 0),
            "budget 0 keeps none"
        );
    }
}
