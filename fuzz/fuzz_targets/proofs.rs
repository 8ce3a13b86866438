//! Inclusion and consistency proofs as a node checks them, with any sizes, indexes and hashes
//! the hub could send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overstap_proto::log::{Hash, check_consistency, check_inclusion, hashes_from_bytes};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n = |b: u8| u64::from(b);
    let (size, index, old, new) = (n(data[0]), n(data[1]), n(data[2]), n(data[3]));
    let rest = &data[4..];
    let hashes: Vec<Vec<u8>> = rest.chunks(32).map(<[u8]>::to_vec).collect();
    let Ok(proof) = hashes_from_bytes(&hashes) else {
        return;
    };
    let root = Hash([rest.first().copied().unwrap_or(0); 32]);
    let _ = check_inclusion(&proof, size, root, index, Hash([1; 32]));
    let _ = check_consistency(&proof, new, root, old, Hash([2; 32]));
    // Sizes far beyond any tree.
    let _ = check_inclusion(&proof, u64::MAX - size, root, u64::MAX - index - 1, root);
    let _ = check_consistency(&proof, u64::MAX, root, u64::MAX - old, root);
});
