//! Bad input at the hub, from outsiders and from members: a foreign certificate, another
//! member's name, tampered, malformed, oversized and replayed envelopes, and batches. Every case
//! gets a clear refusal and changes no stored data (`bad_input_node` has the nodes' side).

use overstap_proto::pb::{
    Envelope, EnvelopeHeader, GetDirectoryRequest, MemberKind, NodeStatusRequest, SendBatchRequest,
};
use overstap_proto::sign::{Domain, decode_body, sign_message};
use overstap_region::authority::Authority;
use overstap_region::member::{self, Admission};
use overstap_tests::cast::{GEMEENTE, MBO, SCHOOL, birth_month};
use overstap_tests::*;

use crate::bad_input_node::raw_grant;
use prost::Message;
use tonic::Code;

pub(crate) async fn nothing_stored_at_hub(region: &overstap_region::region::Region) {
    assert_eq!(
        hub_count(region, "events").await,
        0,
        "the hub logged an event"
    );
    assert_eq!(
        hub_count(region, "mailbox").await,
        0,
        "the hub stored an envelope"
    );
    assert_eq!(
        hub_count(region, "envelopes").await,
        0,
        "the hub recorded an envelope"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let (tmp, region) = region().await;
    let foreign = Authority::init(&tmp.path().join("foreign-authority"), "elders").unwrap();
    member::join(
        &foreign,
        &Admission {
            org_id: SCHOOL.into(),
            kind: MemberKind::School,
            name: "Impostor".into(),
            hosts: vec![],
            hub_url: region.hub_url.clone(),
            hub_name: "localhost".into(),
            listen: String::new(),
            out: tmp.path().join("impostor"),
        },
    )
    .unwrap();
    let mut link = creds(&region, SCHOOL).link;
    link.cert_pem = std::fs::read(tmp.path().join("impostor/tls/cert.pem")).unwrap();
    link.key_pem = std::fs::read(tmp.path().join("impostor/tls/key.pem")).unwrap();
    let mut impostor = overstap_proto::pb::hub_client::HubClient::new(link.channel().unwrap());
    let err = impostor
        .get_directory(GetDirectoryRequest { known_version: 0 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "expected a transport failure, got {err:?}"
    );
    // The genuine school, same request, same hub: answered.
    let mut genuine = hub_client(&creds(&region, SCHOOL));
    assert!(
        genuine
            .get_directory(GetDirectoryRequest { known_version: 0 })
            .await
            .unwrap()
            .into_inner()
            .directory
            .is_some()
    );
    nothing_stored_at_hub(&region).await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_member_cannot_send_in_another_members_name() {
    let (_tmp, region) = region().await;
    // The mbo holds the school's signing key (stolen), but connects with its own certificate.
    let mut stolen = creds(&region, SCHOOL);
    let mbo = creds(&region, MBO);
    stolen.link = mbo.link.clone();
    let env = status_envelope(&stolen, &member(&region, GEMEENTE));
    let err = hub_client(&stolen).send(env).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        "certificate belongs to 30RT, but the envelope claims to be from 25LP"
    );
    nothing_stored_at_hub(&region).await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn tampered_envelopes_are_refused_with_a_reason_and_nothing_is_stored() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut hub = hub_client(&school);
    let good = status_envelope(&school, &member(&region, MBO));

    let mut body = good.clone();
    body.body[40] ^= 1;
    let err = hub.send(body).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("body does not match the SHA-256"),
        "{}",
        err.message()
    );

    let mut header = good.clone();
    let h = header.header.as_mut().unwrap();
    let mut decoded: EnvelopeHeader = decode_body(Domain::EnvelopeHeader, h).unwrap();
    decoded.to_org = GEMEENTE.into();
    h.body = decoded.encode_to_vec();
    let err = hub.send(header).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("does not verify"),
        "{}",
        err.message()
    );

    let mut sig = good.clone();
    sig.header.as_mut().unwrap().sigs[0].signature[10] ^= 1;
    let err = hub.send(sig).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let mut unsigned = good.clone();
    unsigned.header.as_mut().unwrap().sigs.clear();
    let err = hub.send(unsigned).await.unwrap_err();
    assert!(
        err.message()
            .contains("missing signature on envelope header"),
        "{}",
        err.message()
    );

    let err = hub
        .send(Envelope {
            header: None,
            body: good.body.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "envelope has no header");

    nothing_stored_at_hub(&region).await;
    assert_eq!(node_count(&region, MBO, "processed").await, 0);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_replayed_envelope_gets_the_same_receipt_and_is_imported_once() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut hub = hub_client(&school);
    let sam = student(&region, &birth_month(17), None).await;
    let g = raw_grant(
        &sam.wallet,
        MBO,
        &["wie-ben-ik"],
        "intake",
        now() - 60,
        now() + 86_400,
        None,
    );
    let env = package_envelope(&region, &school, MBO, &sam, &g, &["wie-ben-ik"], "intake");
    let first = hub.send(env.clone()).await.unwrap().into_inner();
    let second = hub.send(env.clone()).await.unwrap().into_inner();
    assert_eq!(first, second, "a replay gets the very same signed receipt");
    let mut mbo = region.api(MBO).await.unwrap();
    eventually("the package arrives", || {
        let mut mbo = mbo.clone();
        async move {
            mbo.status(NodeStatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .inbox_count
                == 1
        }
    })
    .await;
    eventually("the delivery is acknowledged", || async {
        hub_count(&region, "mailbox").await == 0
    })
    .await;
    let third = hub.send(env).await.unwrap().into_inner();
    assert_eq!(
        first, third,
        "a replay after delivery gets the same receipt too"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        hub_envelopes_from(&region, SCHOOL).await,
        1,
        "the replay was not stored again"
    );
    assert_eq!(
        mbo.status(NodeStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .inbox_count,
        1
    );
    assert_eq!(node_count(&region, MBO, "processed").await, 1);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_protobuf_gets_invalid_argument() {
    let (_tmp, region) = region().await;
    let channel = creds(&region, SCHOOL).link.channel().unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/overstap.v1.Hub/Send");
    let err = grpc
        .unary(
            tonic::Request::new(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("malformed protobuf message"),
        "{}",
        err.message()
    );
    nothing_stored_at_hub(&region).await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_envelope_gets_resource_exhausted() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut env = status_envelope(&school, &member(&region, MBO));
    // A properly signed header for a body one byte over the 1 MiB limit.
    env.body = vec![7u8; overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES + 1];
    let mut header: EnvelopeHeader =
        decode_body(Domain::EnvelopeHeader, env.header.as_ref().unwrap()).unwrap();
    header.body_len = env.body.len() as u64;
    header.body_sha256 = <sha2::Sha256 as sha2::Digest>::digest(&env.body).to_vec();
    env.header = Some(sign_message(
        Domain::EnvelopeHeader,
        &header,
        &[&school.signing],
    ));
    let err = hub_client(&school).send(env).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        "envelope too large: body of 1048577 bytes is over the limit of 1048576 bytes"
    );
    nothing_stored_at_hub(&region).await;
    region.shutdown().await.unwrap();
}

/// A message past the transport limit (four times the envelope limit) is refused as it arrives,
/// before it is buffered whole, with `OUT_OF_RANGE` and both sizes; nothing is stored.
#[tokio::test]
async fn a_message_past_the_transport_limit_gets_out_of_range() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut env = status_envelope(&school, &member(&region, MBO));
    env.body = vec![7u8; 4 * overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES + 1];
    let err = hub_client(&school).send(env).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "the limit is: {} bytes",
            4 * overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES
        )),
        "{}",
        err.message()
    );
    nothing_stored_at_hub(&region).await;
    // The connection stays usable for what fits.
    hub_client(&school)
        .send(status_envelope(&school, &member(&region, MBO)))
        .await
        .expect("an envelope within the limits goes");
    region.shutdown().await.unwrap();
}

