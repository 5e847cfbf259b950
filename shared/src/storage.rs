//! The storage root on local disk: `<root>/<source>/<id>.<ext>` for downloads,
//! `<root>/concat/<id>.<ext>` for merged images.
//!
//! Every write goes to a hidden temporary name in the same folder
//! (`.<name>.<random>.tmp`), is flushed to disk, then renamed over the final
//! name, and the folder is synced: a reader never sees half a file, and a crash
//! leaves at most a temporary file, which no lookup mistakes for a finished one
//! and [`Storage::remove_stale_temp_files`] deletes.
//!
//! All calls block: call them from a blocking pool, never on an event loop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::ids::{ImageId, StoragePath};
use crate::image_kind::ImageKind;

const TEMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn absolute(&self, path: &StoragePath) -> PathBuf {
        self.root.join(path.as_str())
    }

    /// Writes `bytes` at `path` atomically (see the module doc).
    pub fn write_atomic(&self, path: &StoragePath, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.absolute(path);
        let dir = target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating folder", &dir, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            ".{name}.{}{TEMP_SUFFIX}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let mut file =
                fs::File::create(&temp).map_err(|e| StoreError::io("creating", &temp, e))?;
            file.write_all(bytes)
                .map_err(|e| StoreError::io("writing", &temp, e))?;
            file.sync_all()
                .map_err(|e| StoreError::io("syncing", &temp, e))?;
            fs::rename(&temp, &target).map_err(|e| StoreError::io("renaming into", &target, e))?;
            // The rename is durable only once the folder itself is synced.
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io("syncing folder", &dir, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// The finished file stored for `id` in `folder`, whatever its extension
    /// (the newest, should there be several). A few `stat`s, not a listing:
    /// resuming a run of N rows costs O(N).
    pub fn find(&self, folder: &str, id: &ImageId) -> Result<Option<StoragePath>, StoreError> {
        let mut newest: Option<(std::time::SystemTime, StoragePath)> = None;
        for kind in ImageKind::ALL {
            let path = StoragePath::new(folder, id, kind.extension())?;
            let abs = self.absolute(&path);
            let modified = match fs::metadata(&abs) {
                Ok(m) if m.is_file() => m.modified().unwrap_or(std::time::UNIX_EPOCH),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("looking up", abs, e)),
            };
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
        Ok(newest.map(|(_, path)| path))
    }

    pub fn read(&self, path: &StoragePath) -> Result<Vec<u8>, StoreError> {
        let abs = self.absolute(path);
        fs::read(&abs).map_err(|e| StoreError::io("reading", abs, e))
    }

    /// Deletes temporary files in `folder` older than `older_than` (left by a
    /// crash mid-write; younger ones may belong to a write still running).
    /// Returns how many were removed.
    pub fn remove_stale_temp_files(
        &self,
        folder: &str,
        older_than: Duration,
    ) -> Result<usize, StoreError> {
        let dir = self.root.join(folder);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io("listing", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age >= older_than && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_atomic_and_findable() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path());
        let id = ImageId::parse("7").unwrap();
        assert_eq!(storage.find("src", &id).unwrap(), None);
        let path = StoragePath::new("src", &id, "png").unwrap();
        storage.write_atomic(&path, b"first").unwrap();
        storage.write_atomic(&path, b"second").unwrap();
        assert_eq!(storage.read(&path).unwrap(), b"second");
        assert_eq!(storage.find("src", &id).unwrap(), Some(path));
        let names: Vec<_> = fs::read_dir(dir.path().join("src"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["7.png"], "no temporary file left behind");
    }

    #[test]
    fn temporary_files_are_never_found_and_are_cleaned_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path());
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/.7.jpg.abc.tmp"), b"half").unwrap();
        let id = ImageId::parse("7").unwrap();
        assert_eq!(storage.find("src", &id).unwrap(), None);
        assert_eq!(
            storage
                .remove_stale_temp_files("src", Duration::from_secs(3600))
                .unwrap(),
            0
        );
        assert_eq!(
            storage
                .remove_stale_temp_files("src", Duration::ZERO)
                .unwrap(),
            1
        );
        assert!(!dir.path().join("src/.7.jpg.abc.tmp").exists());
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
