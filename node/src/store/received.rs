//! What this node received and keeps (recipient side): the received passports with only their
//! consented sections, what it erased with the receipts it signed, who viewed what, and the
//! status it reports.

use sqlx::{AnyConnection, Row};

use super::{NodeStore, StoreError, Tx, sections_list, sections_text};

/// A received passport: only the consented sections, with the signed evidence.
#[derive(Debug, Clone)]
pub struct Received {
    pub grant_id: String,
    pub pseudonym: String,
    pub from_org: String,
    pub purpose: String,
    pub sections: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub live: bool,
    pub version: u32,
    pub question_set: String,
    pub card: Vec<u8>,
    pub manifest: Vec<u8>,
    pub grant_signed: Vec<u8>,
    pub envelope_id: Vec<u8>,
    pub received_at: i64,
    pub status: String,
    /// (section id, encoded disclosure)
    pub disclosures: Vec<(String, Vec<u8>)>,
}

/// What this node erased, and the receipt it signed for it.
#[derive(Debug, Clone)]
pub struct Erased {
    pub grant_id: String,
    pub from_org: String,
    pub reason: String,
    pub erased_at: i64,
    pub receipt: Vec<u8>,
}

/// Received passports in one insert (16 columns each: 960 parameters); their sections go four
/// times as many a statement (3 columns each).
const RECEIVED_PER_INSERT: usize = 60;

const RECEIVED_COLUMNS: &str = "grant_id, pseudonym, from_org, purpose, sections, not_before, not_after, live, version, \
     question_set, card, manifest, grant_signed, envelope_id, received_at, status";

impl NodeStore {
    pub async fn inbox(&self) -> Result<Vec<Received>, StoreError> {
        let ids: Vec<String> =
            sqlx::query("SELECT grant_id FROM received ORDER BY received_at, grant_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(x) = self.received(&id).await? {
                out.push(x);
            }
        }
        Ok(out)
    }

    /// The student cards held for a student, from the packages received from their school.
    pub async fn held_cards(
        &self,
        from_org: &str,
        pseudonym: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        held_cards(&mut *self.pool.acquire().await?, from_org, pseudonym).await
    }

    pub async fn received(&self, grant_id: &str) -> Result<Option<Received>, StoreError> {
        received(&mut *self.pool.acquire().await?, grant_id).await
    }

    /// Received grants whose time is up.
    pub async fn received_expired(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query(
            "SELECT grant_id, from_org FROM received WHERE not_after <= $1 ORDER BY not_after",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    pub async fn erased(&self, grant_id: &str) -> Result<Option<Erased>, StoreError> {
        erased(&mut *self.pool.acquire().await?, grant_id).await
    }

    pub async fn views(&self, grant_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT staff_user, viewed_at FROM access_log WHERE grant_id = $1 ORDER BY id",
        )
        .bind(grant_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    pub async fn inbox_count(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM received")
            .fetch_one(&self.pool)
            .await?
            .get::<i64, _>(0) as u64)
    }
}

async fn held_cards(
    on: &mut AnyConnection,
    from_org: &str,
    pseudonym: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query("SELECT card FROM received WHERE from_org = $1 AND pseudonym = $2")
            .bind(from_org)
            .bind(pseudonym)
            .fetch_all(&mut *on)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect(),
    )
}

async fn received(on: &mut AnyConnection, grant_id: &str) -> Result<Option<Received>, StoreError> {
    let Some(r) = sqlx::query(&format!(
        "SELECT {RECEIVED_COLUMNS} FROM received WHERE grant_id = $1"
    ))
    .bind(grant_id)
    .fetch_optional(&mut *on)
    .await?
    else {
        return Ok(None);
    };
    let disclosures = sqlx::query(
        "SELECT section_id, disclosure FROM received_sections WHERE grant_id = $1 ORDER BY section_id",
    )
    .bind(grant_id)
    .fetch_all(&mut *on)
    .await?
    .into_iter()
    .map(|s| (s.get(0), s.get(1)))
    .collect();
    Ok(Some(Received {
        grant_id: r.get(0),
        pseudonym: r.get(1),
        from_org: r.get(2),
        purpose: r.get(3),
        sections: sections_list(&r.get::<String, _>(4)),
        not_before: r.get(5),
        not_after: r.get(6),
        live: r.get::<i64, _>(7) != 0,
        version: r.get::<i64, _>(8) as u32,
        question_set: r.get(9),
        card: r.get(10),
        manifest: r.get(11),
        grant_signed: r.get(12),
        envelope_id: r.get(13),
        received_at: r.get(14),
        status: r.get(15),
        disclosures,
    }))
}

async fn erased(on: &mut AnyConnection, grant_id: &str) -> Result<Option<Erased>, StoreError> {
    Ok(sqlx::query(
        "SELECT grant_id, from_org, reason, erased_at, receipt FROM erased WHERE grant_id = $1",
    )
    .bind(grant_id)
    .fetch_optional(&mut *on)
    .await?
    .map(|r| Erased {
        grant_id: r.get(0),
        from_org: r.get(1),
        reason: r.get(2),
        erased_at: r.get(3),
        receipt: r.get(4),
    }))
}

