//! Group commit on SQLite. With `synchronous=FULL` every commit waits for the disk (about
//! 1.6 ms on the benchmark machine), so one transaction per write caps the control plane at a
//! few hundred writes a second whatever the CPU. One writer thread takes every write waiting
//! (at most [`MAX_BATCH`]) and runs them in one transaction, each inside its own savepoint with
//! the same statements it would run alone: writes still apply one after the other in arrival
//! order, and a write that fails rolls back only its own changes (unless it asks to keep them,
//! as a heartbeat's refusal count is kept). Each caller is answered after the commit, so a
//! write is on disk when it is acknowledged; a failed commit fails every write of the batch.
//!
//! The technique is the classic group commit (Gawlick and Kinkade, "Varieties of concurrency
//! control in IMS/VS Fast Path", 1985; PostgreSQL's `commit_delay`), without a delay: a batch is
//! whatever queued while the previous one committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{ControlError, Result};
use crate::store::db;

/// Most writes in one transaction (bounds the wait of the last one in a batch).
pub(super) const MAX_BATCH: usize = 512;

/// One queued write: runs inside its savepoint, says whether to keep its changes, and returns
/// the continuation that answers its caller once the batch's commit is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Box<dyn FnOnce(std::result::Result<(), String>) + Send>) + Send>;

/// The queue to the writer thread; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct GroupWriter {
    queue: mpsc::Sender<Job>,
    /// Batches committed (or failed) so far (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
}

impl GroupWriter {
    /// Starts the writer thread over the store's connection (shared with the store's other
    /// statements through the mutex).
    ///
    /// # Errors
    /// `Store` when the thread cannot be spawned.
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<GroupWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let batches = Arc::new(AtomicU64::new(0));
        let counted = batches.clone();
        std::thread::Builder::new()
            .name("b3iq-control-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    // A poisoned lock is still usable: a panic cannot leave SQLite inconsistent
                    // (an open transaction rolls back on drop).
                    let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                    // Everything that arrived meanwhile (while the last batch committed, or while
                    // another statement held the connection) joins this one.
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    commit(&mut c, batch);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| ControlError::store("start the store's writer", e))?;
        Ok(GroupWriter { queue: tx, batches })
    }

    /// Runs `f` in the next batch and waits for its result, which is returned only after the
    /// batch committed. `f`'s changes are kept when it returns `Ok`, or when `keep` says so
    /// for its error; otherwise they are rolled back (and only they).
    ///
    /// # Errors
    /// `f`'s own error; `Store` when the batch's transaction could not begin or commit, or the
    /// writer stopped.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        keep: fn(&ControlError) -> bool,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let gone = || ControlError::Store("the store's writer dropped this write (its batch could not start a savepoint, or the writer stopped)".into());
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |c: &Connection| {
            let r = f(c);
            let kept = match &r {
                Ok(_) => true,
                Err(e) => keep(e),
            };
            let answer = Box::new(move |commit: std::result::Result<(), String>| {
                let _ = tx.send(match commit {
                    Ok(()) => r,
                    Err(m) => Err(ControlError::Store(m)),
                });
            }) as Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
            (kept, answer)
        });
        self.queue.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
impl GroupWriter {
    /// Transactions run so far (each holds one or more writes).
    pub(super) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Never keeps the changes of a failed write.
pub(super) fn keep_none(_: &ControlError) -> bool {
    false
}

fn commit(c: &mut Connection, batch: Vec<Job>) {
    let mut answers = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<()> {
        let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("begin a write batch"))?;
        for job in batch {
            let sp = tx.savepoint().map_err(db("savepoint"))?;
            let (kept, answer) = job(&sp);
            answers.push(answer);
            if kept {
                sp.commit().map_err(db("release savepoint"))?;
            }
            // Dropping the savepoint otherwise rolls back whatever this write changed.
        }
        tx.commit().map_err(db("commit a write batch"))
    })();
    let outcome = outcome.map_err(|e| e.to_string());
    for answer in answers {
        answer(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(c: &Connection) -> Vec<i64> {
        let mut st = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn insert_then(v: i64, fail: bool) -> impl FnOnce(&Connection) -> Result<i64> + Send + 'static {
        move |c| {
            c.execute("INSERT INTO t(v) VALUES (?1)", [v]).map_err(db("insert"))?;
            if fail {
                return Err(ControlError::Invalid { field: "v", reason: format!("{v} fails after its insert") });
            }
            Ok(v)
        }
    }

    /// Writes queued while the connection is busy run as one batch, in order; a failing write
    /// loses only its own changes (or keeps them when asked), and every caller gets its own
    /// result after the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_isolates_each_write() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("w.db")).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t(v INTEGER PRIMARY KEY)").unwrap();
        let conn = Arc::new(Mutex::new(c));
        let w = GroupWriter::start(conn.clone()).unwrap();

        let guard = conn.lock().unwrap();
        let mut calls = Vec::new();
        for (v, fail, keep) in [(1, false, false), (2, true, false), (3, false, false), (4, true, true), (1, false, false)] {
            let w = w.clone();
            let keep: fn(&ControlError) -> bool = if keep { |_| true } else { keep_none };
            calls.push(tokio::spawn(async move { w.write(keep, insert_then(v, fail)).await }));
            // Queue them in this order.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Nothing is answered while the connection is held (no commit yet).
        assert!(calls.iter().all(|c| !c.is_finished()));
        let batches_before = w.batches();
        drop(guard);
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap().map_err(|e| e.to_string()));
        }
        assert_eq!(out[0], Ok(1));
        assert!(out[1].as_ref().unwrap_err().contains("2 fails"), "{:?}", out[1]);
        assert_eq!(out[2], Ok(3));
        assert!(out[3].as_ref().unwrap_err().contains("4 fails"));
        // The fifth repeats 1: its primary-key violation is its own error, the batch commits.
        assert!(out[4].as_ref().unwrap_err().contains("UNIQUE"), "{:?}", out[4]);
        let c = conn.lock().unwrap();
        assert_eq!(rows(&c), vec![1, 3, 4], "2 rolled back alone; 4 kept by its `keep`");
        // All five ran in one transaction, committed after the guard was dropped.
        assert_eq!(w.batches() - batches_before, 1);
    }
}
