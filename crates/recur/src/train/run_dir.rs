//! A run owns its folder: it holds an exclusive lock on `.recur-run.lock` inside it for as long as
//! it runs (the operating system releases it when the process ends, `kill -9` included), so two
//! runs can never write into one folder. A run that fails before saving anything removes the
//! folder it created; the temporary files of a killed save are removed when the next run starts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file inside a run's folder.
pub const LOCK_FILE: &str = ".recur-run.lock";
/// The files a run writes into its folder: the checkpoints of the last and of the best
/// evaluated step, the metrics of every evaluation (one JSON object a line) and their plot.
pub const RUN_FILES: [&str; 4] = ["last.safetensors", "best.safetensors", "metrics.jsonl", "loss.svg"];

/// Whether `dir` holds a run's checkpoints.
pub fn holds_run(dir: &Path) -> bool {
    dir.join("last.safetensors").exists() || dir.join("best.safetensors").exists()
}

/// A folder this process owns until it is dropped.
///
/// ```
/// use recur::train::RunDir;
/// let base = std::env::temp_dir().join(format!("recur-doc-rundir-{}", std::process::id()));
/// let run = RunDir::claim_exact(&base.join("run"))?;
/// // While `run` lives, no other process can claim the folder.
/// assert!(run.path().join(".recur-run.lock").exists());
/// drop(run); // it saved no checkpoint, so the folders it made are gone
/// assert!(!base.exists());
/// # Ok::<(), recur::Error>(())
/// ```
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Folders this process created, the run's own last (removed if the run saves nothing).
    created: Vec<PathBuf>,
    _lock: File,
}

/// What became of an attempt to claim a folder.
enum Claim {
    Owned(RunDir),
    /// Another process holds the lock; its pid as it wrote it.
    Busy(String),
}

impl RunDir {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn claim(path: &Path) -> Result<Claim> {
        let mut created = Vec::new();
        let mut ancestor = Some(path);
        while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            created.push(dir.to_path_buf());
            ancestor = dir.parent();
        }
        created.reverse();
        std::fs::create_dir_all(path).map_err(|e| {
            Error::io("cannot create the run folder", path, e, "check the path and the permissions of its parent")
        })?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(|e| {
                Error::io("the run folder is not writable: cannot create", &lock_path, e, "pick a writable folder")
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Ok(Claim::Busy(pid.trim().to_string()));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(
                    "cannot lock",
                    &lock_path,
                    e,
                    "use a local folder whose file system supports locks",
                ))
            }
        }
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = write!(lock, "{}", std::process::id());
        let _ = lock.flush();
        Ok(Claim::Owned(RunDir { path: path.to_path_buf(), created, _lock: lock }))
    }

    /// Claims exactly `path` (creating it and its parents if need be); [`Error::FolderBusy`]
    /// while another process owns it.
    pub fn claim_exact(path: &Path) -> Result<Self> {
        match Self::claim(path)? {
            Claim::Owned(dir) => Ok(dir),
            Claim::Busy(pid) => {
                Err(Error::FolderBusy { path: path.to_path_buf(), owner: (!pid.is_empty()).then_some(pid) })
            }
        }
    }

    /// Claims the first of `base/name`, `base/name-2`, … that holds no run and that no other
    /// process owns: two runs started together take two folders.
    pub fn claim_next_free(base: &Path, name: &str) -> Result<Self> {
        for n in 1..10_000 {
            let dir = if n == 1 { base.join(name) } else { base.join(format!("{name}-{n}")) };
            if holds_run(&dir) {
                continue;
            }
            if let Claim::Owned(owned) = Self::claim(&dir)? {
                // A run may have finished there between the check and the lock.
                if !holds_run(&dir) {
                    return Ok(owned);
                }
            }
        }
        Err(Error::config(
            "RunDir",
            format!("every {}/{name}-N folder up to 9999 holds a run", base.display()),
            "name a folder of your own",
        ))
    }

    /// Removes what killed saves left: every `.NAME.tmp-*` of the run's files (no other process
    /// writes here while this one holds the lock). Returns how many were removed.
    pub fn remove_stale_temp_files(&self) -> Result<usize> {
        let mut removed = 0;
        for name in RUN_FILES {
            removed += super::remove_stale_temp_files(&self.path.join(name))?;
        }
        Ok(removed)
    }

    /// Removes the previous run's files, to start a fresh run in the folder.
    pub fn clear_previous_run(&self) -> Result<()> {
        for name in RUN_FILES {
            let file = self.path.join(name);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot remove (to start afresh)", &file, e, "check its permissions")),
            }
        }
        Ok(())
    }
}

impl Drop for RunDir {
    /// A run that saved no checkpoint leaves no folder of its own making behind.
    fn drop(&mut self) {
        if self.created.is_empty() || holds_run(&self.path) {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
        // Parents it created go only if empty: another run may have made a folder beside ours.
        for dir in self.created.iter().rev().skip(1) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
