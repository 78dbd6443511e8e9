//! Ready spares: beside each snapshot, a second copy of its database (`npspare_<key>_<name>`)
//! and of its media (`npspare_<key>_<name>@<id>/`, copies or reflinks, never links to the
//! snapshot's files), tagged with the save's id, that a restore renames into place instead
//! of copying. A detached run of xtask prepares it after a save or restore, holding the
//! spare's own lock (an advisory lock like the target's), so that a restore that finds it
//! held copies from the snapshot instead: never two runs writing the same spare.

use std::{
    fs,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    atomic_file::{self, StagingDir},
    media::{self, Origins},
    pg::sql::{ident, literal},
    pipeline::swap::{self, lock::TargetLock},
    process, term,
};

use super::{
    spare_media::{TakenMedia, TOTALS},
    Dev, MediaSize, Meta, ORIGINS,
};

/// The prefix of a spare's database comment: the save's id follows.
const SPARE_MARK: &str = "{\"netpoint_dev_db_spare\":";

/// The state of a snapshot's spare, as `list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpareState {
    Ready,
    Preparing,
    Missing,
}

impl SpareState {
    pub(super) fn word(self) -> &'static str {
        match self {
            SpareState::Ready => "ready",
            SpareState::Preparing => "preparing",
            SpareState::Missing => "missing",
        }
    }
}

/// A spare whose lock this run holds and that is ready to be renamed in.
pub(super) struct TakenSpare {
    pub lock: TargetLock,
    pub database: String,
    /// The spare's media, when the snapshot has media.
    pub media: Option<TakenMedia>,
}

fn spare_comment(id: &str) -> String {
    format!(
        "{SPARE_MARK}{}}}",
        serde_json::Value::String(id.to_string())
    )
}

