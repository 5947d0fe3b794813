//! Helpers shared by the end-to-end tests.

use std::path::Path;

/// A copy of the shipped `recordings/<name>` in a temp folder: replay writes
/// its outputs beside the scenario.
pub fn shipped(name: &str) -> tempfile::TempDir {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recordings")
        .join(name);
    let work = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let f = f.expect("entry").path();
        std::fs::copy(&f, work.path().join(f.file_name().expect("name"))).expect("copy");
    }
    work
}
