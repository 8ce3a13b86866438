//! The one way hub and node open a SQLite pool: WAL, `synchronous = FULL`, foreign keys, a busy
//! timeout, and a check on every connection handed back to the pool.
//!
//! The check exists because of a cancellation hole in sqlx 0.8's SQLite driver: when the future
//! of `begin_with("BEGIN IMMEDIATE")` is dropped after the worker ran the `BEGIN` but before the
//! driver checked it took effect, no `Transaction` exists to roll it back. The connection goes
//! back to the pool still inside a transaction that holds the write lock. Every other
//! connection then fails with "database is locked", and the leaked one with "attempted to call
//! begin_with at non-zero transaction depth", until the process restarts. A gRPC handler is
//! dropped exactly like that when its client goes away mid-call (a node killed during an `Ack`)
//! or its deadline passes. So on release we round-trip the connection (which lets a queued
//! rollback from a dropped `Transaction` run first) and close it if it is still inside a
//! transaction: closing a SQLite connection rolls back what it held and frees the lock.
//!
//! The node compiles this same file (`#[path]` in `node/src/lib.rs`); its store runs on sqlx's
//! `Any` driver (one set of SQL for SQLite and PostgreSQL), so it opens SQLite with
//! [`open_any`], which makes the same settings and the same check.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AnyPool, Connection, SqlitePool};

/// Whether a database URL names PostgreSQL (`postgres://` or `postgresql://`); anything else is
/// taken as SQLite.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// How long a writer waits for the write lock before "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating if needed) the database at `url` with at most `connections` connections; an
/// in-memory database exists per connection, so it gets exactly one.
pub async fn open(url: &str, connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: nothing is acknowledged (a receipt, an ack) before its commit is on disk.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let connections = if url.contains(":memory:") {
        1
    } else {
        connections
    };
    SqlitePoolOptions::new()
        .max_connections(connections)
        .after_release(|conn, _meta| Box::pin(still_usable(conn)))
        .connect_with(options)
        .await
}

/// What [`open`] sets, as statements for a connection of the `Any` driver.
static ANY_SETTINGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {};",
        BUSY_TIMEOUT.as_millis()
    )
});

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// [`open`] for sqlx's `Any` driver: the file is created and switched to WAL (which lasts) by a
/// pool of one connection first; every connection of the `Any` pool then sets the per-connection
/// settings itself, and gets the same check when it is handed back.
#[allow(dead_code)] // the node's; the hub's stores are typed
pub async fn open_any(url: &str, connections: u32) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let memory = url.contains(":memory:");
    if !memory {
        open(url, 1).await?.close().await;
    }
    let mut pool = AnyPoolOptions::new().max_connections(if memory { 1 } else { connections });
    if memory {
        // An in-memory database lives as long as its one connection.
        pool = pool.idle_timeout(None).max_lifetime(None);
    }
    pool.after_connect(|conn, _meta| {
        // The future of `execute` is boxed already: built out here, it keeps the compiler from
        // having to prove an `async` block over `&mut AnyConnection` is `Send` for every
        // lifetime, which it cannot.
        let settings = sqlx::Executor::execute(conn, ANY_SETTINGS.as_str());
        Box::pin(async move { settings.await.map(|_| ()) })
    })
    .after_release(|conn, _meta| Box::pin(still_usable(conn)))
    .connect(url)
    .await
}

/// Whether a connection handed back to the pool may be used again: not if it is still inside a
/// transaction (see the module's text).
pub async fn still_usable<C: Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!(
            "a database connection came back inside a transaction (its call was cancelled while \
             the transaction began); closing it to release the lock"
        );
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Cancels `BEGIN IMMEDIATE` at every point of its await, hundreds of times, then checks that
    /// no connection of the pool is left inside a transaction and a writer still gets the lock.
    /// Without the release check this leaks a connection that holds the write lock (seen in CI:
    /// a hub that answered "database is locked" to everything after a node was killed mid-ack).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_begin_leaves_no_connection_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let pool = open(&url, 4).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        let mut cancelled = 0;
        for i in 0..3_000u64 {
            // Polled, then left alone for 0 to 300 µs while the driver's thread works, a few
            // times over, then dropped: from before the command is sent to after the driver's
            // own check that the transaction began.
            let spin = std::time::Duration::from_micros(i % 300);
            let mut begin = std::pin::pin!(pool.begin_with("BEGIN IMMEDIATE"));
            let mut done = false;
            for _ in 0..(1 + i % 4) {
                let polled =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(begin.as_mut().poll(cx)))
                        .await;
                if let std::task::Poll::Ready(tx) = polled {
                    drop(
                        tx.expect("a connection the pool handed out was already in a transaction"),
                    );
                    done = true;
                    break;
                }
                let start = std::time::Instant::now();
                while start.elapsed() < spin {
                    std::hint::spin_loop();
                }
            }
            if !done {
                cancelled += 1;
            }
        }
        assert!(
            cancelled > 0,
            "no begin was cancelled; the test tested nothing"
        );
        // Let the pool's release checks finish.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut conn = tokio::time::timeout(std::time::Duration::from_secs(5), pool.acquire())
                .await
                .expect("the pool should hand out all of its connections")
                .unwrap();
            conn.ping().await.unwrap();
            assert!(
                !conn.is_in_transaction(),
                "a connection came back from the pool inside a transaction"
            );
            held.push(conn);
        }
        drop(held);
        let write = async {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("INSERT INTO t (n) VALUES (1)")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), write)
            .await
            .expect("a writer should get the lock at once")
            .unwrap();
    }
}
