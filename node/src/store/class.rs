//! What sealing a class reads, in a handful of queries for the whole batch rather than five
//! or more per student: the grants, what of each is in the outbox already, the students'
//! newest passport versions, their cards, and the versions to send.

use std::collections::HashMap;

use sqlx::Row;

use super::outbox::{OUTBOX_COLUMNS, outbox_entry, params};
use super::students::StoredVersion;
use super::{GrantRow, OutboxEntry, StoreError, Tx};

/// Everything [`Tx::class_reads`] read, by grant id and by pseudonym.
#[derive(Debug, Default)]
pub struct ClassReads {
    pub grants: HashMap<String, GrantRow>,
    /// Each grant's outbox rows in the states asked for, in outbox order.
    pub outbox: HashMap<String, Vec<OutboxEntry>>,
    /// Each student's newest passport version.
    pub latest: HashMap<String, u32>,
    /// Each student's card as stored.
    pub cards: HashMap<String, Vec<u8>>,
    /// Each student's passport versions, with their sections.
    pub versions: HashMap<(String, u32), StoredVersion>,
}

impl Tx {
    /// Reads what sealing `grant_ids` needs, in five queries; `states` picks the outbox rows.
    /// Every version of each student is read (a student has a handful), not only those sent.
    pub async fn class_reads(
        &mut self,
        grant_ids: &[String],
        states: &[&str],
    ) -> Result<ClassReads, StoreError> {
        let mut reads = ClassReads::default();
        if grant_ids.is_empty() {
            return Ok(reads);
        }
        let ids = params(1, grant_ids.len());
        reads.grants = self.grants_by_id(grant_ids).await?;
        let states: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE grant_id IN ({ids}) AND state IN ({}) ORDER BY seq",
            states.join(",")
        );
        let sql = super::for_db(&self.0, sql);
        let mut query = sqlx::query(&sql);
        for id in grant_ids {
            query = query.bind(id);
        }
        for r in query.fetch_all(&mut *self.0).await? {
            let e = outbox_entry(&r);
            if let Some(g) = e.grant_id.clone() {
                reads.outbox.entry(g).or_default().push(e);
            }
        }
        let mut students: Vec<String> =
            reads.grants.values().map(|g| g.pseudonym.clone()).collect();
        students.sort();
        students.dedup();
        if students.is_empty() {
            return Ok(reads);
        }
        reads.cards = super::students::cards_by_pseudonym(&mut self.0, &students).await?;
        let who = params(1, students.len());
        let sql = format!(
            "SELECT pseudonym, version, question_set, manifest FROM passport_versions WHERE pseudonym IN ({who})"
        );
        let sql = super::for_db(&self.0, sql);
        let mut query = sqlx::query(&sql);
        for p in &students {
            query = query.bind(p);
        }
        for r in query.fetch_all(&mut *self.0).await? {
            let (pseudonym, version): (String, i64) = (r.get(0), r.get(1));
            let latest = reads.latest.entry(pseudonym.clone()).or_default();
            *latest = (*latest).max(version as u32);
            reads.versions.insert(
                (pseudonym, version as u32),
                StoredVersion {
                    version: version as u32,
                    question_set: r.get(2),
                    manifest: r.get(3),
                    disclosures: Vec::new(),
                },
            );
        }
        let sql = format!(
            "SELECT pseudonym, version, disclosure FROM passport_sections WHERE pseudonym IN ({who}) ORDER BY pseudonym, version, section_id"
        );
        let sql = super::for_db(&self.0, sql);
        let mut query = sqlx::query(&sql);
        for p in &students {
            query = query.bind(p);
        }
        for r in query.fetch_all(&mut *self.0).await? {
            let (pseudonym, version): (String, i64) = (r.get(0), r.get(1));
            if let Some(v) = reads.versions.get_mut(&(pseudonym, version as u32)) {
                v.disclosures.push(r.get(2));
            }
        }
        Ok(reads)
    }
}
