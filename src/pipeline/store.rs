//! The storage layer under a distributed run: one run folder in a local directory or in
//! object storage (`s3://`, `gs://`, `az://`), through the `object_store` crate.
//!
//! Stages work on a local copy of the run folder (a scratch directory) and publish each part
//! through [`Store::publish_part`]: the data file first (multipart above [`MULTIPART_BYTES`]),
//! then its stats marker, so a part is visible to others exactly when it is complete — the same
//! commit protocol as [`crate::formats::commit`]. Credentials come from the standard
//! environment variables of each cloud (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …) and are never printed: only the
//! URL without user info or query is.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::error::{Error, Result};
use crate::formats::commit::{self, PartStats};

/// Files larger than this are uploaded in parts (`LIGHTGEN_MULTIPART_BYTES` overrides it).
pub const MULTIPART_BYTES: u64 = 16 << 20;

fn multipart_bytes() -> u64 {
    std::env::var("LIGHTGEN_MULTIPART_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(MULTIPART_BYTES)
}
/// Size of each uploaded part (S3 needs ≥ 5 MiB for all but the last).
const CHUNK_BYTES: usize = 8 << 20;
/// Requests in flight at once when many small objects are read.
pub const CONCURRENCY: usize = 16;

/// A run folder in storage.
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.shown)
    }
}

/// Transient failures (timeouts, 429, 5xx, dropped connections) are retried with
/// exponential back-off for up to three minutes per request.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// `scheme://bucket/prefix` → (scheme, bucket, prefix); `None` for a local path.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // user info never reaches a log line
    let bucket = bucket.rsplit('@').next().unwrap_or(bucket);
    Some((scheme, bucket, prefix.trim_matches('/')))
}

impl Store {
    /// Opens `url`: `s3://bucket/prefix`, `gs://…`, `az://container/prefix`, `file:///dir` or a
    /// plain directory (created if missing).
    pub fn open(url: &str) -> Result<Store> {
        let bad = |m: String| Error::invalid(format!("--store {}", shown(url)), m);
        let (inner, prefix): (Arc<dyn ObjectStore>, String) = match split_url(url) {
            None | Some(("file", _, _)) => {
                let dir = url.strip_prefix("file://").unwrap_or(url);
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), String::new())
            }
            Some((scheme, bucket, prefix)) => {
                if bucket.is_empty() {
                    return Err(bad("expected scheme://bucket/prefix".into()));
                }
                let base = format!("{scheme}://{bucket}");
                let s: Arc<dyn ObjectStore> = match scheme {
                    "s3" | "s3a" => Arc::new(
                        object_store::aws::AmazonS3Builder::from_env()
                            .with_url(base)
                            .with_retry(retry())
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    "gs" => Arc::new(
                        object_store::gcp::GoogleCloudStorageBuilder::from_env()
                            .with_url(base)
                            .with_retry(retry())
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    "az" | "azure" | "abfs" | "abfss" => Arc::new(
                        object_store::azure::MicrosoftAzureBuilder::from_env()
                            .with_url(base)
                            .with_retry(retry())
                            .build()
                            .map_err(|e| bad(e.to_string()))?,
                    ),
                    other => {
                        return Err(bad(format!("unknown scheme '{other}': expected s3://, gs://, az:// or a path")))
                    }
                };
                (s, prefix.to_string())
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::invalid("store", format!("cannot start the I/O runtime: {e}")))?;
        Ok(Store { inner, prefix, shown: shown(url), rt })
    }

    /// The URL as it may be printed (no credentials).
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn err(&self, rel: &str, e: object_store::Error) -> Error {
        Error::invalid(format!("{}/{rel}", self.shown), e.to_string())
    }

    /// The object's bytes, or `None` if there is none.
    pub fn get(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        self.rt.block_on(self.get_async(rel))
    }

    async fn get_async(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        match self.inner.get(&self.key(rel)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.err(rel, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Writes a small object in one request (an object appears whole or not at all).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(rel);
        self.rt.block_on(self.inner.put(&key, PutPayload::from(bytes))).map(|_| ()).map_err(|e| self.err(rel, e))
    }

    /// Uploads a local file; large ones in [`CHUNK_BYTES`] parts, completed only at the end.
    pub fn upload(&self, rel: &str, local: &Path) -> Result<()> {
        self.rt.block_on(self.upload_async(rel, local))
    }

    async fn upload_async(&self, rel: &str, local: &Path) -> Result<()> {
        let size = std::fs::metadata(local).map_err(|e| Error::io(local, e))?.len();
        let key = self.key(rel);
        if size <= multipart_bytes() {
            let bytes = std::fs::read(local).map_err(|e| Error::io(local, e))?;
            return self.inner.put(&key, PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| self.err(rel, e));
        }
        let upload = self.inner.put_multipart(&key).await.map_err(|e| self.err(rel, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK_BYTES);
        let mut f = std::fs::File::open(local).map_err(|e| Error::io(local, e))?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(local, e))?;
            if n == 0 {
                break;
            }
            // bounded memory: at most 4 parts in flight
            w.wait_for_capacity(4).await.map_err(|e| self.err(rel, e))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map(|_| ()).map_err(|e| self.err(rel, e))
    }

    /// Uploads (key, local file) pairs, [`CONCURRENCY`] at a time.
    fn upload_many(&self, files: &[(String, std::path::PathBuf)]) -> Result<()> {
        self.rt.block_on(async {
            let mut s = futures_util::stream::iter(files.iter().map(|(k, p)| self.upload_async(k, p)))
                .buffer_unordered(CONCURRENCY);
            while let Some(r) = s.next().await {
                r?;
            }
            Ok(())
        })
    }

    /// Downloads an object to a local file atomically; `false` if there is none.
    pub fn download(&self, rel: &str, local: &Path) -> Result<bool> {
        self.rt.block_on(self.download_async(rel, local))
    }

    async fn download_async(&self, rel: &str, local: &Path) -> Result<bool> {
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let r = match self.inner.get(&self.key(rel)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err(rel, e)),
        };
        let mut out = commit::AtomicFile::create(local)?;
        let mut stream = r.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err(rel, e))?;
            out.file().write_all(&chunk).map_err(|e| Error::io(local, e))?;
        }
        out.commit()?;
        Ok(true)
    }

