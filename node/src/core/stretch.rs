//! A stretch of a run taken in under one transaction (see `ingest`): what it asks the database
//! once at its start, and what it writes once at its end, so that a package in a cohort costs
//! its own rows (the passport and its sections) and not a dozen statements.
//!
//! At the start, in one query each for the whole run: which envelopes were taken in before,
//! which grants are held or erased here, and which students' cards are held. A package under a
//! grant and for a student the answers say are new here needs no lookup of its own. Anything
//! the answers might not cover (a grant the stretch stored itself, any envelope other than a
//! package) sends the checks that follow back to the database, which sees the transaction's own
//! writes. What the stretch writes waits to go in together: the packages under new grants until
//! something is about to read the received passports (or the end), the records in `processed`
//! and each sender's sequence number until the end.

use std::collections::{BTreeMap, HashSet};

use overstap_proto::envelope::Opened;
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{ConsentGrant, EnvelopeHeader, StudentCard};
use overstap_proto::sign::{Domain, decode_body};

use crate::store::{Processed, Received, Tx};

use super::NodeError;

#[derive(Default)]
pub(super) struct Stretch {
    /// Envelope ids taken in before the stretch began, and those taken in since.
    processed: HashSet<Vec<u8>>,
    /// The grants and students asked about at the start; of those, the ones held or erased.
    asked_grants: HashSet<String>,
    asked_students: HashSet<String>,
    held_grants: HashSet<String>,
    erased_grants: HashSet<String>,
    held_students: HashSet<String>,
    /// Set once the stretch applied something other than a package: the answers from the start
    /// are no longer trusted, every check asks the database.
    unsure: bool,
    /// Each sender's number as the stretch sees it, and whether the stretch moved it.
    received_seq: BTreeMap<String, (u64, bool)>,
    /// Checkpoint notes recorded in this stretch (each sender sends the same one many times).
    checkpoints: HashSet<(String, Vec<u8>)>,
    /// The records of what was taken in, written at the end.
    rows: Vec<Processed>,
    /// Packages under grants new here, written together (see [`Stretch::flush`]).
    received: Vec<Received>,
}

impl Stretch {
    /// Asks, inside `tx`, what the envelopes of `run` (those that opened) will need to know.
    pub(super) async fn start(
        tx: &mut Tx,
        run: &[Option<(EnvelopeHeader, Opened)>],
    ) -> Result<Self, NodeError> {
        let mut ids = Vec::new();
        let mut grants = Vec::new();
        let mut students = Vec::new();
        for (claimed, opened) in run.iter().flatten() {
            ids.push(claimed.envelope_id.clone());
            if let Some(Content::Package(p)) = &opened.payload.content {
                if let Some(Ok(g)) = p
                    .grant
                    .as_ref()
                    .map(|g| decode_body::<ConsentGrant>(Domain::Grant, g))
                {
                    grants.push(g.grant_id);
                }
                if let Some(Ok(c)) = p
                    .card
                    .as_ref()
                    .map(|c| decode_body::<StudentCard>(Domain::StudentCard, c))
                {
                    students.push(c.pseudonym);
                }
            }
        }
        grants.sort();
        grants.dedup();
        students.sort();
        students.dedup();
        Ok(Stretch {
            processed: tx.processed_among(&ids).await?,
            held_grants: tx.received_among(&grants).await?,
            erased_grants: tx.erased_among(&grants).await?,
            held_students: tx.students_held_among(&students).await?,
            asked_grants: grants.into_iter().collect(),
            asked_students: students.into_iter().collect(),
            ..Default::default()
        })
    }

    /// Whether the envelope was taken in before, or earlier in this stretch.
    pub(super) fn is_processed(&self, envelope_id: &[u8]) -> bool {
        self.processed.contains(envelope_id)
    }

    /// The sender's number as the stretch sees it, read once.
    pub(super) async fn received_seq(&mut self, tx: &mut Tx, from: &str) -> Result<u64, NodeError> {
        if let Some((seq, _)) = self.received_seq.get(from) {
            return Ok(*seq);
        }
        let seq = tx.peer(from).await?.received_seq;
        self.received_seq.insert(from.to_string(), (seq, false));
        Ok(seq)
    }

    /// Moves the sender's number on; written at the end.
    pub(super) fn set_received_seq(&mut self, from: &str, seq: u64) {
        let entry = self
            .received_seq
            .entry(from.to_string())
            .or_insert((0, false));
        *entry = (entry.0.max(seq), true);
    }

    /// Whether the checkpoint note still has to be recorded (the first time in the stretch).
    pub(super) fn new_checkpoint(&mut self, from: &str, note: &[u8]) -> bool {
        self.checkpoints.insert((from.to_string(), note.to_vec()))
    }

    /// Keeps an envelope's record for the end.
    pub(super) fn processed(&mut self, row: Processed) {
        self.processed.insert(row.envelope_id.clone());
        self.rows.push(row);
    }

    /// Whether the grant is surely unknown here: neither held nor erased, as asked at the start,
    /// and not touched since.
    pub(super) fn surely_new_grant(&self, grant_id: &str) -> bool {
        !self.unsure
            && self.asked_grants.contains(grant_id)
            && !self.held_grants.contains(grant_id)
            && !self.erased_grants.contains(grant_id)
    }

    /// Whether no card of the student is held here, as asked at the start and not since.
    pub(super) fn surely_no_card(&self, pseudonym: &str) -> bool {
        !self.unsure
            && self.asked_students.contains(pseudonym)
            && !self.held_students.contains(pseudonym)
    }

    /// A package under a grant new here, kept to be written with the others (see
    /// [`Stretch::flush`]); its grant and its student are held from now on.
    pub(super) fn stored(&mut self, r: Received) {
        self.held(&r);
        self.received.push(r);
    }

    /// A package stored: its grant and its student are held from now on.
    pub(super) fn held(&mut self, r: &Received) {
        self.held_grants.insert(r.grant_id.clone());
        self.held_students.insert(r.pseudonym.clone());
    }

    /// Writes the packages kept so far. Before anything in the stretch reads the received
    /// passports (a lookup the answers from the start do not cover, an envelope that is not a
    /// package), and at its end.
    pub(super) async fn flush(&mut self, tx: &mut Tx) -> Result<(), NodeError> {
        tx.add_received_all(&self.received).await?;
        self.received.clear();
        Ok(())
    }

    /// Something other than a package stored was applied: from now on, ask the database.
    pub(super) fn unsure(&mut self) {
        self.unsure = true;
    }

    /// Writes what the stretch kept for its end. An envelope recorded meanwhile by someone else
    /// is an error, and the transaction must not commit.
    pub(super) async fn finish(mut self, tx: &mut Tx) -> Result<(), NodeError> {
        self.flush(tx).await?;
        let inserted = tx.insert_processed_all(&self.rows).await?;
        if inserted != self.rows.len() as u64 {
            return Err(NodeError::Invalid(format!(
                "{} of {} envelopes of a run were recorded twice",
                self.rows.len() as u64 - inserted,
                self.rows.len()
            )));
        }
        for (from, (seq, moved)) in self.received_seq {
            if moved {
                tx.set_received_seq(&from, seq).await?;
            }
        }
        Ok(())
    }
}