impl Tx {
    /// [`NodeStore::held_cards`], as this transaction sees it.
    pub async fn held_cards(
        &mut self,
        from_org: &str,
        pseudonym: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        held_cards(&mut self.0, from_org, pseudonym).await
    }

    /// [`NodeStore::received`], as this transaction sees it.
    pub async fn received(&mut self, grant_id: &str) -> Result<Option<Received>, StoreError> {
        received(&mut self.0, grant_id).await
    }

    /// [`NodeStore::erased`], as this transaction sees it.
    pub async fn erased(&mut self, grant_id: &str) -> Result<Option<Erased>, StoreError> {
        erased(&mut self.0, grant_id).await
    }

    /// Which of `grant_ids` this node holds a passport under, as this transaction sees it.
    pub async fn received_among(
        &mut self,
        grant_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.present("received", "grant_id", grant_ids).await
    }

    /// Which of `grant_ids` were erased here, as this transaction sees it.
    pub async fn erased_among(
        &mut self,
        grant_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.present("erased", "grant_id", grant_ids).await
    }

    /// Which of `pseudonyms` this node holds a passport (and so a card) of, from any sender.
    pub async fn students_held_among(
        &mut self,
        pseudonyms: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.present("received", "pseudonym", pseudonyms).await
    }

    /// Stores a received passport, replacing what the same grant brought before.
    pub async fn store_received(&mut self, r: &Received) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM received WHERE grant_id = $1")
            .bind(&r.grant_id)
            .execute(&mut *self.0)
            .await?;
        self.add_received_all(std::slice::from_ref(r)).await
    }

    /// Stores received passports under grants that brought nothing here before:
    /// [`RECEIVED_PER_INSERT`] passports a statement, and their sections likewise.
    pub async fn add_received_all(&mut self, all: &[Received]) -> Result<(), StoreError> {
        const COLUMNS: usize = 16;
        for chunk in all.chunks(RECEIVED_PER_INSERT) {
            let values = super::outbox::value_rows(1, chunk.len(), COLUMNS);
            let sql = format!(
                "INSERT INTO received ({RECEIVED_COLUMNS}) VALUES {}",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(&r.grant_id)
                    .bind(&r.pseudonym)
                    .bind(&r.from_org)
                    .bind(&r.purpose)
                    .bind(sections_text(&r.sections))
                    .bind(r.not_before)
                    .bind(r.not_after)
                    .bind(r.live as i64)
                    .bind(r.version as i64)
                    .bind(&r.question_set)
                    .bind(&r.card)
                    .bind(&r.manifest)
                    .bind(&r.grant_signed)
                    .bind(&r.envelope_id)
                    .bind(r.received_at)
                    .bind(&r.status);
            }
            query.execute(&mut *self.0).await?;
        }
        let sections: Vec<(&String, &String, &Vec<u8>)> = all
            .iter()
            .flat_map(|r| {
                r.disclosures
                    .iter()
                    .map(move |(id, d)| (&r.grant_id, id, d))
            })
            .collect();
        for chunk in sections.chunks(RECEIVED_PER_INSERT * 4) {
            let values = super::outbox::value_rows(1, chunk.len(), 3);
            let sql = format!(
                "INSERT INTO received_sections (grant_id, section_id, disclosure) VALUES {}",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for (grant_id, id, d) in chunk {
                query = query.bind(*grant_id).bind(*id).bind(*d);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    /// Erases everything a grant brought (the passport and its sections) and records the
    /// erasure with the receipt this node signed.
    pub async fn erase_received(&mut self, e: &Erased) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM received WHERE grant_id = $1")
            .bind(&e.grant_id)
            .execute(&mut *self.0)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO erased (grant_id, from_org, reason, erased_at, receipt) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&e.grant_id)
        .bind(&e.from_org)
        .bind(&e.reason)
        .bind(e.erased_at)
        .bind(&e.receipt)
        .execute(&mut *self.0)
        .await?;
        Ok(removed > 0)
    }

    pub async fn set_received_status(
        &mut self,
        grant_id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE received SET status = $1 WHERE grant_id = $2")
            .bind(status)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn log_view(
        &mut self,
        grant_id: &str,
        staff_user: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO access_log (grant_id, staff_user, viewed_at) VALUES ($1, $2, $3)")
            .bind(grant_id)
            .bind(staff_user)
            .bind(at)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn received_status(
        &mut self,
        grant_id: &str,
    ) -> Result<Option<(String, String, String, u32)>, StoreError> {
        Ok(sqlx::query(
            "SELECT status, from_org, pseudonym, version FROM received WHERE grant_id = $1",
        )
        .bind(grant_id)
        .fetch_optional(&mut *self.0)
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<i64, _>(3) as u32)))
    }
}
