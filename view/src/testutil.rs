//! Fixture access for renderer tests (the fixtures live in the cgroup crate).

use std::path::Path;

/// Text of a fixture under `cgroup/fixtures/`.
pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cgroup/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
