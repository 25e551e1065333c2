//! Writes the golden vectors to `testdata/vectors/` and the fuzz seed corpus to
//! `fuzz/corpus/<target>/`. Run from anywhere:
//!
//! ```text
//! cargo run -p b3iq-core --example gen-vectors
//! ```
//!
//! `cargo test -p b3iq-core --test vectors` fails if the committed files differ from what
//! this writes.

#[path = "../tests/support/vectors_gen.rs"]
mod vectors_gen;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("testdata").join("vectors");
    std::fs::create_dir_all(&dir)?;
    let (files, seeds) = vectors_gen::generate_with_seeds();
    for (name, content) in &files {
        std::fs::write(dir.join(name), content)?;
        println!("wrote testdata/vectors/{name}");
    }
    for (target, name, bytes) in &seeds {
        let d = root.join("fuzz").join("corpus").join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("seed-{name}")), bytes)?;
    }
    println!("wrote {} fuzz seeds under fuzz/corpus/", seeds.len());
    Ok(())
}