impl Dev<'_> {
    /// `npspare_<key>_<name>`: within 63 bytes (8 + 9 + a name of at most 30).
    pub(super) fn spare_db(&self, name: &str) -> String {
        format!(
            "{}{}{name}",
            swap::SPARE_PREFIX,
            &self.prefix["npsnap_".len()..]
        )
    }

    fn spare_store(&self, name: &str, id: &str) -> PathBuf {
        self.stores().join(format!("{}@{id}", self.spare_db(name)))
    }

    /// Written by the run preparing the spare while its database is copied: the size of the
    /// snapshot's tablespace before the copy began (the copy's files are counted in it
    /// before the new database is visible by its name).
    fn progress_file(&self, name: &str) -> PathBuf {
        self.stores()
            .join(format!(".{}.progress", self.spare_db(name)))
    }

    fn tablespace_sql(&self, name: &str) -> String {
        format!(
            "select pg_tablespace_size(dattablespace) from pg_database where datname = {}",
            literal(&self.snapshot_db(name))
        )
    }

    /// How far a preparation under way is, in percent of the snapshot's database (`size`)
    /// and media: the media copied so far, and what the server's tablespace grew since the
    /// database's copy began. Never 100: only a finished spare is ready.
    pub(super) fn spare_progress(&self, name: &str, meta: &Meta, size: u64) -> u64 {
        let media_total = meta.media.map_or(0, |m| m.bytes);
        let media_done = if self.spare_store(name, &meta.id).join("media").is_dir() {
            media_total
        } else {
            self.spare_dirs(Some(name))
                .iter()
                .filter(|dir| atomic_file::file_name(dir).starts_with('.'))
                .filter_map(|dir| media::count(&dir.join("media")).ok())
                .map(|totals| totals.bytes)
                .sum::<u64>()
                .min(media_total)
        };
        let database_done = fs::read_to_string(self.progress_file(name))
            .ok()
            .and_then(|base| base.trim().parse::<u64>().ok())
            .and_then(|base| {
                let now: u64 = self.query(&self.tablespace_sql(name)).ok()?.parse().ok()?;
                Some(now.saturating_sub(base).min(size))
            })
            .unwrap_or(0);
        let total = (media_total + size).max(1);
        ((media_done + database_done) * 100 / total).min(99)
    }

    /// The spare's lock, taken now or not at all: it is held by the run preparing it.
    fn spare_lock(&self, name: &str) -> anyhow::Result<TargetLock> {
        let key = self.target.with_database(&self.spare_db(name));
        TargetLock::take(self.cx, self.admin, &key)
    }

    /// The spare's lock, waiting for a preparation under way to finish (a save or drop
    /// that removes the spare).
    fn spare_lock_waiting(&self, name: &str) -> anyhow::Result<TargetLock> {
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            match self.spare_lock(name) {
                Ok(lock) => return Ok(lock),
                Err(err) => {
                    if started.elapsed() > Duration::from_secs(600) || process::interrupted() {
                        return Err(err.context(format!(
                            "the spare of snapshot `{name}` is still being prepared"
                        )));
                    }
                    if !std::mem::replace(&mut said, true) {
                        term::step(format!(
                            "waiting for the spare of snapshot `{name}` being prepared"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// Whether the spare is ready (tagged with the snapshot's id, its media there), being
    /// prepared (its lock held), or missing.
    pub(super) fn spare_state(&self, name: &str, meta: &Meta) -> anyhow::Result<SpareState> {
        let (whole, locked) = self.spare_seen(name, meta)?;
        Ok(if locked {
            SpareState::Preparing
        } else if whole {
            SpareState::Ready
        } else {
            SpareState::Missing
        })
    }

    /// Whether the spare is whole, for a run that holds its lock.
    fn spare_whole(&self, name: &str, meta: &Meta) -> anyhow::Result<bool> {
        Ok(self.spare_seen(name, meta)?.0)
    }

    /// Whether the spare is whole (tagged with the save's id, its media there), and whether
    /// its lock is held.
    fn spare_seen(&self, name: &str, meta: &Meta) -> anyhow::Result<(bool, bool)> {
        let spare = self.spare_db(name);
        let answer = self.query(&format!(
            "select coalesce((select shobj_description(oid, 'pg_database') from pg_database \
             where datname = {0}), '') || '|' || case when exists (select 1 from pg_locks \
             where locktype = 'advisory' and granted and classid = {1}::oid \
             and objid::bigint = (hashtext({0})::bigint & 4294967295) and objsubid = 2) \
             then 't' else 'f' end",
            literal(&spare),
            swap::lock::LOCK_CLASS
        ))?;
        let (comment, locked) = answer.rsplit_once('|').unwrap_or((&answer, "f"));
        let media_there =
            meta.media.is_none() || self.spare_store(name, &meta.id).join("media").is_dir();
        Ok((
            comment == spare_comment(&meta.id) && media_there,
            locked == "t",
        ))
    }

    /// The spare of snapshot `name` for a restore, when it is ready; otherwise says in one
    /// line why the restore copies instead.
    pub(super) fn take_spare(&self, name: &str, meta: &Meta) -> Option<TakenSpare> {
        if meta.no_spare || super::spares_off() {
            return None;
        }
        let Ok(lock) = self.spare_lock(name) else {
            term::step(format!(
                "the spare of snapshot `{name}` is still being prepared: copying the snapshot instead"
            ));
            return None;
        };
        if !matches!(self.spare_whole(name, meta), Ok(true)) {
            term::step(format!(
                "snapshot `{name}` has no ready spare: copying the snapshot instead"
            ));
            return None;
        }
        let media = match meta.media {
            Some(_) => {
                let dir = self.spare_store(name, &meta.id);
                let record = dir.join(ORIGINS);
                if !record.is_file() {
                    term::step(format!(
                        "the spare of snapshot `{name}` has no record of its files: copying the snapshot instead"
                    ));
                    return None;
                }
                let totals = fs::read(dir.join(TOTALS))
                    .ok()
                    .and_then(|text| serde_json::from_slice(&text).ok());
                Some(TakenMedia {
                    dir: dir.join("media"),
                    record,
                    totals,
                })
            }
            None => None,
        };
        Some(TakenSpare {
            lock,
            database: self.spare_db(name),
            media,
        })
    }

    /// The spare's database made the new dev database `temp`: renamed, open to connections,
    /// its tag removed (a dev database carries no mark).
    pub(super) fn rename_spare_to(&self, spare: &str, temp: &str) -> anyhow::Result<()> {
        self.query(&format!(
            "begin; alter database {0} rename to {1}; alter database {1} allow_connections true; \
             comment on database {1} is null; commit;",
            ident(spare),
            ident(temp)
        ))
        .map(|_| ())
    }

    /// Removes the spare of snapshot `name` (database and media), waiting for a preparation
    /// under way: `save --force` and `drop` call it.
    pub(super) fn remove_spare(&self, name: &str) -> anyhow::Result<()> {
        let _lock = self.spare_lock_waiting(name)?;
        self.remove_spare_locked(name)
    }

    fn remove_spare_locked(&self, name: &str) -> anyhow::Result<()> {
        swap::drop_database(self.cx, self.admin, &self.spare_db(name))?;
        let _ = fs::remove_file(self.progress_file(name));
        for dir in self.spare_dirs(Some(name)) {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    /// The spares' media directories (and those being made) beside the snapshots', of
    /// snapshot `name` or of every snapshot.
    fn spare_dirs(&self, name: Option<&str>) -> Vec<PathBuf> {
        let prefix = self.spare_db(name.unwrap_or_default());
        let Ok(entries) = fs::read_dir(self.stores()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| {
                let file = entry.file_name().to_string_lossy().into_owned();
                let file = file.strip_prefix('.').unwrap_or(&file);
                match name {
                    Some(_) => file.starts_with(&format!("{prefix}@")),
                    None => file.starts_with(&prefix),
                }
            })
            .map(|entry| entry.path())
            .collect()
    }

    /// Removes what runs killed while preparing a spare left (and spares of snapshots that
    /// are gone or were saved again), each under the spare's lock: a live preparation holds
    /// it, and its work is left alone.
    pub(super) fn remove_stale_spares(&self) -> anyhow::Result<()> {
        let key_prefix = self.spare_db("");
        let answer = self.query(&format!(
            "select coalesce(string_agg(substr(datname, {}), '/'), '') from pg_database \
             where starts_with(datname, {})",
            key_prefix.len() + 1,
            literal(&key_prefix)
        ))?;
        let mut names: Vec<String> = answer
            .split('/')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        for dir in self.spare_dirs(None) {
            let file = atomic_file::file_name(&dir);
            let file = file.strip_prefix('.').unwrap_or(&file);
            if let Some((name, _)) = file[key_prefix.len()..].split_once('@') {
                names.push(name.to_string());
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            if super::check_name(&name).is_err() {
                continue;
            }
            let meta = self
                .snapshots()?
                .iter()
                .find(|found| found.name == name)
                .and_then(|found| found.meta.as_ref());
            let tmp_dirs = self
                .spare_dirs(Some(&name))
                .into_iter()
                .any(|d| atomic_file::file_name(&d).starts_with('.'));
            let state = match meta {
                Some(meta) => self.spare_state(&name, meta)?,
                None => SpareState::Missing,
            };
            if state == SpareState::Preparing || (state == SpareState::Ready && !tmp_dirs) {
                continue;
            }
            let Ok(_lock) = self.spare_lock(&name) else {
                continue;
            };
            // Under the lock, again: a preparation may have finished meanwhile.
            if let Some(meta) = meta {
                if self.spare_whole(&name, meta)? {
                    for dir in self.spare_dirs(Some(&name)) {
                        if atomic_file::file_name(&dir).starts_with('.') {
                            let _ = fs::remove_dir_all(dir);
                        }
                    }
                    continue;
                }
            }
            term::step(format!(
                "removing the spare of snapshot `{name}`, left unfinished by an interrupted run"
            ));
            if let Err(err) = self.remove_spare_locked(&name) {
                term::warn(format!(
                    "could not remove the spare of snapshot `{name}` ({err:#}): the next run tries again"
                ));
            }
        }
        Ok(())
    }

    /// Starts a detached run of xtask that prepares the spare of snapshot `name`: a session
    /// of its own (it survives the terminal closing), not one of the tools that die with this
    /// run, logging to `spares.log` beside the snapshots.
    /// With `after`, it first drops the previous dev database once this run has exited (see
    /// [`Dev::hand_over`]). Returns its pid.
    pub(super) fn start_spare(&self, name: &str, after: bool) -> Option<u32> {
        let started = (|| -> anyhow::Result<u32> {
            let stores = self.stores();
            fs::create_dir_all(&stores)
                .with_context(|| format!("creating {}", stores.display()))?;
            let log_path = stores.join("spares.log");
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let mut cmd = Command::new(std::env::current_exe().context("finding xtask")?);
            cmd.args(["dev-db", "spare", name, "--target-media"])
                .arg(&self.detached.media)
                .current_dir(self.cx.sh.current_dir())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if after {
                cmd.arg("--after").arg(std::process::id().to_string());
            }
            if self.detached.allow_remote_target {
                cmd.arg("--allow-remote-target");
            }
            if let Some(target) = &self.detached.target {
                cmd.env("NETPOINT_DATABASE_URL", target);
            }
            process::detach(&mut cmd);
            Ok(cmd.spawn().context("starting xtask")?.id())
        })();
        match started {
            Ok(pid) => Some(pid),
            Err(err) => {
                term::warn(format!(
                    "could not start preparing the spare of snapshot `{name}` ({err:#}): the next restore copies it"
                ));
                None
            }
        }
    }

    /// Renames this run's previous dev database `old` (`<target>__npold_<pid>`) to the name
    /// the detached run `pid` drops: from then on it is that live run's, not a leftover.
    pub(super) fn hand_over(&self, old: &str, pid: u32) -> bool {
        let Some(base) = old.strip_suffix(&std::process::id().to_string()) else {
            return false;
        };
        self.query(&format!(
            "alter database {} rename to {}",
            ident(old),
            ident(&format!("{base}{pid}"))
        ))
        .is_ok()
    }

    /// In the detached run: waits for run `pid` to exit, then drops the previous dev
    /// database it handed over, if any.
    fn drop_handed_over(&self, pid: u32) {
        let started = std::time::Instant::now();
        while process::alive(pid) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The media the run replaced, moved aside under its pid.
        atomic_file::remove_stale_staging(self.media);
        let old = swap::aside_name(&self.target.database);
        match swap::exists(self.cx, self.admin, &old) {
            Ok(true) => {
                term::step(format!("dropping the previous dev database {old}"));
                self.discard(&old);
            }
            Ok(false) => {}
            Err(err) => term::warn(format!("{err:#}")),
        }
    }

    /// The detached run: makes the spare of snapshot `name` unless it is ready, under its
    /// lock; on failure or interruption removes what it made.
    pub(super) fn prepare_spare(&self, name: &str, after: Option<u32>) -> anyhow::Result<()> {
        if let Some(pid) = after {
            self.drop_handed_over(pid);
        }
        let Ok(_lock) = self.spare_lock(name) else {
            println!("the spare of snapshot `{name}` is being prepared by another run");
            return Ok(());
        };
        let Some(meta) = self.meta_of(name)? else {
            return self.remove_spare_locked(name);
        };
        if meta.no_spare || self.spare_whole(name, &meta)? {
            return Ok(());
        }
        // A copy a killed run's session left on the server may still finish meanwhile:
        // what stands in the way is removed, and the spare made again, once.
        let mut made = Ok(());
        for _ in 0..2 {
            self.remove_spare_locked(name)?;
            made = self
                .make_spare(name, &meta)
                .and_then(|()| process::check_interrupted());
            if made.is_ok() || process::interrupted() {
                break;
            }
        }
        if let Err(err) = made {
            if let Err(again) = self.remove_spare_locked(name) {
                term::warn(format!("{again:#}: the next run removes it"));
            }
            return Err(err.context(format!(
                "preparing the spare of snapshot `{name}`: restores copy it until one is ready"
            )));
        }
        let _ = fs::remove_file(self.progress_file(name));
        term::success(format!("the spare of snapshot `{name}` is ready"));
        Ok(())
    }

    fn make_spare(&self, name: &str, meta: &Meta) -> anyhow::Result<()> {
        if meta.media.is_some() {
            let made = self.spare_store(name, &meta.id);
            let tmp = StagingDir(self.stores().join(format!(
                ".{}-{}",
                atomic_file::file_name(&made),
                std::process::id()
            )));
            let snapshot_media = self.store(name, &meta.id).join("media");
            let copy = media::copy_to_live(
                &snapshot_media,
                &tmp.join("media"),
                None,
                &Origins::default(),
            )?;
            copy.origins.write(&tmp.join(ORIGINS), &meta.id)?;
            let totals = MediaSize {
                files: copy.all.files,
                bytes: copy.all.bytes,
            };
            fs::write(tmp.join(TOTALS), serde_json::to_string(&totals)?)
                .with_context(|| format!("writing {}", tmp.join(TOTALS).display()))?;
            fs::rename(&*tmp, &made).with_context(|| format!("renaming to {}", made.display()))?;
            tmp.keep();
        }
        process::check_interrupted()?;
        let spare = self.spare_db(name);
        // For `list`'s progress; a role that may not read the tablespace's size shows none.
        if let Ok(base) = self.query(&self.tablespace_sql(name)) {
            let _ = fs::write(self.progress_file(name), base);
        }
        process::critical(|| {
            self.copy_database(&self.snapshot_db(name), &spare, "preparing its spare")?;
            self.query(&format!(
                "begin; alter database {0} allow_connections false; comment on database {0} is {1}; commit;",
                ident(&spare),
                literal(&spare_comment(&meta.id))
            ))
        })?;
        Ok(())
    }
}
