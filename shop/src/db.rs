//! The service's SQLite file: one connection behind a mutex, used from blocking threads.
//!
//! One connection serialises all statements, which is plenty for a demo shop and makes
//! check-then-insert sequences (idempotency keys) race-free without retry loops. WAL with
//! `synchronous=FULL` means a transaction that returned from `COMMIT` survives `kill -9` and a
//! power cut; the service answers only after that.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, Row, ToSql};

use crate::http::Paging;

/// A shared handle to the database.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the file, sets the durability pragmas and applies `schema`
    /// (idempotent `CREATE ... IF NOT EXISTS` statements, in order).
    pub fn open(path: &Path, schema: &[&str]) -> anyhow::Result<Db> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("database {} refused WAL mode ({mode})", path.display());
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        for part in schema {
            conn.execute_batch(part)
                .with_context(|| format!("cannot create the schema in {}", path.display()))?;
        }
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_owned()),
        })
    }

    /// Runs `f` with the connection on a blocking thread. `E` is the caller's error type, so
    /// domain errors (not found, conflict) come out of a transaction as they are.
    pub async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let joined = tokio::task::spawn_blocking(move || {
            // A poisoned lock only means an earlier closure panicked mid-way; SQLite rolled its
            // transaction back when the statement handles dropped, so the connection is usable.
            let mut guard = match conn.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            f(&mut guard)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(E::from(anyhow::anyhow!("database task failed: {e}"))),
        }
    }

    /// Runs `f` on the current thread: only for blocking contexts (start-up, `call`).
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// `SELECT 1`: the readiness probe.
    pub async fn ping(&self) -> bool {
        self.call(|conn| -> anyhow::Result<()> {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
        .is_ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One page of a listing, and how many rows all its pages hold. `count_sql` counts the rows
/// that `select_sql` (ending in its `ORDER BY`) lists; both take the filter's parameters
/// `filter` as `?1`, `?2`, …. `LIMIT` and `OFFSET` are appended to `select_sql` as the next two
/// parameters.
pub fn page<T>(
    conn: &Connection,
    count_sql: &str,
    select_sql: &str,
    filter: &[&dyn ToSql],
    paging: Paging,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<(Vec<T>, i64)> {
    let total: i64 = conn.query_row(count_sql, filter, |r| r.get(0))?;
    let n = filter.len();
    let mut stmt = conn.prepare(&format!("{select_sql} LIMIT ?{} OFFSET ?{}", n + 1, n + 2))?;
    let offset = paging.offset();
    let mut values = filter.to_vec();
    values.push(&paging.size);
    values.push(&offset);
    let items = stmt
        .query_map(values.as_slice(), row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((items, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_with_wal_and_runs_calls() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            &dir.path().join("t.db"),
            &["CREATE TABLE IF NOT EXISTS t (x INTEGER NOT NULL);"],
        )
        .unwrap();
        assert!(db.ping().await);
        let n = db
            .call(|c| -> anyhow::Result<i64> {
                c.execute("INSERT INTO t (x) VALUES (41)", [])?;
                Ok(c.query_row("SELECT x + 1 FROM t", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(n, 42);
        let (mode, sync, fk): (String, i64, i64) = db
            .call(|c| -> anyhow::Result<_> {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                    c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    }

    #[test]
    fn pages_count_all_rows_and_list_one_page() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (x INTEGER NOT NULL, owner TEXT NOT NULL);
             INSERT INTO t VALUES (1, 'a'), (2, 'a'), (3, 'a'), (4, 'b');",
        )
        .unwrap();
        let x = |r: &Row<'_>| r.get::<_, i64>(0);
        let (items, total) = page(
            &conn,
            "SELECT COUNT(*) FROM t WHERE owner = ?1",
            "SELECT x FROM t WHERE owner = ?1 ORDER BY x DESC",
            rusqlite::params!["a"],
            Paging { page: 1, size: 2 },
            x,
        )
        .unwrap();
        assert_eq!((items, total), (vec![1], 3));
        let (items, total) = page(
            &conn,
            "SELECT COUNT(*) FROM t",
            "SELECT x FROM t ORDER BY x",
            rusqlite::params![],
            Paging { page: 0, size: 3 },
            x,
        )
        .unwrap();
        assert_eq!((items, total), (vec![1, 2, 3], 4));
    }
}
