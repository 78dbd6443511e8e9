//! One run at a time per target: an advisory lock on the target server, keyed by the
//! database's name, and a lock file beside the media directory. A second run refuses and
//! names the first; a lock whose run died is free again, since the server ends a dead
//! session and the kernel releases a dead process's file lock.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{
    context::Context,
    pg::{self, sql::literal, Access, DbUrl},
    pipeline::swap,
    process,
};

/// The first key of our advisory locks (`NPXT`); the second is the database name's hash.
pub const LOCK_CLASS: i32 = 0x4e50_5854;

/// Who we are, as another run will be told.
pub fn holder_name() -> String {
    let host = fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into());
    format!("cargo xtask pid {} on {host}", std::process::id())
}

/// The advisory lock on a target database, held by a session of its own until dropped.
pub struct TargetLock {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    /// Temporary databases of runs that died, found while the lock was held: no live run
    /// can own them.
    pub stale: Vec<String>,
}

impl TargetLock {
    /// Takes the lock for `target` on the server `admin` connects to, or refuses, naming
    /// the run that holds it.
    pub fn take(cx: &Context, admin: &DbUrl, target: &DbUrl) -> anyhow::Result<TargetLock> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let cmd = tools.stdin_session(sh, admin, Access::ReadWrite)?;
        let mut child = process::spawn_holder(
            pg::tool_command(cmd, admin)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .with_context(|| format!("starting psql for {admin}"))?;
        let stderr = process::collect_stderr(child.stderr.take().unwrap());
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let key = format!("hashtext({})", literal(&target.database));
        let _ = write!(
            stdin,
            "set application_name = {};\n\
             select pg_try_advisory_lock({LOCK_CLASS}, {key});\n\
             select case when pg_try_advisory_lock({LOCK_CLASS}, {key}) then {} else \
             coalesce((select json_build_object('by', a.application_name, 'since', to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'))::text \
             from pg_locks l join pg_stat_activity a on a.pid = l.pid where l.locktype = 'advisory' and l.granted \
             and l.database = (select oid from pg_database where datname = current_database()) \
             and l.classid = {LOCK_CLASS}::oid and l.objid::bigint = ({key}::bigint & 4294967295) and l.objsubid = 2 \
             and l.pid <> pg_backend_pid() limit 1), '{{}}') end;\n",
            literal(&holder_name()),
            format_args!("'ours:' || {}", swap::stale_query(target)),
        );
        let _ = stdin.flush();
        let mut first = String::new();
        let mut answer = String::new();
        let _ = stdout.read_line(&mut first);
        let _ = stdout.read_line(&mut answer);
        let answer = answer.trim_end();
        if first.trim() == "t" {
            if let Some(stale) = answer.strip_prefix("ours:") {
                let stale = serde_json::from_str(stale).with_context(|| {
                    format!("unexpected answer from {admin} while locking the target: {stale}")
                })?;
                let stale = swap::stale_of_dead_runs(stale);
                return Ok(TargetLock {
                    child,
                    stdin: Some(stdin),
                    _stdout: stdout,
                    stale,
                });
            }
        }
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        if first.trim() == "f" {
            #[derive(serde::Deserialize)]
            struct Holder {
                by: Option<String>,
                since: Option<String>,
            }
            let holder: Option<Holder> = serde_json::from_str(answer).ok();
            let who = match holder {
                Some(Holder {
                    by: Some(by),
                    since: Some(since),
                }) if !by.is_empty() => {
                    format!(" ({by}, since {since})")
                }
                _ => String::new(),
            };
            bail!(
                "another run is replacing {target}{who}: wait for it to finish or stop it, then run again; nothing was changed"
            );
        }
        let stderr = stderr.join().unwrap_or_default();
        Err(pg::explain_failure(admin, &stderr)).context(format!("locking {target}"))
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // End of input ends the session, and with it the lock.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A lock file beside a media directory (`.media.lock`), held until dropped, then removed.
/// While a run swaps, it also holds the run's journal: a run killed outright leaves the file,
/// and the next one learns from it what to put back.
pub struct MediaLock {
    path: PathBuf,
    file: File,
    /// The journal a run that died left in the file.
    pub left: Option<Journal>,
}

/// What a run writes before it swaps: enough for the next run to undo a swap it left half
/// done (the new database in place, the old media still there).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    /// `host:port/database` of the target.
    pub target: String,
    /// The name the previous database gets during the swap.
    pub aside: String,
    /// The staged media directory, gone once the media are in place.
    pub staging: PathBuf,
}

impl MediaLock {
    pub fn take(media: &Path) -> anyhow::Result<MediaLock> {
        use std::os::unix::fs::MetadataExt;
        let path = lock_path(media);
        loop {
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| {
                    format!(
                        "cannot create the lock file {}: check that its directory is writable",
                        path.display()
                    )
                })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    // Its first line names the holder; a swap's journal may follow.
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let by = text.lines().next().unwrap_or_default().trim();
                    let who = if by.is_empty() {
                        String::new()
                    } else {
                        format!(" ({by})")
                    };
                    bail!(
                        "another run is replacing the media directory {}{who}: wait for it to finish or stop it, then run again; nothing was changed",
                        media.display()
                    );
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(err).with_context(|| format!("locking {}", path.display()))
                }
            }
            // The previous holder may have removed the file between our open and our lock:
            // the lock counts only on the file the path still names.
            let same = fs::metadata(&path).is_ok_and(|m| {
                file.metadata()
                    .is_ok_and(|f| (f.dev(), f.ino()) == (m.dev(), m.ino()))
            });
            if !same {
                continue;
            }
            let mut previous = String::new();
            std::io::Read::read_to_string(&mut file, &mut previous).ok();
            let left = previous
                .lines()
                .find_map(|line| serde_json::from_str::<Journal>(line).ok());
            file.set_len(0)?;
            std::io::Seek::rewind(&mut file)?;
            writeln!(file, "{}", holder_name())?;
            return Ok(MediaLock { path, file, left });
        }
    }
}

