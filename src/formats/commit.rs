//! The commit protocol every stage uses: `runs/<name>/<stage>/part-NNNNN.parquet`, written
//! under a temporary name, fsynced and renamed; then `part-NNNNN_stats.json`, written the same
//! way and last, marks the part done. A rerun skips parts whose marker matches their file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `part-00042.parquet`
pub fn part_name(k: u64) -> String {
    format!("part-{k:05}.parquet")
}

/// `part-00042_stats.json`
pub fn stats_name(k: u64) -> String {
    format!("part-{k:05}_stats.json")
}

/// The done-marker of one part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartStats {
    pub part: u64,
    pub rows: u64,
    pub bytes: u64,
    /// blake3 (hex) of the part file.
    pub blake3: String,
    /// Hash of the plan that wrote it.
    pub plan: String,
    /// Stage-specific counts.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A file being written under a temporary name; [`AtomicFile::commit`] makes it appear.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = dest.with_file_name(name);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile { tmp, dest: dest.to_path_buf(), file })
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// fsync, rename over the destination, fsync the directory.
    pub fn commit(self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(self.file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        if let Some(dir) = self.dest.parent() {
            // Directory fsync makes the rename durable; not every filesystem allows it.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.file().write_all(bytes).map_err(|e| Error::io(dest, e))?;
    f.commit()
}

/// blake3 (hex) and size of a file.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut h = blake3::Hasher::new();
    let mut f = File::open(path)?;
    let n = io::copy(&mut f, &mut h)?;
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Commits part `k`'s marker after its file; returns the stats written.
pub fn commit_part(dir: &Path, k: u64, rows: u64, plan: &str, extra: serde_json::Value) -> Result<PartStats> {
    let path = dir.join(part_name(k));
    let (blake3, bytes) = hash_file(&path).map_err(|e| Error::io(&path, e))?;
    let stats = PartStats { part: k, rows, bytes, blake3, plan: plan.to_string(), extra };
    let json = serde_json::to_vec_pretty(&stats).expect("stats serialise");
    write_atomic(&dir.join(stats_name(k)), &json)?;
    Ok(stats)
}

/// Part `k`'s stats if it is done: marker present, written by this plan, and the file's
/// size and hash match it. Anything else means the part must be (re)written.
pub fn done_part(dir: &Path, k: u64, plan: &str) -> Option<PartStats> {
    let text = fs::read(dir.join(stats_name(k))).ok()?;
    let stats: PartStats = serde_json::from_slice(&text).ok()?;
    if stats.plan != plan || stats.part != k {
        return None;
    }
    let (hash, bytes) = hash_file(&dir.join(part_name(k))).ok()?;
    (hash == stats.blake3 && bytes == stats.bytes).then_some(stats)
}

/// The marker of a committed part, given the part's path.
pub fn read_stats(part: &Path) -> Result<PartStats> {
    let path =
        part.with_file_name(part.file_name().unwrap_or_default().to_string_lossy().replace(".parquet", "_stats.json"));
    let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(path.display().to_string(), format!("unreadable part marker: {e}")))
}

/// Removes temporary files left by a killed writer.
pub fn clean_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(".tmp-") {
            fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

/// The committed parts of a stage folder, in order.
pub fn committed_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parts: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("part-") && name.ends_with(".parquet")
        })
        .filter(|p| {
            p.with_file_name(p.file_name().unwrap_or_default().to_string_lossy().replace(".parquet", "_stats.json"))
                .exists()
        })
        .collect();
    parts.sort();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_order() {
        assert_eq!(part_name(7), "part-00007.parquet");
        assert_eq!(stats_name(123456), "part-123456_stats.json");
        assert!(part_name(9) < part_name(10));
    }

    #[test]
    fn marker_is_checked_against_file_and_plan() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join(part_name(0)), b"hello").unwrap();
        assert!(done_part(dir.path(), 0, "p").is_none(), "no marker yet");
        commit_part(dir.path(), 0, 1, "p", serde_json::Value::Null).unwrap();
        assert_eq!(done_part(dir.path(), 0, "p").unwrap().rows, 1);
        assert!(done_part(dir.path(), 0, "other-plan").is_none());
        fs::write(dir.path().join(part_name(0)), b"hellO").unwrap();
        assert!(done_part(dir.path(), 0, "p").is_none(), "a changed file is not done");
    }

    #[test]
    fn temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let f = AtomicFile::create(&dir.path().join("x.json")).unwrap();
        let tmp = f.path().to_path_buf();
        drop(f);
        assert!(tmp.exists());
        clean_temporaries(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert!(!dir.path().join("x.json").exists());
    }
}
