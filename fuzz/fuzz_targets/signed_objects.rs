//! Every signed object an outsider or a member can hand over: the directory, hub receipts,
//! student cards (and one card following another), consent grants, revocations, manifests and
//! dashboard tokens. The first byte picks whether the input is any bytes, or a body that a
//! key-holder signed (so the checks after the signature run too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use overstap_fuzz::{NOW, fixture};
use overstap_proto::consent::{verify_grant, verify_revocation};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::passport::{
    check_card_follows, refuse_retired_keys, verify_card, verify_manifest,
};
use overstap_proto::pb::{Receipt, Signed};
use overstap_proto::sign::{Domain, open_signed};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signed = match mode % 2 {
        0 => match Signed::decode(rest) {
            Ok(s) => s,
            Err(_) => return,
        },
        _ => {
            // Any body, signed by every key a party could hold.
            let keys = [&f.authority, &f.hub, &f.school, &f.student, &f.lost];
            let mut s = Signed {
                body: rest.to_vec(),
                sigs: vec![],
            };
            for domain in [
                Domain::Directory,
                Domain::Receipt,
                Domain::StudentCard,
                Domain::Grant,
                Domain::Revocation,
                Domain::Manifest,
            ] {
                for key in keys {
                    overstap_proto::sign::add_signature(domain, &mut s, key);
                }
            }
            s
        }
    };
    let _ = VerifiedDirectory::verify(&signed, &f.authority.verifying_key(), 0);
    let _ = open_signed::<Receipt>(Domain::Receipt, &signed, &f.hub.verifying_key());
    if let Ok(card) = verify_card(&signed, &f.school.verifying_key()) {
        // A card that came with an envelope, against the one a recipient holds, both ways.
        let _ = check_card_follows(&f.card, &card);
        let _ = check_card_follows(&card, &f.card);
    }
    let _ = refuse_retired_keys(Domain::Grant, &signed, &f.card);
    let _ = verify_grant(&signed, &f.card, NOW);
    let _ = verify_revocation(&signed, &f.card, NOW);
    let _ = verify_manifest(&signed, &f.card, NOW);
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = overstap_proto::session::verify_token(
            text,
            &f.authority.verifying_key(),
            &f.directory,
            NOW,
        );
    }
});
