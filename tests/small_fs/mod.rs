//! A small real file system for full-disk tests: a tmpfs mounted by the
//! test (root or CAP_SYS_ADMIN), filled to its last byte.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted at `at` for the test's life (unmounted on
/// drop), or why not: mounting needs root (or CAP_SYS_ADMIN).
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn mount(at: &Path, size: &str) -> Result<SmallFs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallFs(at.to_path_buf()))
    }

    /// [`SmallFs::mount`], or `None` after printing that `test` is skipped
    /// and why (no tmpfs can be mounted here).
    pub fn mount_or_skip(test: &str, at: &Path, size: &str) -> Option<SmallFs> {
        match SmallFs::mount(at, size) {
            Ok(fs) => Some(fs),
            Err(why) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs to fill ({why}); needs root or CAP_SYS_ADMIN"
                );
                None
            }
        }
    }

    /// Fill it to the last byte with `name`: writes until the file system
    /// says it is full (ENOSPC), in ever smaller pieces.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        for piece in [1 << 16, 4096, 512, 1] {
            let buf = vec![0x55u8; piece];
            loop {
                match f.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
