//! The node's local API (`overstap.v1.Node`) for the CLI and school systems. It listens on
//! loopback and every call carries the node's bearer token. Handlers decode, call the core, and
//! map errors; exactly one conversion to `tonic::Status` lives here.

use std::sync::Arc;

use overstap_proto::ProtocolError;
use overstap_proto::pb::node_server::Node;
use overstap_proto::pb::{
    AddGrantRequest, AddGrantResponse, GetStudentRequest, GetStudentResponse, Handover,
    HandoversRequest, HandoversResponse, InboxItem, InboxRequest, InboxResponse, IndexedLogEntry,
    LogHistoryRequest, LogHistoryResponse, LogStatusRequest, LogStatusResponse, NodeStatusRequest,
    NodeStatusResponse, OutboxItem, OutboxRequest, OutboxResponse, RegisterStudentRequest,
    RegisterStudentResponse, ReplaceStudentKeyRequest, ReplaceStudentKeyResponse,
    RevokeGrantRequest, RevokeGrantResponse, SendPassportRequest, SendPassportResponse,
    SendPassportResult, SendPassportsRequest, SendPassportsResponse, SetStatusRequest,
    SetStatusResponse, ShowPassportRequest, ShowPassportResponse, Signed, StorePassportRequest,
    StorePassportResponse, StudentCardsRequest, StudentCardsResponse, TrailEvent, TrailRequest,
    TrailResponse,
};
use overstap_proto::pb::{
    AddPickupCodeRequest, AddPickupCodeResponse, AddStaffRequest, AddStaffResponse,
    FetchPassportRequest, FetchPassportResponse, FetchableGrant, FetchableRequest,
    FetchableResponse, InviteStudentRequest, InviteStudentResponse, ProveEnvelopeRequest,
    ProveEnvelopeResponse, RedeemPickupCodeRequest,
};
use prost::Message;
use rand_core::RngCore;
use tonic::{Request, Response, Status};

use crate::core::{MAX_SEND_PASSPORTS, NodeCore, NodeError, TERMINAL_ROLE, stored};
use crate::store::{Received, StoreError};

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        match &e {
            NodeError::Protocol(p) => match p {
                ProtocolError::UnknownMember(_) => Status::not_found(e.to_string()),
                ProtocolError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
                _ => Status::invalid_argument(e.to_string()),
            },
            NodeError::Store(StoreError::Conflict(_)) => Status::already_exists(e.to_string()),
            NodeError::Store(inner) => {
                tracing::error!(error = %inner, "store failure");
                Status::unavailable("the node could not store this right now; try again")
            }
            NodeError::NotFound(_) => Status::not_found(e.to_string()),
            NodeError::Precondition(_) => Status::failed_precondition(e.to_string()),
            NodeError::Invalid(_) => Status::invalid_argument(e.to_string()),
            NodeError::Corrupt(detail) => {
                tracing::error!(%detail, "stored data does not decode");
                Status::internal("stored data at this node is damaged; the node's log says more")
            }
            NodeError::NoDirectory | NodeError::StaleDirectory(_) => {
                Status::unavailable(e.to_string())
            }
        }
    }
}

/// A fresh random API token (256 bits, hex).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Checks `authorization: Bearer <token>` on every call, in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    token: Arc<String>,
}

impl TokenCheck {
    pub fn new(token: String) -> Self {
        TokenCheck {
            token: Arc::new(token),
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = self.token.as_bytes();
        let given = given.as_bytes();
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong API token for this node",
            ))
        }
    }
}

pub struct NodeApi {
    core: Arc<NodeCore>,
    /// The channel to the hub, for proofs asked for on the spot.
    hub: tonic::transport::Channel,
}