impl MediaLock {
    /// Writes `journal` into the lock file, durably, before a swap starts.
    pub fn record(&mut self, journal: &Journal) -> anyhow::Result<()> {
        let text = format!(
            "{}\n{}\n",
            holder_name(),
            serde_json::to_string(journal).expect("journals serialise")
        );
        self.file.set_len(0)?;
        std::io::Seek::rewind(&mut self.file)?;
        self.file.write_all(text.as_bytes())?;
        self.file
            .sync_all()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Drop for MediaLock {
    fn drop(&mut self) {
        // Removed while still locked, so a run that opens it later gets a new file.
        let _ = fs::remove_file(&self.path);
    }
}

/// `.name.lock` beside `media`, once links are resolved: two spellings of one directory (a
/// symlink to it, `..`) share one lock.
pub fn lock_path(media: &Path) -> PathBuf {
    let real = std::fs::canonicalize(media).ok().or_else(|| {
        let parent = media.parent().filter(|p| !p.as_os_str().is_empty())?;
        Some(std::fs::canonicalize(parent).ok()?.join(media.file_name()?))
    });
    let media = real.as_deref().unwrap_or(media);
    let dir = media
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!(".{}.lock", crate::atomic_file::file_name(media)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_media_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        let first = MediaLock::take(&media).unwrap();
        let err = MediaLock::take(&media).err().unwrap().to_string();
        assert!(
            err.contains("another run is replacing the media directory"),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let mut again = MediaLock::take(&media).unwrap();
        assert_eq!(again.left, None);
        let journal = Journal {
            target: "localhost:5432/netpoint".into(),
            aside: "netpoint__npold_1".into(),
            staging: dir.path().join(".media.staging-1"),
        };
        again.record(&journal).unwrap();
        let recorded = fs::read_to_string(lock_path(&media)).unwrap();
        drop(again);
        // A run killed outright leaves its file, journal and all.
        fs::write(lock_path(&media), recorded).unwrap();
        let next = MediaLock::take(&media).unwrap();
        assert_eq!(next.left, Some(journal));
        drop(next);
        assert!(
            !lock_path(&media).exists(),
            "the lock file is removed with the lock"
        );
    }
}
