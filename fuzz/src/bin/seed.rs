//! Writes the seed inputs into `corpus/<target>/` (run from the fuzz folder).

use std::io::Write;

fn main() -> std::io::Result<()> {
    for (target, bytes) in overstap_fuzz::seeds() {
        let dir = std::path::Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        let name = format!("seed-{:016x}", fnv(&bytes));
        std::fs::File::create(dir.join(&name))?.write_all(&bytes)?;
        println!("{target}/{name}");
    }
    Ok(())
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100000001b3)
    })
}
