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
/// in-memory database exists per connection, so it gets exactly one. `writer` is the lock its
/// store's writers take in turn: the WAL is checkpointed beside them while that lock lives
/// ([`checkpoint_in_background`]).
pub async fn open(url: &str, connections: u32, writer: &Writer) -> Result<SqlitePool, sqlx::Error> {
    let pool = connect(url, connections).await?;
    checkpoint_in_background(url, writer)?;
    Ok(pool)
}

async fn connect(url: &str, connections: u32) -> Result<SqlitePool, sqlx::Error> {
    let options = settings(url)?;

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

/// The lock a store's writers take in turn, in this process.
pub type Writer = std::sync::Arc<tokio::sync::Mutex<()>>;

fn settings(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: nothing is acknowledged (a receipt, an ack) before its commit is on disk.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // No commit checkpoints the WAL itself: [`checkpoint_in_background`] does.
        .pragma("wal_autocheckpoint", "0"))
}

/// How often the checkpointer looks at the WAL (times [`stretch_checkpoints`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// How many times longer [`CHECKPOINT_EVERY`] is for checkpointers started after
/// [`stretch_checkpoints`]; 1 but under valgrind.
static CHECKPOINT_SCALE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Stretches the interval of every checkpointer started after this call `times` over, for a
/// program run under valgrind (some fifty times slower), so that it checkpoints as often per
/// commit as at full speed and an instruction count is that of the work
/// (`overstap bench handover --callgrind`).
pub fn stretch_checkpoints(times: u32) {
    CHECKPOINT_SCALE.store(times.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// WAL frames (pages) past which the checkpointer holds the writers back for a moment to copy
/// the last of them, so that the next writer starts the WAL from its beginning again: 1,000
/// pages, SQLite's own threshold for a checkpoint (4 MiB at 4 KiB a page).
const WAL_RESET_FRAMES: i64 = 1_000;

/// Copies the WAL into the database file beside the writers, every [`CHECKPOINT_EVERY`], on a
/// connection of its own, for as long as `writer` lives.
///
/// Left to SQLite, the commit that takes the WAL past 1,000 pages copies them all before it
/// returns, so one commit in every few waited for a whole checkpoint: 230 to 300 ms in every
/// fourth commit of 100 KiB envelopes at the hub. Here a passive checkpoint, which waits for
/// no reader or writer, copies the frames while the writers go on. It cannot finish while
/// commits keep adding frames, and the WAL starts from its beginning only when one has, so
/// once the WAL passes [`WAL_RESET_FRAMES`] the checkpointer takes the writers' turn and copies
/// what is left, which is little, since the passive rounds copied the rest. Nothing here
/// touches what a commit promises: each commit's WAL frames are on disk (`synchronous = FULL`)
/// before it returns, and a checkpoint only copies committed frames.
pub fn checkpoint_in_background(url: &str, writer: &Writer) -> Result<(), sqlx::Error> {
    if url.contains(":memory:") {
        return Ok(());
    }
    // Never a new, empty database where the file has gone.
    let options = settings(url)?.create_if_missing(false);
    let writer = std::sync::Arc::downgrade(writer);
    let every = CHECKPOINT_EVERY * CHECKPOINT_SCALE.load(std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        use sqlx::ConnectOptions;
        let mut conn = None;
        loop {
            tokio::time::sleep(every).await;
            let Some(writer) = writer.upgrade() else {
                break;
            };
            if conn.is_none() {
                match options.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "the WAL checkpointer could not connect");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            match checkpoint(c).await {
                // Copied or not, a commit may have come after: only with the writers held back
                // does the next one find every frame copied and start the WAL again.
                Ok((log, _)) if log > WAL_RESET_FRAMES => {
                    let _turn = writer.lock().await;
                    if let Err(e) = checkpoint(c).await {
                        tracing::warn!(error = %e, "the WAL checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the WAL checkpoint failed");
                    conn = None;
                }
            }
        }
        if let Some(c) = conn {
            let _ = c.close().await;
        }
    });
    Ok(())
}

/// One passive checkpoint: the frames in the WAL and how many of them are now copied.
async fn checkpoint(conn: &mut sqlx::SqliteConnection) -> Result<(i64, i64), sqlx::Error> {
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok((log, copied))
}

/// What [`open`] sets, as statements for a connection of the `Any` driver.
static ANY_SETTINGS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {}; PRAGMA wal_autocheckpoint = 0;",
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
pub async fn open_any(
    url: &str,
    connections: u32,
    writer: &Writer,
) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let memory = url.contains(":memory:");
    if !memory {
        connect(url, 1).await?.close().await;
        checkpoint_in_background(url, writer)?;
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

    /// No commit checkpoints the WAL itself, and still the WAL stays short while writers keep
    /// committing: the checkpointer copies it beside them and lets it start again. Without the
    /// checkpointer the WAL of this test grows past 24 MiB; with SQLite's own checkpoints every
    /// few hundred commits would copy 4 MiB before returning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_beside_the_writers_and_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = format!("sqlite://{}", path.display());
        let writer = Writer::default();
        let pool = open(&url, 2, &writer).await.unwrap();
        let by_commits: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(by_commits, 0, "commits would checkpoint the WAL themselves");
        sqlx::query("CREATE TABLE t (n INTEGER, b BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        let blob = vec![7u8; 16 << 10];
        let mut longest = 0;
        for n in 0..1_500i64 {
            let _turn = writer.lock().await;
            sqlx::query("INSERT INTO t (n, b) VALUES (?, ?)")
                .bind(n)
                .bind(&blob)
                .execute(&pool)
                .await
                .unwrap();
            let wal = std::fs::metadata(dir.path().join("t.db-wal")).map_or(0, |m| m.len());
            longest = longest.max(wal);
        }
        assert!(
            longest < 12 << 20,
            "the WAL grew to {longest} bytes while 24 MiB were written"
        );
        // What was committed is all there, read back through the database.
        let (rows, bytes): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(LENGTH(b)) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((rows, bytes), (1_500, 1_500 * (16 << 10)));
    }

    /// Cancels `BEGIN IMMEDIATE` at every point of its await, hundreds of times, then checks that
    /// no connection of the pool is left inside a transaction and a writer still gets the lock.
    /// Without the release check this leaks a connection that holds the write lock (seen in CI:
    /// a hub that answered "database is locked" to everything after a node was killed mid-ack).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_begin_leaves_no_connection_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let writer = Writer::default();
        let pool = open(&url, 4, &writer).await.unwrap();
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