impl NodeApi {
    pub fn new(core: Arc<NodeCore>, hub: tonic::transport::Channel) -> Self {
        NodeApi { core, hub }
    }
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, Status> {
    v.ok_or_else(|| Status::invalid_argument(format!("{what} is missing")))
}

pub(crate) fn item(r: &Received) -> InboxItem {
    InboxItem {
        grant_id: r.grant_id.clone(),
        pseudonym: r.pseudonym.clone(),
        from_org: r.from_org.clone(),
        purpose: r.purpose.clone(),
        sections: r.sections.clone(),
        received_at: r.received_at,
        not_after: r.not_after,
        status: r.status.clone(),
    }
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn register_student(
        &self,
        request: Request<RegisterStudentRequest>,
    ) -> Result<Response<RegisterStudentResponse>, Status> {
        let r = request.into_inner();
        let card = self
            .core
            .register_student(
                &r.student_key,
                &r.birth_month,
                &r.guardian_keys,
                &r.staff_user,
            )
            .await?;
        Ok(Response::new(RegisterStudentResponse { card: Some(card) }))
    }

    async fn replace_student_key(
        &self,
        request: Request<ReplaceStudentKeyRequest>,
    ) -> Result<Response<ReplaceStudentKeyResponse>, Status> {
        let r = request.into_inner();
        let (card, grants_kept) = self
            .core
            .replace_student_key(
                &r.pseudonym,
                (!r.new_student_key.is_empty()).then_some(r.new_student_key.as_slice()),
                r.replace_guardians.then_some(r.guardian_keys.as_slice()),
                &r.staff_user,
            )
            .await?;
        Ok(Response::new(ReplaceStudentKeyResponse {
            card: Some(card),
            grants_kept,
        }))
    }

    async fn get_student(
        &self,
        request: Request<GetStudentRequest>,
    ) -> Result<Response<GetStudentResponse>, Status> {
        let pseudonym = request.into_inner().pseudonym;
        let (card, _) = self.core.card(&pseudonym).await?;
        let manifest = self
            .core
            .store
            .latest_version(&pseudonym)
            .await
            .map_err(NodeError::from)?
            .and_then(|v| Signed::decode(v.manifest.as_slice()).ok());
        Ok(Response::new(GetStudentResponse {
            card: Some(card),
            manifest,
        }))
    }

    async fn store_passport(
        &self,
        request: Request<StorePassportRequest>,
    ) -> Result<Response<StorePassportResponse>, Status> {
        let r = request.into_inner();
        let manifest = required(r.manifest, "manifest")?;
        let version = self.core.store_passport(&manifest, &r.sections).await?;
        Ok(Response::new(StorePassportResponse { version }))
    }

    async fn add_grant(
        &self,
        request: Request<AddGrantRequest>,
    ) -> Result<Response<AddGrantResponse>, Status> {
        let grant = required(request.into_inner().grant, "grant")?;
        let grant_id = self.core.add_grant(&grant).await?;
        Ok(Response::new(AddGrantResponse { grant_id }))
    }

    async fn send_passport(
        &self,
        request: Request<SendPassportRequest>,
    ) -> Result<Response<SendPassportResponse>, Status> {
        let request = request.into_inner();
        let sent = self
            .core
            .send_passport(&request.grant_id, request.again)
            .await?;
        Ok(Response::new(sent_response(sent)))
    }

    async fn send_passports(
        &self,
        request: Request<SendPassportsRequest>,
    ) -> Result<Response<SendPassportsResponse>, Status> {
        let SendPassportsRequest { grant_ids, again } = request.into_inner();
        if grant_ids.is_empty() {
            return Err(Status::invalid_argument("name at least one grant to send"));
        }
        if grant_ids.len() > MAX_SEND_PASSPORTS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_SEND_PASSPORTS} grants in one call; {} were named",
                grant_ids.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = grant_ids.iter().find(|g| !seen.insert(g.as_str())) {
            return Err(Status::invalid_argument(format!(
                "grant {twice} is named twice; name each grant once"
            )));
        }
        let results = self.core.send_passports(&grant_ids, again).await;
        Ok(Response::new(SendPassportsResponse {
            results: grant_ids
                .into_iter()
                .zip(results)
                .map(|(grant_id, r)| match r {
                    Ok(sent) => SendPassportResult {
                        grant_id,
                        sent: Some(sent_response(sent)),
                        error: String::new(),
                    },
                    Err(e) => SendPassportResult {
                        grant_id,
                        sent: None,
                        error: e.to_string(),
                    },
                })
                .collect(),
        }))
    }

