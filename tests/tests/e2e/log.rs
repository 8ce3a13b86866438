//! The verifiable log: every envelope a node sent or received is proven to be in the hub's
//! log, and a hub whose log does not add up (rewritten or truncated history) is caught by the
//! next consistency check: the node raises the alarm, keeps the evidence and stops sending.

use std::time::Duration;

use overstap_proto::pb::{LogStatusRequest, LogStatusResponse};
use overstap_tests::cast::{MBO, OTHER_MBO, SCHOOL, birth_month};
use overstap_tests::*;

async fn log_status(region: &overstap_region::region::Region, org: &str) -> LogStatusResponse {
    region
        .api(org)
        .await
        .unwrap()
        .log_status(LogStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// A dishonest operator edits the hub's database while it is down, then starts it again.
async fn tamper(region: &mut overstap_region::region::Region, sql: &[&str]) {
    region.stop_hub().await.unwrap();
    // The append-only triggers go first: the operator owns the database.
    let unguard: &[&str] = if hub_on_postgres(region) {
        &[
            "DROP TRIGGER events_append_only ON events",
            "DROP TRIGGER checkpoints_append_only ON checkpoints",
            "DROP TRIGGER log_hashes_append_only ON log_hashes",
        ]
    } else {
        &[
            "DROP TRIGGER events_no_update",
            "DROP TRIGGER events_no_delete",
            "DROP TRIGGER checkpoints_no_delete",
            "DROP TRIGGER log_hashes_no_delete",
        ]
    };
    let pool = hub_pool(region).await;
    for statement in unguard
        .iter()
        .chain(&[
            "DELETE FROM cosignatures",
            "DELETE FROM checkpoints",
            "DELETE FROM log_hashes",
        ])
        .chain(sql)
    {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    region.start_hub().await.unwrap();
}

async fn handed_over(region: &overstap_region::region::Region) -> String {
    let sam = student(region, &birth_month(17), None).await;
    let id = grant(
        region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(region, &id).await;
    eventually("the mbo holds it", || async {
        !held_sections(region, MBO, &id).await.is_empty()
    })
    .await;
    eventually(
        "both nodes have proven every envelope they sent and received",
        || async {
            let (s, m) = (
                log_status(region, SCHOOL).await,
                log_status(region, MBO).await,
            );
            s.proven >= 1
                && s.unproven == 0
                && m.proven >= 1
                && m.unproven == 0
                && !s.alarm
                && !m.alarm
        },
    )
    .await;
    id
}

#[tokio::test]
async fn every_envelope_is_proven_in_the_signed_log() {
    let (_tmp, region) = region().await;
    handed_over(&region).await;
    let audit = overstap_cli::audit::audit(&region.node_dir(SCHOOL))
        .await
        .unwrap();
    assert!(audit.ok() && audit.entries >= 2, "{audit:?}");
    // A proof asked for on the spot, for the package the school sent.
    let mut school = region.api(SCHOOL).await.unwrap();
    let sent = school
        .outbox(overstap_proto::pb::OutboxRequest {})
        .await
        .unwrap()
        .into_inner()
        .items;
    let package = sent
        .iter()
        .find(|i| i.kind == overstap_proto::pb::EnvelopeKind::Package as i32)
        .unwrap();
    let proof = school
        .prove_envelope(overstap_proto::pb::ProveEnvelopeRequest {
            envelope_id: package.envelope_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.entry.as_ref().unwrap().to_org, MBO);
    assert!(proof.log_index < proof.tree_size && !proof.proof.is_empty());
    let err = school
        .prove_envelope(overstap_proto::pb::ProveEnvelopeRequest {
            envelope_id: vec![0; 16],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let s = log_status(&region, SCHOOL).await;
    let note = String::from_utf8(s.checkpoint.clone()).unwrap();
    assert!(note.starts_with("overstap/demo\n"), "{note}");
    assert!(
        note.contains("\u{2014} overstap-hub-HUB "),
        "signed by the hub's key: {note}"
    );
    assert!(s.size >= 2, "the send and its delivery are logged");
    // The log holds metadata only: no pseudonym, no answer.
    let hub = overstap_region::region::hub_contents(&region.dir)
        .await
        .unwrap();
    assert!(!hub.is_empty());
    assert!(
        !hub.windows(4).any(|w| w == b"pvs-"),
        "a pseudonym in the hub's database"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hub_that_rewrites_its_log_is_caught_and_the_node_stops_sending() {
    let (_tmp, mut region) = region().await;
    handed_over(&region).await;
    let before = log_status(&region, SCHOOL).await;
    // The student's card may be logged before or after the send: find the send's entry.
    let pool = hub_pool(&region).await;
    let sent: i64 = sqlx::query_scalar("SELECT MIN(log_index) FROM events WHERE event = 'send'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Rewrite history: the send went somewhere else.
    let rewrite = format!("UPDATE events SET to_org = '27XK' WHERE log_index = {sent}");
    tamper(&mut region, &[rewrite.as_str()]).await;
    eventually("the school notices", || async {
        log_status(&region, SCHOOL).await.alarm
    })
    .await;
    let after = log_status(&region, SCHOOL).await;
    assert!(
        after.alarm_reason.contains("signed two different logs")
            || after.alarm_reason.contains("is not an extension"),
        "{}",
        after.alarm_reason
    );
    assert_eq!(
        after.checkpoint, before.checkpoint,
        "the node keeps the checkpoint it verified"
    );
    assert_eq!(
        node_count(&region, SCHOOL, "log_evidence").await,
        1,
        "the conflicting checkpoint is kept as evidence"
    );
    // The alarm shows in the node's metrics, for the monitoring to page someone.
    let metrics = scrape(&region.metrics_url(SCHOOL).unwrap()).await;
    assert_eq!(metrics["overstap_node_log_alarm"], 1.0);
    let status = region
        .api(SCHOOL)
        .await
        .unwrap()
        .status(overstap_proto::pb::NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.log_alarm, after.alarm_reason,
        "node status shows the alarm"
    );
    // An audit from the entries the hub now serves does not make the checkpoint the school holds.
    let audit = overstap_cli::audit::audit(&region.node_dir(SCHOOL))
        .await
        .unwrap();
    assert!(!audit.node_checkpoint_matches && !audit.ok(), "{audit:?}");
    // The school's own record of its send pins the rewrite down to the entry and the field.
    let d = audit.first_divergence.as_ref().expect("a divergence");
    assert_eq!(d.entry, Some(sent as u64), "{d:?}");
    assert!(
        d.detail.contains(&format!(
            "to reads \"27XK\" where this node's record says \"{MBO}\""
        )),
        "{d:?}"
    );
    assert!(audit.checkpoints_checked > audit.checkpoints_matching);
    // Sending stops: a new handover stays in the outbox.
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wat-kan-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        held_sections(&region, MBO, &id).await.is_empty(),
        "nothing left the school after the alarm"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hub_that_truncates_its_log_after_a_restart_is_caught() {
    let (_tmp, mut region) = region().await;
    handed_over(&region).await;
    tamper(&mut region, &["DELETE FROM events WHERE log_index >= 1"]).await;
    eventually("the mbo notices", || async {
        log_status(&region, MBO).await.alarm
    })
    .await;
    let reason = log_status(&region, MBO).await.alarm_reason;
    assert!(reason.contains("shrank"), "{reason}");
    let audit = overstap_cli::audit::audit(&region.node_dir(MBO))
        .await
        .unwrap();
    let d = audit.first_divergence.as_ref().expect("a divergence");
    assert!(
        !audit.ok() && d.first_failing_size.is_some_and(|f| f >= 2) && d.last_matching_size <= 1,
        "{audit:?}"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hub_that_shows_two_members_two_histories_is_caught_by_comparing_checkpoints() {
    let (_tmp, region) = region().await;
    handed_over(&region).await;
    let seen = log_status(&region, MBO).await;
    // What a forking hub would have shown the school: a checkpoint of the same size with another
    // root, signed with the hub's own key. The school passes it on in an envelope, as every
    // envelope carries the sender's newest checkpoint.
    let key_text = std::fs::read_to_string(region.dir.join("hub/keys/signing.key")).unwrap();
    let hub_key = ed25519_dalek::SigningKey::from_bytes(
        &overstap_proto::config::parse_key_hex(&key_text, "key").unwrap(),
    );
    let forked = overstap_proto::log::sign_checkpoint(
        "demo",
        seen.size,
        overstap_proto::log::Hash([7; 32]),
        &hub_key,
        "HUB",
    )
    .unwrap();
    let school = creds(&region, SCHOOL);
    let envelope = overstap_proto::envelope::seal(
        overstap_proto::envelope::Outgoing {
            envelope_id: [3; 16],
            from_org: SCHOOL,
            kind: overstap_proto::pb::EnvelopeKind::Status,
            created_at: now(),
            payload: overstap_proto::pb::Payload {
                checkpoint: forked,
                content: Some(overstap_proto::pb::payload::Content::Skip(
                    overstap_proto::pb::Skip {
                        reason: "gossip".into(),
                    },
                )),
                ..Default::default()
            },
        },
        &school.signing,
        &member(&region, MBO),
    )
    .unwrap();
    hub_client(&school).send(envelope).await.unwrap();
    eventually("the mbo notices the split view", || async {
        log_status(&region, MBO).await.alarm
    })
    .await;
    let reason = log_status(&region, MBO).await.alarm_reason;
    // Either the same size with another root, or two sizes no consistency proof can join.
    assert!(
        reason.contains("the hub showed 25LP a different log")
            || reason.contains("the logs the hub showed 25LP and us do not fit together"),
        "{reason}"
    );
    assert_eq!(node_count(&region, MBO, "log_evidence").await, 1);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_log_benchmark_runs_and_reports_what_it_measured() {
    let mut out = Vec::new();
    let b = overstap_bench::log::log_bench(1000, 32, &mut out)
        .await
        .unwrap();
    assert_eq!(b.entries, 1000);
    assert_eq!(b.inclusion_proof_bytes % 32, 0);
    assert!(
        (9 * 32..=10 * 32).contains(&b.inclusion_proof_bytes),
        "{b:?}"
    );
    assert!(
        b.routed_per_s_log_on > 0.0 && b.routed_per_s_log_off > 0.0 && b.ratio_on_over_off > 0.0
    );
    assert!(b.routed_per_s_full_log > 0.0 && b.ratio_full_over_empty > 0.0);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("routing with the log on") && text.contains("routing with the log off"),
        "{text}"
    );
    assert!(
        text.contains("the hub's signed log holds 1000 entries")
            && text.contains("routing with 1000 entries in the log already"),
        "{text}"
    );
}

#[tokio::test]
async fn a_hub_that_drops_an_entry_is_caught() {
    let (_tmp, mut region) = region().await;
    handed_over(&region).await;
    tamper(&mut region, &["DELETE FROM events WHERE log_index = 1"]).await;
    eventually("the school notices", || async {
        log_status(&region, SCHOOL).await.alarm
    })
    .await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_coordinator_witnesses_the_log_and_its_cosignature_reaches_every_node() {
    let (_tmp, mut region) = region().await;
    admit_coordinator(&mut region).await;
    handed_over(&region).await;
    eventually(
        "the school holds a checkpoint the coordinator cosigned",
        || async {
            String::from_utf8_lossy(&log_status(&region, SCHOOL).await.checkpoint)
                .contains("\u{2014} overstap-witness-RMC01 ")
        },
    )
    .await;
    // A member that is not a coordinator cannot witness.
    let school = creds(&region, SCHOOL);
    let note = log_status(&region, SCHOOL).await.checkpoint;
    let cosigned =
        overstap_proto::log::cosign(&note, &school.signing, SCHOOL, now() as u64).unwrap();
    let err = hub_client(&school)
        .add_cosignature(overstap_proto::pb::CheckpointResponse { note: cosigned })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    region.shutdown().await.unwrap();
}

/// A dishonest hub, as a test double of the generated `Hub` trait: it routes honestly through
/// the real hub service, but shows one member (the victim) a history in which entry 0 says
/// something else. That history is signed with the hub's own key and holds together on its
/// own: the victim's checkpoints, inclusion proofs and consistency proofs all check out.
/// Only comparing checkpoints with another member can show the split.
struct ForkingHub<S: overstap_hub::HubStore> {
    honest: overstap_hub::HubService<S>,
    victim: Vec<u8>,
    key: ed25519_dalek::SigningKey,
}

/// Puts a [`ForkingHub`] in front of the honest hub service, whichever store it runs on.
fn fork<S: overstap_hub::HubStore>(
    victim: Vec<u8>,
    key: ed25519_dalek::SigningKey,
) -> impl FnOnce(overstap_hub::HubService<S>) -> ForkingHub<S> {
    move |honest| ForkingHub {
        honest,
        victim,
        key,
    }
}

impl<S: overstap_hub::HubStore> ForkingHub<S> {
    fn is_victim<T>(&self, request: &tonic::Request<T>) -> bool {
        use sha2::Digest;
        request
            .peer_certs()
            .and_then(|certs| {
                certs
                    .first()
                    .map(|c| sha2::Sha256::digest(c.as_ref()).to_vec())
            })
            .is_some_and(|f| f == self.victim)
    }

    /// The victim's view: every integrated entry, with the first one rewritten.
    async fn fork(
        &self,
    ) -> Result<
        (
            overstap_proto::log::MemoryTree,
            Vec<overstap_proto::log::LogEntry>,
        ),
        tonic::Status,
    > {
        let store = &self.honest.state().store;
        let failed = |e: overstap_hub::store::StoreError| tonic::Status::unavailable(e.to_string());
        let size = store
            .latest_checkpoint()
            .await
            .map_err(failed)?
            .map_or(0, |c| c.size);
        let mut entries: Vec<_> = store
            .events(0, size as u32)
            .await
            .map_err(failed)?
            .iter()
            .map(overstap_hub::service::entry_of)
            .collect();
        if let Some(first) = entries.first_mut() {
            first.to_org = "99ZZ".into();
        }
        let mut tree = overstap_proto::log::MemoryTree::default();
        for e in &entries {
            tree.append(overstap_proto::log::leaf_hash(e)).unwrap();
        }
        Ok((tree, entries))
    }
}

fn hashes(list: Vec<overstap_proto::log::Hash>) -> overstap_proto::pb::ProofResponse {
    overstap_proto::pb::ProofResponse {
        hashes: list.into_iter().map(|h| h.0.to_vec()).collect(),
    }
}

#[tonic::async_trait]
impl<S: overstap_hub::HubStore> overstap_proto::pb::hub_server::Hub for ForkingHub<S> {
    type SubscribeStream =
        <overstap_hub::HubService<S> as overstap_proto::pb::hub_server::Hub>::SubscribeStream;

    async fn send(
        &self,
        r: tonic::Request<overstap_proto::pb::Envelope>,
    ) -> Result<tonic::Response<overstap_proto::pb::Signed>, tonic::Status> {
        self.honest.send(r).await
    }

    async fn send_batch(
        &self,
        r: tonic::Request<overstap_proto::pb::SendBatchRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::SendBatchResponse>, tonic::Status> {
        self.honest.send_batch(r).await
    }

    async fn subscribe(
        &self,
        r: tonic::Request<overstap_proto::pb::SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        self.honest.subscribe(r).await
    }

    async fn ack(
        &self,
        r: tonic::Request<overstap_proto::pb::AckRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::AckResponse>, tonic::Status> {
        self.honest.ack(r).await
    }

    async fn get_directory(
        &self,
        r: tonic::Request<overstap_proto::pb::GetDirectoryRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::GetDirectoryResponse>, tonic::Status> {
        self.honest.get_directory(r).await
    }

    async fn log_card(
        &self,
        r: tonic::Request<overstap_proto::pb::LogCardRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::LogCardResponse>, tonic::Status> {
        self.honest.log_card(r).await
    }

    async fn card_history(
        &self,
        r: tonic::Request<overstap_proto::pb::CardHistoryRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::CardHistoryResponse>, tonic::Status> {
        self.honest.card_history(r).await
    }

    async fn publish_directory(
        &self,
        r: tonic::Request<overstap_proto::pb::Signed>,
    ) -> Result<tonic::Response<overstap_proto::pb::PublishDirectoryResponse>, tonic::Status> {
        overstap_proto::pb::hub_server::Hub::publish_directory(&self.honest, r).await
    }

    async fn get_checkpoint(
        &self,
        r: tonic::Request<overstap_proto::pb::GetCheckpointRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::CheckpointResponse>, tonic::Status> {
        if !self.is_victim(&r) {
            return self.honest.get_checkpoint(r).await;
        }
        let (tree, _) = self.fork().await?;
        if tree.size() == 0 {
            return Err(tonic::Status::not_found(
                "the log is empty: no checkpoint yet",
            ));
        }
        let note = overstap_proto::log::sign_checkpoint(
            "demo",
            tree.size(),
            tree.root().unwrap(),
            &self.key,
            "HUB",
        )
        .unwrap();
        Ok(tonic::Response::new(
            overstap_proto::pb::CheckpointResponse { note },
        ))
    }

    async fn get_inclusion_proof(
        &self,
        r: tonic::Request<overstap_proto::pb::InclusionRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::ProofResponse>, tonic::Status> {
        if !self.is_victim(&r) {
            return self.honest.get_inclusion_proof(r).await;
        }
        let (tree, _) = self.fork().await?;
        let r = r.into_inner();
        if r.log_index >= r.tree_size || r.tree_size > tree.size() {
            return Err(tonic::Status::out_of_range("no such entry"));
        }
        Ok(tonic::Response::new(hashes(
            tree.inclusion(r.log_index, r.tree_size).unwrap(),
        )))
    }

    async fn get_consistency_proof(
        &self,
        r: tonic::Request<overstap_proto::pb::ConsistencyRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::ProofResponse>, tonic::Status> {
        if !self.is_victim(&r) {
            return self.honest.get_consistency_proof(r).await;
        }
        let (tree, _) = self.fork().await?;
        let r = r.into_inner();
        if r.old_size == 0 || r.old_size > r.new_size || r.new_size > tree.size() {
            return Err(tonic::Status::out_of_range("no such proof"));
        }
        Ok(tonic::Response::new(hashes(
            tree.consistency(r.old_size, r.new_size).unwrap(),
        )))
    }

    async fn get_log_entries(
        &self,
        r: tonic::Request<overstap_proto::pb::LogEntriesRequest>,
    ) -> Result<tonic::Response<overstap_proto::pb::LogEntriesResponse>, tonic::Status> {
        if !self.is_victim(&r) {
            return self.honest.get_log_entries(r).await;
        }
        let (_, entries) = self.fork().await?;
        let start = (r.get_ref().start as usize).min(entries.len());
        Ok(tonic::Response::new(
            overstap_proto::pb::LogEntriesResponse {
                entries: entries[start..].to_vec(),
            },
        ))
    }

    async fn add_cosignature(
        &self,
        r: tonic::Request<overstap_proto::pb::CheckpointResponse>,
    ) -> Result<tonic::Response<overstap_proto::pb::AddCosignatureResponse>, tonic::Status> {
        self.honest.add_cosignature(r).await
    }
}

#[tokio::test]
async fn a_hub_that_shows_one_member_a_forked_history_is_caught_in_one_comparison_round() {
    let (_tmp, mut region) = region().await;
    let victim = member(&region, MBO).tls_cert_sha256;
    let key = region.signing_key("hub").unwrap();
    // Before any entry exists, the honest hub makes way for the forking one.
    region
        .run_hub_with(move |config, listener, stop| async move {
            if overstap_hub::store::is_postgres(&config.database_url) {
                let store = overstap_hub::PostgresStore::open(&config.database_url).await?;
                overstap_hub::serve_wrapped(config, store, listener, stop, fork(victim, key)).await
            } else {
                let store = overstap_hub::SqliteStore::open(&config.database_url).await?;
                overstap_hub::serve_wrapped(config, store, listener, stop, fork(victim, key)).await
            }
        })
        .await
        .unwrap();
    // Entry 0 (the one the fork rewrites) is a handover that does not concern the mbo.
    let ana = student(&region, &birth_month(17), None).await;
    let to_other = grant(
        &region,
        &ana.wallet,
        &grant_request(OTHER_MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &to_other).await;
    eventually("the other mbo holds it", || async {
        !held_sections(&region, OTHER_MBO, &to_other)
            .await
            .is_empty()
    })
    .await;
    eventually("the mbo has verified the forked history", || async {
        log_status(&region, MBO).await.size >= 2
    })
    .await;
    // On its own, the forked view holds together: no alarm.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mbo = log_status(&region, MBO).await;
    assert!(!mbo.alarm, "{}", mbo.alarm_reason);
    assert!(!log_status(&region, SCHOOL).await.alarm);
    // The school's package to the mbo carries the checkpoint the school verified: the mbo's
    // next comparison round shows two histories that cannot both be the log.
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("the mbo notices the split view", || async {
        log_status(&region, MBO).await.alarm
    })
    .await;
    let reason = log_status(&region, MBO).await.alarm_reason;
    assert!(
        reason.contains("the hub showed 25LP a different log")
            || reason.contains("the logs the hub showed 25LP and us do not fit together"),
        "{reason}"
    );
    assert_eq!(node_count(&region, MBO, "log_evidence").await, 1);
    region.shutdown().await.unwrap();
}
