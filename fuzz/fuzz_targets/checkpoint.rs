//! Checkpoints as nodes and the hub read them: signed-note parsing, the hub's signature,
//! witness cosignatures, and merging cosignature lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overstap_fuzz::fixture;
use overstap_proto::log::{checkpoint_claims, cosignatures, verify_checkpoint, with_cosignatures};

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let hub = f.hub.verifying_key();
    let _ = checkpoint_claims(data);
    let _ = verify_checkpoint(data, "fuzz", &hub, "HUB");
    let _ = cosignatures(
        data,
        &hub,
        "HUB",
        &[("RMC01".into(), f.school.verifying_key())],
    );
    if let Some(at) = data.iter().position(|b| *b == 0) {
        let (note, line) = data.split_at(at);
        let _ = with_cosignatures(note, &[line[1..].to_vec()]);
    }
});