    async fn inbox(
        &self,
        _request: Request<InboxRequest>,
    ) -> Result<Response<InboxResponse>, Status> {
        let items = self.core.store.inbox().await.map_err(NodeError::from)?;
        Ok(Response::new(InboxResponse {
            items: items.iter().map(item).collect(),
        }))
    }

    async fn show_passport(
        &self,
        request: Request<ShowPassportRequest>,
    ) -> Result<Response<ShowPassportResponse>, Status> {
        let r = request.into_inner();
        let (received, sections) = self
            .core
            .view(&r.grant_id, &r.staff_user, TERMINAL_ROLE)
            .await?;
        Ok(Response::new(ShowPassportResponse {
            item: Some(item(&received)),
            question_set: received.question_set.clone(),
            version: received.version,
            sections,
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<RevokeGrantRequest>,
    ) -> Result<Response<RevokeGrantResponse>, Status> {
        let revocation = required(request.into_inner().revocation, "revocation")?;
        let (grant_id, envelope_id) = self.core.revoke(&revocation).await?;
        Ok(Response::new(RevokeGrantResponse {
            grant_id,
            envelope_id,
        }))
    }

    async fn add_staff(
        &self,
        request: Request<AddStaffRequest>,
    ) -> Result<Response<AddStaffResponse>, Status> {
        let r = request.into_inner();
        self.core
            .add_staff(&r.username, &r.display_name, &r.password, &r.role)
            .await?;
        Ok(Response::new(AddStaffResponse {}))
    }

    async fn fetchable(
        &self,
        _request: Request<FetchableRequest>,
    ) -> Result<Response<FetchableResponse>, Status> {
        let rows = self
            .core
            .store
            .fetchables()
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(FetchableResponse {
            grants: rows
                .into_iter()
                .map(|f| FetchableGrant {
                    grant_id: f.grant_id,
                    from_org: f.from_org,
                    pseudonym: f.pseudonym,
                    purpose: f.purpose,
                    sections: f.sections,
                    not_after: f.not_after,
                    asked_at: f.asked_at.unwrap_or(0),
                    refused: f.refused.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn fetch_passport(
        &self,
        request: Request<FetchPassportRequest>,
    ) -> Result<Response<FetchPassportResponse>, Status> {
        let r = request.into_inner();
        if r.staff_user.trim().is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who fetches the passport (it is logged)".into(),
            )
            .into());
        }
        let (envelope_id, home_org) = self
            .core
            .pull(&r.grant_id, &r.staff_user, TERMINAL_ROLE)
            .await?;
        Ok(Response::new(FetchPassportResponse {
            envelope_id,
            home_org,
        }))
    }

    async fn add_pickup_code(
        &self,
        request: Request<AddPickupCodeRequest>,
    ) -> Result<Response<AddPickupCodeResponse>, Status> {
        let code = required(request.into_inner().code, "code")?;
        self.core.add_pickup_code(&code).await?;
        Ok(Response::new(AddPickupCodeResponse {}))
    }

    async fn redeem_pickup_code(
        &self,
        request: Request<RedeemPickupCodeRequest>,
    ) -> Result<Response<FetchPassportResponse>, Status> {
        let r = request.into_inner();
        if r.staff_user.trim().is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who redeems the code (it is logged)".into(),
            )
            .into());
        }
        let (envelope_id, home_org) = self
            .core
            .redeem_pickup_code(&r.code, &r.staff_user, TERMINAL_ROLE)
            .await?;
        Ok(Response::new(FetchPassportResponse {
            envelope_id,
            home_org,
        }))
    }

    async fn invite_student(
        &self,
        request: Request<InviteStudentRequest>,
    ) -> Result<Response<InviteStudentResponse>, Status> {
        let r = request.into_inner();
        let invited = self
            .core
            .invite_student(&r.name, &r.class_name, &r.birth_month, &r.mentor)
            .await?;
        let detail = format!("{} ({})", r.name.trim(), r.class_name.trim());
        self.core
            .audit(&r.mentor, TERMINAL_ROLE, "invite", "", &detail)
            .await?;
        Ok(Response::new(InviteStudentResponse {
            invitation_id: invited.id,
            student_path: format!("/i/{}", invited.student_token),
            parent_path: invited
                .parent_token
                .map(|t| format!("/k/{t}"))
                .unwrap_or_default(),
            expires_at: invited.expires_at,
        }))
    }

    async fn set_status(
        &self,
        request: Request<SetStatusRequest>,
    ) -> Result<Response<SetStatusResponse>, Status> {
        let r = request.into_inner();
        self.core
            .set_status(&r.grant_id, &r.status, &r.staff_user, TERMINAL_ROLE)
            .await?;
        Ok(Response::new(SetStatusResponse {}))
    }

    async fn handovers(
        &self,
        _request: Request<HandoversRequest>,
    ) -> Result<Response<HandoversResponse>, Status> {
        let rows = self.core.handovers().await?;
        Ok(Response::new(HandoversResponse {
            handovers: rows
                .into_iter()
                .map(|g| Handover {
                    grant_id: g.grant_id,
                    pseudonym: g.pseudonym,
                    to_org: g.recipient_org,
                    purpose: g.purpose,
                    sections: g.sections,
                    grant_state: g.state,
                    status: g.status,
                    status_at: g.status_at.unwrap_or(0),
                    sent_at: g.sent_at.unwrap_or(0),
                    not_after: g.not_after,
                    views: g.views,
                    fetched_at: g.fetched_at.unwrap_or(0),
                })
                .collect(),
        }))
    }

    async fn log_status(
        &self,
        _request: Request<LogStatusRequest>,
    ) -> Result<Response<LogStatusResponse>, Status> {
        let state = self.core.store.log_state().await.map_err(NodeError::from)?;
        let (proven, unproven) = self
            .core
            .store
            .proof_counts()
            .await
            .map_err(NodeError::from)?;
        let (checkpoint, size, alarm) = match state {
            Some(s) => (s.note, s.size, s.alarm),
            None => (Vec::new(), 0, None),
        };
        Ok(Response::new(LogStatusResponse {
            checkpoint,
            size,
            proven,
            unproven,
            alarm: alarm.is_some(),
            alarm_reason: alarm.unwrap_or_default(),
        }))
    }

    async fn student_cards(
        &self,
        request: Request<StudentCardsRequest>,
    ) -> Result<Response<StudentCardsResponse>, Status> {
        let pseudonym = request.into_inner().pseudonym;
        Ok(Response::new(
            self.core
                .student_cards(&pseudonym, self.hub.clone())
                .await?,
        ))
    }

    async fn log_history(
        &self,
        _request: Request<LogHistoryRequest>,
    ) -> Result<Response<LogHistoryResponse>, Status> {
        let store = &self.core.store;
        let (checkpoints, evidence) = store.checkpoint_history().await.map_err(NodeError::from)?;
        let own_entries = store
            .own_log_entries(&self.core.org_id)
            .await
            .map_err(NodeError::from)?
            .into_iter()
            .map(|u| IndexedLogEntry {
                log_index: u.log_index,
                entry: Some(u.entry),
            })
            .collect();
        Ok(Response::new(LogHistoryResponse {
            checkpoints,
            evidence,
            own_entries,
        }))
    }

    async fn prove_envelope(
        &self,
        request: Request<ProveEnvelopeRequest>,
    ) -> Result<Response<ProveEnvelopeResponse>, Status> {
        use overstap_proto::log::{check_inclusion, hashes_from_bytes, leaf_hash};
        let id = request.into_inner().envelope_id;
        let item = self
            .core
            .store
            .log_item(&self.core.org_id, &id)
            .await
            .map_err(NodeError::from)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "this node sent or received no envelope {} with a hub receipt",
                    hex::encode(&id)
                ))
            })?;
        let state = self.core.store.log_state().await.map_err(NodeError::from)?;
        let state = state
            .filter(|s| s.size > item.log_index)
            .ok_or_else(|| Status::failed_precondition("the newest checkpoint this node verified does not cover this envelope yet; try again in a moment"))?;
        let mut hub = overstap_proto::pb::hub_client::HubClient::new(self.hub.clone());
        let proof = hub
            .get_inclusion_proof(overstap_proto::pb::InclusionRequest {
                log_index: item.log_index,
                tree_size: state.size,
            })
            .await?
            .into_inner();
        let hashes = hashes_from_bytes(&proof.hashes).map_err(NodeError::from)?;
        check_inclusion(
            &hashes,
            state.size,
            overstap_proto::log::Hash(state.root),
            item.log_index,
            leaf_hash(&item.entry),
        )
        .map_err(|e| Status::data_loss(format!("the hub's proof does not check out: {e}")))?;
        self.core
            .store
            .mark_proven(&[(id, item.log_index)], state.size, self.core.now())
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(ProveEnvelopeResponse {
            log_index: item.log_index,
            tree_size: state.size,
            proof: proof.hashes,
            checkpoint: state.note,
            entry: Some(item.entry),
        }))
    }

    async fn trail(
        &self,
        request: Request<TrailRequest>,
    ) -> Result<Response<TrailResponse>, Status> {
        let pseudonym = request.into_inner().pseudonym;
        let events = self.core.trail(&pseudonym).await?;
        let mut out = Vec::with_capacity(events.len());
        for (row, receipt, verified, proven) in events {
            out.push(TrailEvent {
                at: row.at,
                event: row.event,
                org: row.org,
                grant_id: row.grant_id,
                detail: row.detail,
                hub_receipt: row
                    .hub_receipt
                    .as_deref()
                    .map(|b| stored::<Signed>(b, "hub receipt"))
                    .transpose()?,
                receipt_verified: verified,
                log_index: receipt.map(|r| r.log_index).unwrap_or(0),
                evidence: row
                    .evidence
                    .as_deref()
                    .map(|b| stored::<Signed>(b, "evidence"))
                    .transpose()?,
                proven,
            });
        }
        Ok(Response::new(TrailResponse { events: out }))
    }

    async fn outbox(
        &self,
        _request: Request<OutboxRequest>,
    ) -> Result<Response<OutboxResponse>, Status> {
        let rows = self
            .core
            .store
            .outbox(10_000)
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(OutboxResponse {
            items: rows
                .into_iter()
                .map(|r| OutboxItem {
                    envelope_id: r.envelope_id,
                    to_org: r.to_org,
                    kind: r.kind,
                    state: r.state,
                    detail: r.detail,
                    created_at: r.created_at,
                    grant_id: r.grant_id.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        use std::sync::atomic::Ordering;
        Ok(Response::new(NodeStatusResponse {
            org_id: self.core.org_id.clone(),
            directory_version: self.core.directory_version(),
            outbox_pending: self
                .core
                .store
                .pending_count()
                .await
                .map_err(NodeError::from)?,
            inbox_count: self
                .core
                .store
                .inbox_count()
                .await
                .map_err(NodeError::from)?,
            last_delivery_seq: self.core.last_seq.load(Ordering::Relaxed),
            hub_connected: self.core.hub_connected.load(Ordering::Relaxed),
            log_alarm: self.core.log_alarm().await?.unwrap_or_default(),
        }))
    }
}

/// A grant's answer to a send, as the API gives it.
fn sent_response(sent: crate::core::Sent) -> SendPassportResponse {
    SendPassportResponse {
        envelope_id: sent.envelope_id,
        to_org: sent.to_org,
        waits_until: sent.waits_until,
        already_sent: sent.already_sent,
        version: sent.version,
    }
}
