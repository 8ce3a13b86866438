//! A passport package as a recipient node checks it: the card, the grant, the manifest and the
//! selective disclosures against the manifest's salted digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overstap_fuzz::{NOW, fixture};
use overstap_proto::consent::verify_grant;
use overstap_proto::passport::{verify_card, verify_disclosures, verify_manifest};
use overstap_proto::pb::{Disclosure, Manifest, Package};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(p) = Package::decode(data) {
        if let Some(card) = p.card.as_ref() {
            let _ = verify_card(card, &f.school.verifying_key());
        }
        if let Some(grant) = p.grant.as_ref() {
            let _ = verify_grant(grant, &f.card, NOW);
        }
        if let Some(manifest) = p.manifest.as_ref()
            && let Ok(m) = verify_manifest(manifest, &f.card, NOW)
        {
            let _ = verify_disclosures(&m, &p.sections);
        }
    }
    // The disclosures against any manifest (the signature is the manifest's only guard).
    if let Some((split, rest)) = data.split_first() {
        let at = (*split as usize).min(rest.len());
        let (m, d) = rest.split_at(at);
        if let (Ok(manifest), Ok(package)) = (Manifest::decode(m), Package::decode(d)) {
            let disclosures: Vec<Disclosure> = package.sections;
            let _ = verify_disclosures(&manifest, &disclosures);
        }
    }
});