    /// Names (relative to `dir`) of the objects directly or deeper under `dir`, sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let key = self.key(dir);
        let base = format!("{}/", key.as_ref());
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut s = self.inner.list(Some(&key));
            while let Some(meta) = s.next().await {
                let meta = meta.map_err(|e| self.err(dir, e))?;
                if let Some(name) = meta.location.as_ref().strip_prefix(&base) {
                    out.push(name.to_string());
                }
            }
            out.sort();
            Ok(out)
        })
    }

    /// Part `k`'s marker under stage folder `dir`, if it is committed by `plan`.
    pub fn part_stats(&self, dir: &str, k: u64, plan: &str) -> Result<Option<PartStats>> {
        self.rt.block_on(self.part_stats_async(dir, k, plan))
    }

    async fn part_stats_async(&self, dir: &str, k: u64, plan: &str) -> Result<Option<PartStats>> {
        let rel = format!("{dir}/{}", commit::stats_name(k));
        let Some(bytes) = self.get_async(&rel).await? else {
            return Ok(None);
        };
        let st: PartStats = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("{}/{rel}", self.shown), format!("unreadable part marker: {e}")))?;
        Ok((st.plan == plan && st.part == k).then_some(st))
    }

    /// [`Store::part_stats`] of many parts, [`CONCURRENCY`] requests at a time, in order.
    pub fn parts_stats(&self, dir: &str, parts: &[u64], plan: &str) -> Result<Vec<Option<PartStats>>> {
        self.rt.block_on(async {
            futures_util::stream::iter(parts.iter().map(|&k| self.part_stats_async(dir, k, plan)))
                .buffered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    /// Publishes a committed local part: its file, then its marker (which makes it visible).
    pub fn publish_part(&self, local_dir: &Path, dir: &str, k: u64) -> Result<()> {
        self.upload(&format!("{dir}/{}", commit::part_name(k)), &local_dir.join(commit::part_name(k)))?;
        self.upload(&format!("{dir}/{}", commit::stats_name(k)), &local_dir.join(commit::stats_name(k)))
    }

    /// Fetches a published part into `local_dir` unless the local copy is already done;
    /// `false` if the store has no such part from `plan`.
    pub fn fetch_part(&self, dir: &str, k: u64, plan: &str, local_dir: &Path) -> Result<bool> {
        self.rt.block_on(self.fetch_part_async(dir, k, plan, local_dir))
    }

    /// [`Store::fetch_part`] of many parts, [`CONCURRENCY`] at a time.
    pub fn fetch_parts(&self, dir: &str, parts: &[u64], plan: &str, local_dir: &Path) -> Result<Vec<bool>> {
        self.rt.block_on(async {
            futures_util::stream::iter(parts.iter().map(|&k| self.fetch_part_async(dir, k, plan, local_dir)))
                .buffered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    async fn fetch_part_async(&self, dir: &str, k: u64, plan: &str, local_dir: &Path) -> Result<bool> {
        if commit::done_part(local_dir, k, plan).is_some() {
            return Ok(true);
        }
        // data first, marker last, as when it was written; a part published without its
        // marker (its writer was killed in between) is not there
        let (data, marker) = (commit::part_name(k), commit::stats_name(k));
        if !self.download_async(&format!("{dir}/{data}"), &local_dir.join(&data)).await? {
            return Ok(false);
        }
        let local_marker = local_dir.join(&marker);
        if !self.download_async(&format!("{dir}/{marker}"), &local_marker).await? {
            return Ok(false);
        }
        let ours = std::fs::read(&local_marker)
            .ok()
            .and_then(|b| serde_json::from_slice::<PartStats>(&b).ok())
            .is_some_and(|st| st.plan == plan);
        if !ours {
            std::fs::remove_file(&local_marker).map_err(|e| Error::io(&local_marker, e))?;
            return Ok(false);
        }
        if commit::done_part(local_dir, k, plan).is_none() {
            return Err(Error::Conflict {
                path: local_dir.join(commit::part_name(k)),
                message: format!(
                    "the copy fetched from {}/{dir} does not match its marker (size or blake3)",
                    self.shown
                ),
            });
        }
        Ok(true)
    }

    /// Uploads the files under `local` (recursively) that `keep` accepts to `dir`, markers
    /// and summaries last.
    pub fn publish_tree(&self, local: &Path, dir: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
        let mut files = Vec::new();
        walk(local, local, &mut files)?;
        files.retain(|f| keep(f));
        let key = |rel: &String| if dir.is_empty() { rel.clone() } else { format!("{dir}/{rel}") };
        // all the data, then the files that declare it done
        let (markers, data): (Vec<String>, Vec<String>) = files.into_iter().partition(|f| is_marker(f));
        self.upload_many(&data.iter().map(|f| (key(f), local.join(f))).collect::<Vec<_>>())?;
        self.upload_many(&markers.iter().map(|f| (key(f), local.join(f))).collect::<Vec<_>>())
    }
}

fn is_marker(rel: &str) -> bool {
    rel.ends_with("_stats.json")
        || rel.ends_with("summary.json")
        || rel.ends_with(".done.json")
        || rel == "manifest.json"
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if !e.file_name().to_string_lossy().contains(".tmp-") {
            out.push(p.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// A URL without user info, query or fragment.
fn shown(url: &str) -> String {
    match split_url(url) {
        Some((scheme, bucket, prefix)) if prefix.is_empty() => format!("{scheme}://{bucket}"),
        Some((scheme, bucket, prefix)) => format!("{scheme}://{bucket}/{prefix}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_shown_without_credentials() {
        assert_eq!(split_url("s3://b/runs/x/"), Some(("s3", "b", "runs/x")));
        assert_eq!(split_url("gs://b"), Some(("gs", "b", "")));
        assert_eq!(split_url("/tmp/x"), None);
        assert_eq!(shown("s3://key:secret@bucket/p?token=abc"), "s3://bucket/p");
        assert!(Store::open("ftp://b/x").unwrap_err().to_string().contains("unknown scheme 'ftp'"));
    }

    #[test]
    fn parts_round_trip_through_a_directory_store() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("store").to_str().unwrap()).unwrap();
        let local = root.path().join("a");
        std::fs::create_dir_all(&local).unwrap();
        commit::write_atomic(&local.join(commit::part_name(3)), b"part three").unwrap();
        assert_eq!(store.part_stats("gen", 3, "p").unwrap(), None);
        commit::commit_part(&local, 3, 1, "p", serde_json::Value::Null).unwrap();
        store.publish_part(&local, "gen", 3).unwrap();
        assert_eq!(store.part_stats("gen", 3, "p").unwrap().unwrap().rows, 1);
        assert_eq!(store.part_stats("gen", 3, "other").unwrap(), None, "another plan's part is not ours");
        assert_eq!(store.list("gen").unwrap(), vec![commit::part_name(3), commit::stats_name(3)]);
        let other = root.path().join("b");
        assert!(store.fetch_part("gen", 3, "p", &other).unwrap());
        assert_eq!(std::fs::read(other.join(commit::part_name(3))).unwrap(), b"part three");
        assert!(!store.fetch_part("gen", 4, "p", &other).unwrap());
        // a corrupted object is caught against its marker
        store.put(&format!("gen/{}", commit::part_name(3)), b"part thre3".to_vec()).unwrap();
        let third = root.path().join("c");
        assert!(store.fetch_part("gen", 3, "p", &third).unwrap_err().to_string().contains("does not match"));
    }

    #[test]
    fn large_files_go_up_in_parts_and_come_back_whole() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path().join("s").to_str().unwrap()).unwrap();
        let big: Vec<u8> = (0..(MULTIPART_BYTES as usize + 3_000_000)).map(|i| (i * 7 % 251) as u8).collect();
        let src = root.path().join("big.bin");
        std::fs::write(&src, &big).unwrap();
        store.upload("x/big.bin", &src).unwrap();
        let back = root.path().join("back.bin");
        assert!(store.download("x/big.bin", &back).unwrap());
        assert_eq!(std::fs::read(&back).unwrap(), big);
    }
}
