//! Start-up recovery: make the database and the spool agree again after whatever
//! ended the last run (clean shutdown, SIGKILL or power loss).

use std::collections::HashSet;

use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::OutboxError;
use crate::spool::{self, Spool};

/// What recovery found, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Pending items carried over from the last run (they resume).
    pub pending: i64,
    /// Rows whose fsync had not been confirmed and whose file proved intact.
    pub verified: usize,
    /// Rows dropped because their file was incomplete: never acknowledged to the
    /// sender (the answer waits for the fsync), so the sender still has them.
    pub dropped: Vec<String>,
    /// Unreferenced spool files removed (pre-created blanks, delivered leftovers,
    /// partial receptions).
    pub swept: usize,
}

pub(super) async fn recover(
    conn: &mut SqliteConnection,
    spool: &Spool,
) -> Result<RecoveryReport, OutboxError> {
    let mut report = RecoveryReport::default();

    // No association survives a restart.
    sqlx::query("UPDATE studies SET open_associations = 0")
        .execute(&mut *conn)
        .await?;

    let unsynced = sqlx::query(
        "SELECT id, sop_instance_uid, path, size, dataset_offset, sha256 FROM items
         WHERE state = 'pending' AND file_synced = 0",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in unsynced {
        let id: i64 = row.try_get("id")?;
        let sop: String = row.try_get("sop_instance_uid")?;
        let rel: String = row.try_get("path")?;
        let size: i64 = row.try_get("size")?;
        let offset: i64 = row.try_get("dataset_offset")?;
        let sha: String = row.try_get("sha256")?;
        let path = spool.absolute(&rel);
        let intact = tokio::task::spawn_blocking(move || {
            spool::verify_file(&path, size.max(0) as u64, offset.max(0) as u64, &sha)
        })
        .await
        .map_err(std::io::Error::other)??;
        if intact {
            sqlx::query("UPDATE items SET file_synced = 1 WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            report.verified += 1;
        } else {
            tracing::warn!(
                sop_instance_uid = %sop,
                "spool file incomplete after a crash; the C-STORE was never acknowledged, \
                 dropping the record (the sender will resend)"
            );
            sqlx::query("DELETE FROM items WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            report.dropped.push(sop);
        }
    }

    // Sweep spool files no pending item refers to.
    let referenced: HashSet<String> = sqlx::query("SELECT path FROM items WHERE state = 'pending'")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    for rel in spool.list_spool_files()? {
        if !referenced.contains(&rel) {
            std::fs::remove_file(spool.absolute(&rel))?;
            report.swept += 1;
        }
    }

    report.pending = sqlx::query("SELECT COUNT(*) FROM items WHERE state = 'pending'")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    Ok(report)
}
