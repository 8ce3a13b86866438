//! The hub's log as this node sees it: the newest checkpoint it verified and the history the
//! audit checks, the log alarm with its evidence, checkpoints other members passed on, and which
//! envelopes are proven to be in the log.

use sqlx::Row;

use super::{LogNote, NodeStore, StoreError, Tx};

/// How many verified checkpoints a node keeps for audits (about 1.5 MB).
pub const CHECKPOINT_HISTORY: i64 = 10_000;

/// The newest checkpoint a node verified.
#[derive(Debug, Clone)]
pub struct LogState {
    pub size: u64,
    pub root: [u8; 32],
    pub note: Vec<u8>,
    pub alarm: Option<String>,
}

/// An envelope whose place in the log is still to be proven: the leaf it should be, and the
/// index the hub's receipt promised.
#[derive(Debug, Clone)]
pub struct Unproven {
    pub envelope_id: Vec<u8>,
    pub log_index: u64,
    pub entry: overstap_proto::log::LogEntry,
}

/// Which envelopes' log leaves to list.
enum Which<'a> {
    One(&'a [u8]),
    Unproven,
    All,
}

/// Proofs recorded in one statement (4 parameters each).
const PROOFS_PER_INSERT: usize = 250;

impl NodeStore {
    pub async fn log_state(&self) -> Result<Option<LogState>, StoreError> {
        Ok(
            sqlx::query("SELECT size, root, note, alarm FROM log_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| LogState {
                    size: r.get::<i64, _>(0) as u64,
                    root: r.get::<Vec<u8>, _>(1).try_into().unwrap_or([0; 32]),
                    note: r.get(2),
                    alarm: r.get(3),
                }),
        )
    }

    /// Saves the newest verified checkpoint and adds it to the history the audit checks,
    /// keeping the newest [`CHECKPOINT_HISTORY`] of them.
    pub async fn save_log_state(
        &self,
        size: u64,
        root: [u8; 32],
        note: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(self.begin).await?;
        sqlx::query(
            "INSERT INTO log_state (id, size, root, note) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note",
        )
        .bind(size as i64)
        .bind(root.as_slice())
        .bind(note)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO log_checkpoints (size, root, note, verified_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(size as i64)
        .bind(root.as_slice())
        .bind(note)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM log_checkpoints WHERE size < (SELECT size FROM log_checkpoints ORDER BY size DESC LIMIT 1 OFFSET $1)",
        )
        .bind(CHECKPOINT_HISTORY - 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The checkpoints this node verified, oldest first, and the notes kept as evidence.
    pub async fn checkpoint_history(&self) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), StoreError> {
        let verified = sqlx::query("SELECT note FROM log_checkpoints ORDER BY size")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut evidence = Vec::new();
        for r in sqlx::query("SELECT held_note, shown_note FROM log_evidence ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            evidence.push(r.get(0));
            evidence.push(r.get(1));
        }
        Ok((verified, evidence))
    }

    /// Raises the alarm and keeps the evidence, in one transaction.
    pub async fn raise_log_alarm(
        &self,
        reason: &str,
        held: &[u8],
        shown: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(self.begin).await?;
        sqlx::query(
            "INSERT INTO log_state (id, size, root, note, alarm) VALUES (1, 0, $2, $2, $1)
             ON CONFLICT (id) DO UPDATE SET alarm = COALESCE(log_state.alarm, excluded.alarm)",
        )
        .bind(reason)
        .bind(&[] as &[u8])
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO log_evidence (reason, held_note, shown_note, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(reason)
        .bind(held)
        .bind(shown)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checkpoints other members sent us that are not compared yet: (id, from, note).
    pub async fn peer_checkpoints(&self) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query("SELECT id, from_org, note FROM peer_checkpoints WHERE checked = 0 ORDER BY id LIMIT 64")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn peer_checkpoint_checked(&self, id: i64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query("UPDATE peer_checkpoints SET checked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records envelopes (`(envelope_id, log_index)`) proven in the log of `tree_size`
    /// entries, in one statement a few hundred: one commit for a round of proofs.
    pub async fn mark_proven(
        &self,
        proven: &[(Vec<u8>, u64)],
        tree_size: u64,
        at: i64,
    ) -> Result<(), StoreError> {
        if proven.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(self.begin).await?;
        for chunk in proven.chunks(PROOFS_PER_INSERT) {
            let values = super::outbox::value_rows(1, chunk.len(), 4);
            let sql = format!(
                "INSERT INTO log_proofs (envelope_id, log_index, tree_size, proven_at) VALUES {} ON CONFLICT DO NOTHING",
                values
            );
            let sql = super::for_db(&tx, sql);
            let mut query = sqlx::query(&sql);
            for (envelope_id, log_index) in chunk {
                query = query
                    .bind(envelope_id)
                    .bind(*log_index as i64)
                    .bind(tree_size as i64)
                    .bind(at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn is_proven(&self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM log_proofs WHERE envelope_id = $1")
                .bind(envelope_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// (proven, unproven) envelopes with a hub receipt.
    pub async fn proof_counts(&self) -> Result<(u64, u64), StoreError> {
        let proven: i64 = sqlx::query("SELECT COUNT(*) FROM log_proofs")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let with_receipt: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE receipt IS NOT NULL)
                  + (SELECT COUNT(*) FROM processed WHERE receipt IS NOT NULL AND body_sha256 IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok((proven as u64, (with_receipt - proven).max(0) as u64))
    }

    /// Sent and received envelopes with a receipt but no inclusion proof yet.
    pub async fn unproven(&self, me: &str, limit: u32) -> Result<Vec<Unproven>, StoreError> {
        self.log_items(me, Which::Unproven, limit).await
    }

    /// The log leaf of one envelope this node sent or received (proven or not).
    pub async fn log_item(
        &self,
        me: &str,
        envelope_id: &[u8],
    ) -> Result<Option<Unproven>, StoreError> {
        Ok(self
            .log_items(me, Which::One(envelope_id), 1)
            .await?
            .into_iter()
            .next())
    }

    /// Every envelope this node sent or received with a hub receipt, proven or not: its own
    /// record of what the log should hold, for the audit.
    pub async fn own_log_entries(&self, me: &str) -> Result<Vec<Unproven>, StoreError> {
        self.log_items(me, Which::All, u32::MAX).await
    }

    async fn log_items(
        &self,
        me: &str,
        which: Which<'_>,
        limit: u32,
    ) -> Result<Vec<Unproven>, StoreError> {
        use overstap_proto::pb::{Envelope, EnvelopeHeader, Receipt, Signed};
        use overstap_proto::sign::{Domain, decode_body};
        use prost::Message;
        let mut out = Vec::new();
        // $1 is the limit; $2 the one envelope's id, if one was asked for.
        let (filter, only) = match which {
            Which::One(id) => ("envelope_id = $2", Some(id)),
            Which::Unproven => (
                "envelope_id NOT IN (SELECT envelope_id FROM log_proofs)",
                None,
            ),
            Which::All => ("1 = 1", None),
        };
        let sent_sql = format!(
            "SELECT envelope, receipt FROM outbox WHERE receipt IS NOT NULL AND {filter} ORDER BY seq LIMIT $1"
        );
        let mut sent = sqlx::query(&sent_sql).bind(limit as i64);
        if let Some(id) = only {
            sent = sent.bind(id);
        }
        let sent = sent.fetch_all(&self.pool).await?;
        for r in sent {
            let (Ok(env), Ok(receipt)) = (
                Envelope::decode(r.get::<Vec<u8>, _>(0).as_slice()),
                Signed::decode(r.get::<Vec<u8>, _>(1).as_slice()),
            ) else {
                continue;
            };
            let (Some(Ok(h)), Ok(rc)) = (
                env.header
                    .as_ref()
                    .map(|h| decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, h)),
                decode_body::<Receipt>(Domain::Receipt, &receipt),
            ) else {
                continue;
            };
            out.push(Unproven {
                envelope_id: h.envelope_id.clone(),
                log_index: rc.log_index,
                entry: overstap_proto::log::LogEntry {
                    event: "send".into(),
                    envelope_kind: h.kind,
                    from_org: h.from_org,
                    to_org: h.to_org,
                    envelope_id: h.envelope_id,
                    body_sha256: h.body_sha256,
                    at: rc.received_at,
                },
            });
        }
        let received_sql = format!(
            "SELECT envelope_id, from_org, kind, body_sha256, receipt FROM processed
             WHERE receipt IS NOT NULL AND body_sha256 IS NOT NULL AND {filter} ORDER BY processed_at LIMIT $1"
        );
        let mut received = sqlx::query(&received_sql).bind(limit as i64);
        if let Some(id) = only {
            received = received.bind(id);
        }
        let received = received.fetch_all(&self.pool).await?;
        for r in received {
            let Ok(receipt) = Signed::decode(r.get::<Vec<u8>, _>(4).as_slice()) else {
                continue;
            };
            let Ok(rc) = decode_body::<Receipt>(Domain::Receipt, &receipt) else {
                continue;
            };
            let envelope_id: Vec<u8> = r.get(0);
            out.push(Unproven {
                envelope_id: envelope_id.clone(),
                log_index: rc.log_index,
                entry: overstap_proto::log::LogEntry {
                    event: "send".into(),
                    envelope_kind: r.get(2),
                    from_org: r.get(1),
                    to_org: me.to_string(),
                    envelope_id,
                    body_sha256: r.get(3),
                    at: rc.received_at,
                },
            });
        }
        Ok(out)
    }
}

impl Tx {
    /// The log state, read inside this transaction.
    /// The newest checkpoint note and the alarm, read once per transaction (every envelope
    /// sealed in it carries the note).
    pub async fn log_note(&mut self) -> Result<LogNote, StoreError> {
        if let Some(note) = &self.2 {
            return Ok(note.clone());
        }
        let note: LogNote = sqlx::query("SELECT note, alarm FROM log_state WHERE id = 1")
            .fetch_optional(&mut *self.0)
            .await?
            .map(|r| (r.get(0), r.get(1)));
        self.2 = Some(note.clone());
        Ok(note)
    }

    /// Keeps a checkpoint another member sent, to compare with ours (only a changed one).
    pub async fn add_peer_checkpoint(
        &mut self,
        from_org: &str,
        note: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO peer_checkpoints (from_org, note, at)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM peer_checkpoints WHERE from_org = $4 AND note = $5)",
        )
        .bind(from_org)
        .bind(note)
        .bind(at)
        .bind(from_org)
        .bind(note)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}
