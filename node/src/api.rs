//! The node's local API (`overstap.v1.Node`) for the CLI and school systems. It listens on
//! loopback and every call carries the node's bearer token. Handlers decode, call the core, and
//! map errors; exactly one conversion to `tonic::Status` lives here.

use std::sync::Arc;

use overstap_proto::ProtocolError;
use overstap_proto::pb::node_server::Node;
use overstap_proto::pb::{
    AddGrantRequest, AddGrantResponse, Disclosure, GetStudentRequest, GetStudentResponse,
    InboxItem, InboxRequest, InboxResponse, NodeStatusRequest, NodeStatusResponse, OutboxItem,
    OutboxRequest, OutboxResponse, RegisterStudentRequest, RegisterStudentResponse, Section,
    SendPassportRequest, SendPassportResponse, ShowPassportRequest, ShowPassportResponse, Signed,
    StorePassportRequest, StorePassportResponse,
};
use prost::Message;
use rand_core::RngCore;
use tonic::{Request, Response, Status};

use crate::core::{NodeCore, NodeError, stored};
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
}

impl NodeApi {
    pub fn new(core: Arc<NodeCore>) -> Self {
        NodeApi { core }
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
        let (envelope_id, to_org) = self
            .core
            .send_passport(&request.into_inner().grant_id)
            .await?;
        Ok(Response::new(SendPassportResponse {
            envelope_id,
            to_org,
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
        if r.staff_user.trim().is_empty() {
            return Err(Status::invalid_argument(
                "name the staff member who views the passport (it is logged)",
            ));
        }
        let received = self
            .core
            .store
            .received(&r.grant_id)
            .await
            .map_err(NodeError::from)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no passport under grant {} at this node",
                    r.grant_id
                ))
            })?;
        let mut sections = Vec::with_capacity(received.disclosures.len());
        for (_, d) in &received.disclosures {
            let disclosure: Disclosure = stored(d, "section")?;
            sections.push(stored::<Section>(&disclosure.section, "section")?);
        }
        // The order of the manifest is the order the student filled it in.
        let manifest: overstap_proto::pb::Manifest = overstap_proto::sign::decode_body(
            overstap_proto::sign::Domain::Manifest,
            &stored::<Signed>(&received.manifest, "manifest")?,
        )
        .map_err(NodeError::from)?;
        sections.sort_by_key(|s| {
            manifest
                .digests
                .iter()
                .position(|d| d.section_id == s.section_id)
        });
        self.core
            .store
            .record_view(&r.grant_id, r.staff_user.trim(), self.core.now())
            .await
            .map_err(NodeError::from)?;
        let mut shown = item(&received);
        if shown.status == "ontvangen" {
            shown.status = "gelezen".into();
        }
        Ok(Response::new(ShowPassportResponse {
            item: Some(shown),
            question_set: received.question_set.clone(),
            version: received.version,
            sections,
        }))
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
        }))
    }
}