/// Sends and receives raw bytes, to put malformed messages on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let v = bytes::Buf::chunk(src).to_vec();
        bytes::Buf::advance(src, v.len());
        Ok(Some(v))
    }
}

/// `SendBatch` takes its envelopes one by one, as `Send` takes each, in the order sent: a
/// tampered one gets the answer `Send` gives it, the one before it is stored, and the batch
/// stops there (nothing overtakes an envelope its sender may send again); a batch over the limit
/// is refused whole; and a full mailbox stops the batch where it fills, with the time to wait.
/// The hub checks the header signatures of a call together, in one batch. A forged one fails
/// the batch; each envelope is then checked alone: the one before it is routed, the forged one
/// gets the answer `Send` gives it, and the one after it is not looked at.
#[tokio::test]
async fn a_forged_header_in_a_batch_gets_the_answer_it_gets_alone() {
    let (_tmp, mut region) = region().await;
    region.stop_node(MBO).await.unwrap();
    let school = creds(&region, SCHOOL);
    let mbo = member(&region, MBO);
    let mut hub = hub_client(&school);
    let first = status_envelope(&school, &mbo);
    let mut forged = status_envelope(&school, &mbo);
    forged.header.as_mut().unwrap().sigs[0].signature[3] ^= 1;
    let third = status_envelope(&school, &mbo);
    let results = hub
        .send_batch(SendBatchRequest {
            envelopes: vec![first.clone(), forged.clone(), third],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "the third was not looked at: {results:?}");
    assert!(results[0].receipt.is_some());
    let single = hub.send(forged).await.unwrap_err();
    assert_eq!(results[1].receipt, None);
    assert_eq!(results[1].code, single.code() as i32);
    assert_eq!(results[1].message, single.message());
    assert!(
        results[1].message.contains("does not verify"),
        "{results:?}"
    );
    let first_id =
        decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, first.header.as_ref().unwrap())
            .unwrap()
            .envelope_id;
    assert_eq!(hub_mailbox(&region, MBO).await, vec![first_id]);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_batch_is_answered_envelope_by_envelope_in_the_order_sent() {
    let (_tmp, mut region) = region().await;
    // The mbo is away, so its mailbox keeps what arrives.
    region.stop_node(MBO).await.unwrap();
    let school = creds(&region, SCHOOL);
    let mbo = member(&region, MBO);
    let mut hub = hub_client(&school);
    let first = status_envelope(&school, &mbo);
    let mut tampered = status_envelope(&school, &mbo);
    tampered.body[40] ^= 1;
    let third = status_envelope(&school, &mbo);
    let results = hub
        .send_batch(SendBatchRequest {
            envelopes: vec![first.clone(), tampered.clone(), third.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "the third was not looked at: {results:?}");
    let single = hub.send(tampered).await.unwrap_err();
    assert_eq!(results[1].receipt, None);
    assert_eq!(results[1].code, single.code() as i32);
    assert_eq!(results[1].message, single.message());
    assert!(
        results[1]
            .message
            .contains("body does not match the SHA-256")
    );
    let id = |e: &Envelope| {
        decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, e.header.as_ref().unwrap())
            .unwrap()
            .envelope_id
    };
    let again = hub
        .send_batch(SendBatchRequest {
            envelopes: vec![third.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    for (result, sent) in [(&results[0], &first), (&again[0], &third)] {
        assert_eq!(result.code, 0);
        let receipt: overstap_proto::pb::Receipt =
            decode_body(Domain::Receipt, result.receipt.as_ref().expect("a receipt")).unwrap();
        assert_eq!(receipt.envelope_id, id(sent));
    }
    assert_eq!(
        hub_mailbox(&region, MBO).await,
        vec![id(&first), id(&third)]
    );

    // Over the limit: refused whole, nothing stored.
    let err = hub
        .send_batch(SendBatchRequest {
            envelopes: (0..65).map(|_| status_envelope(&school, &mbo)).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "a batch holds at most 64 envelopes, not 65");
    assert_eq!(hub_mailbox(&region, MBO).await.len(), 2);

    // A mailbox with room for one more: the batch stops at the envelope that does not fit.
    region
        .set_hub_limits(overstap_hub::limits::Limits {
            mailbox_quota: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut hub = hub_client(&school);
    let more: Vec<Envelope> = (0..3).map(|_| status_envelope(&school, &mbo)).collect();
    let results = hub
        .send_batch(SendBatchRequest {
            envelopes: more.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2, "the third was not looked at: {results:?}");
    assert!(results[0].receipt.is_some());
    assert_eq!(results[1].code, Code::ResourceExhausted as i32);
    assert_eq!(results[1].limit, "mailbox_full");
    assert_eq!(results[1].retry_after, 60);
    assert_eq!(
        hub_mailbox(&region, MBO).await,
        vec![id(&first), id(&third), id(&more[0])]
    );
    region.shutdown().await.unwrap();
}
