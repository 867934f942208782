//! Folders for one test's files, removed when it ends.

use std::path::{Path, PathBuf};

use crate::Result;

/// A new, empty folder under the target directory (`target/tmp/<what>-<ulid>`),
/// removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates the folder; `what` names it for whoever finds one left behind.
    pub fn new(what: &str) -> Result<Self> {
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let dir = crate::build::target_dir()
            .join("tmp")
            .join(format!("{what}-{id}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_folder_is_new_and_gone_with_its_files_when_dropped() {
        let (a, b) = (ScratchDir::new("t").unwrap(), ScratchDir::new("t").unwrap());
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        std::fs::write(a.path().join("f"), "x").unwrap();
        let kept = a.path().to_path_buf();
        drop(a);
        assert!(!kept.exists());
    }
}
