//! Test helpers: fixture text and fake cgroup trees in temporary directories.

use std::path::{Path, PathBuf};

/// The text of a fixture file under `cgroup/fixtures/`.
pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies every cgroup file of a fixture directory (not the proc-* captures) into `dest`.
pub(crate) fn copy_fixture_dir(name: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        if !name.starts_with("proc-") && !name.starts_with("root-") && name != "uname-r" {
            std::fs::copy(entry.path(), dest.join(&*name)).unwrap();
        }
    }
}

/// A temporary directory tree standing in for /sys/fs/cgroup.
pub(crate) struct FakeTree {
    dir: tempfile::TempDir,
}

impl FakeTree {
    pub(crate) fn new() -> Self {
        FakeTree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}
