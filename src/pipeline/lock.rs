//! One writer per run folder: an advisory lock on `<run>/.lock` (`flock`, which the OS
//! releases when the process exits, crashes or is killed), holding the owner's process id.
//! Two `distill` runs on one folder would otherwise interleave their stage commits.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Run folders this process holds (a second `acquire` of one of them is a no-op).
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Takes the run folder's lock for the rest of the process. With `wait`, blocks until the
/// other writer is done; without it, a held folder is an error naming the process that holds it.
pub fn acquire(run_dir: &Path, wait: bool) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let key = run_dir.canonicalize().map_err(|e| Error::io(run_dir, e))?;
    let mut held = HELD.lock().expect("lock registry is not poisoned");
    let held = held.get_or_insert_with(HashSet::new);
    if held.contains(&key) {
        return Ok(());
    }
    let path = run_dir.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) if wait => {
            tracing::info!("{} is in use by process {}; waiting", run_dir.display(), owner(&mut file));
            file.lock().map_err(|e| Error::io(&path, e))?;
        }
        Err(TryLockError::WouldBlock) => {
            return Err(Error::Conflict {
                path: run_dir.to_path_buf(),
                message: format!(
                    "is in use by process {} (another lightgen run); wait for it to finish, or pass --wait",
                    owner(&mut file)
                ),
            })
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0).and_then(|_| file.seek(SeekFrom::Start(0))).map_err(|e| Error::io(&path, e))?;
    write!(file, "{}", std::process::id()).and_then(|_| file.flush()).map_err(|e| Error::io(&path, e))?;
    std::mem::forget(file); // held until the process ends
    held.insert(key);
    Ok(())
}

/// The process id written by the lock's holder (or "unknown").
fn owner(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "unknown".into()
    } else {
        s.to_string()
    }
}
