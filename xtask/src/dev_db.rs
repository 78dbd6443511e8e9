//! `cargo xtask dev-db`: named snapshots of the dev database and media, saved and restored
//! in about a second.
//!
//! A snapshot's database is a file-level copy of the dev database on the same server
//! (`CREATE DATABASE … TEMPLATE`), named `npsnap_<key>_<name>` where the key stands for the
//! dev database on its server (see `swap::snapshot_key_sql`), closed to connections, and
//! described by a JSON comment that `list` reads. Its media are a copy (reflinks where the
//! file system has them) in `.netpoint-dev-db/npsnap_<key>_<name>@<id>/` beside the media
//! directory, named by the save's id, which the comment holds: a save writes new media beside
//! the old ones, and renaming the databases is the one step that makes it count. A restore
//! makes a new database from the snapshot and swaps it in exactly as `clone-prod` swaps a
//! load in.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{
    atomic_file::{self, StagingDir},
    context::Context,
    media::{self, Origins, Stamp},
    pg::{
        dev_container::DevContainer,
        sql::{ident, literal},
        url::{self, path_or_env},
        Access, DbUrl, PgTools,
    },
    pipeline::{
        replace::{Create, Database, Inspected, Replacement, Staged},
        report::Timings,
        staged_media::{check_holds_nothing_else, StagedMedia},
        swap::{
            self,
            lock::{MediaLock, TargetLock},
            LoadGuard,
        },
    },
    process, term,
};

/// Save and restore named states of the dev database and media.
#[derive(Debug, clap::Args)]
pub struct DevDb {
    #[command(subcommand)]
    action: Action,
    /// Dev database [default: $NETPOINT_DATABASE_URL, else the local Docker container].
    #[arg(long, value_name = "URL", global = true)]
    target: Option<String>,
    /// Dev media directory [default: $NETPOINT_MEDIA_ROOT, else netpoint/media].
    #[arg(long, value_name = "DIR", global = true)]
    target_media: Option<PathBuf>,
    /// Allow a dev database that is not on this machine.
    #[arg(long, global = true)]
    allow_remote_target: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Save the dev database and media as NAME.
    Save {
        name: String,
        /// Save over an existing snapshot of that name.
        #[arg(long)]
        force: bool,
    },
    /// Put the dev database and media back exactly as NAME saved them.
    Restore {
        name: String,
        /// Replace the dev database and media without asking.
        #[arg(long)]
        yes: bool,
    },
    /// The snapshots: name, when saved, sizes, git branch and commit, newest migrations.
    List,
    /// Remove snapshot NAME.
    Drop {
        name: String,
        /// Remove it without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// What a snapshot's database comment holds (and `snapshot.json` beside its media).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    netpoint_dev_db_snapshot: u32,
    /// Random, also in `snapshot.json` beside the media and in their directory's name: the
    /// two halves belong together.
    id: String,
    name: String,
    database: String,
    saved: String,
    branch: Option<String>,
    commit: Option<String>,
    /// The newest applied Django migration per app: `[app, name]`.
    migrations: Option<Vec<(String, String)>>,
    media: Option<MediaSize>,
}

/// The snapshot format this tool writes and restores: 2 names the media by the save's id.
const FORMAT: u32 = 2;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct MediaSize {
    files: u64,
    bytes: u64,
}

/// Beside a snapshot's media: which live file each of them was copied from (media::Origins).
const ORIGINS: &str = "origins.json";

impl DevDb {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let name = match &self.action {
            Action::Save { name, .. }
            | Action::Restore { name, .. }
            | Action::Drop { name, .. } => Some(check_name(name)?),
            Action::List => None,
        };
        let media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT")
            .unwrap_or_else(|| sh.current_dir().join("netpoint/media"));
        if matches!(self.action, Action::Save { .. } | Action::Restore { .. }) {
            // A restore replaces the media directory and a save copies it: never `/`, `~`
            // or a directory that holds the checkout.
            check_holds_nothing_else(&media)?;
        }
        let target = match url::url_or_env(self.target.clone(), "NETPOINT_DATABASE_URL")? {
            Some(url) => url,
            None => DevContainer::new(sh).ensure(sh, tools)?,
        };
        let yes = match self.action {
            Action::Restore { yes, .. } => yes,
            _ => true,
        };
        let guard = LoadGuard {
            yes,
            allow_remote_target: self.allow_remote_target,
            allow_downgrade: false,
        };
        let replacement = Replacement {
            target: &target,
            target_media: Some(&media),
            guard: &guard,
        };
        replacement.check()?;
        let inspected = replacement.inspect(sh, tools)?;
        let (admin, state) = (&inspected.admin, &inspected.state);
        let key = &state.snapshot_key;
        if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("unexpected answer from {admin} for the snapshots' key: {key}");
        }
        let dev = Dev {
            sh,
            tools,
            target: &target,
            admin,
            media: &media,
            major: state.server.major,
            prefix: format!("npsnap_{key}_"),
            found: std::cell::OnceCell::new(),
        };
        match self.action {
            Action::Save { force, .. } => {
                if !state.exists {
                    bail!(
                        "there is no dev database {target}: make one with `cargo xtask seed-dev` (or clone-prod), then save it"
                    );
                }
                dev.save(name.unwrap(), force)
            }
            Action::Restore { .. } => dev.restore(name.unwrap(), &replacement, &inspected),
            Action::List => dev.list(),
            Action::Drop { yes, .. } => dev.drop_snapshot(name.unwrap(), yes),
        }
    }
}

/// A snapshot name is part of a database name and a directory name: kept plain and short.
fn check_name(name: &str) -> anyhow::Result<&str> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let starts = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !plain || !starts || name.len() > 30 {
        bail!(
            "invalid snapshot name `{name}`: use up to 30 letters, digits, `-`, `_` and `.`, starting with a letter or digit"
        );
    }
    Ok(name)
}

struct Dev<'a> {
    sh: &'a Shell,
    tools: &'a PgTools,
    target: &'a DbUrl,
    admin: &'a DbUrl,
    media: &'a Path,
    major: u32,
    /// `npsnap_<key>_`: the snapshots of this dev database on its server.
    prefix: String,
    /// The snapshots, once read (a run that holds the locks is the only one to change them).
    found: std::cell::OnceCell<Vec<Found>>,
}

/// A snapshot found on the server: its name, its database's size and its description
/// (none when this tool cannot read it).
struct Found {
    name: String,
    size: u64,
    meta: Option<Meta>,
}

impl Dev<'_> {
    fn snapshot_db(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `npsnaptmp_<key>_<pid>` or `npsnapold_<key>_<pid>`: this run's temporary databases,
    /// which `swap::stale_query` finds if the run dies.
    fn temp_db(&self, kind: &str) -> String {
        format!(
            "npsnap{kind}_{}{}",
            &self.prefix["npsnap_".len()..],
            std::process::id()
        )
    }

    /// Where the snapshots' media live: beside the media directory (on its file system, so
    /// that copies can be reflinks and restores renames).
    fn stores(&self) -> PathBuf {
        let real = atomic_file::resolved(self.media);
        let parent = real
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        parent.join(".netpoint-dev-db")
    }

    /// The media directory of the save `id` of snapshot `name`.
    fn store(&self, name: &str, id: &str) -> PathBuf {
        self.stores().join(format!("{}{name}@{id}", self.prefix))
    }

    fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.tools
            .query(self.sh, self.admin, Access::ReadWrite, sql)
    }

    /// The description of snapshot `name`, when there is one. A database of that name that
    /// `dev-db` did not make is refused: it is never taken for a snapshot, nor replaced.
    fn meta_of(&self, name: &str) -> anyhow::Result<Option<Meta>> {
        let database = self.snapshot_db(name);
        let answer = self.query(&format!(
            "select json_build_object('comment', shobj_description(oid, 'pg_database')) \
             from pg_database where datname = {}",
            literal(&database)
        ))?;
        if answer.is_empty() {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            comment: Option<String>,
        }
        let comment = serde_json::from_str::<Answer>(&answer)
            .with_context(|| format!("unexpected answer from {}: {answer}", self.admin))?
            .comment
            .filter(|c| c.starts_with(swap::SNAPSHOT_MARK));
        let Some(comment) = comment else {
            bail!(
                "database {database} on {} was not made by `cargo xtask dev-db save`: rename or drop it, then run again",
                self.admin.host_port()
            );
        };
        Ok(Some(serde_json::from_str(&comment).with_context(|| {
            format!("snapshot `{name}` has a description this tool did not write")
        })?))
    }

    /// Every snapshot of this dev database, by name.
    fn snapshots(&self) -> anyhow::Result<&[Found]> {
        if let Some(found) = self.found.get() {
            return Ok(found);
        }
        let found = self.read_snapshots()?;
        Ok(self.found.get_or_init(|| found))
    }

    fn read_snapshots(&self) -> anyhow::Result<Vec<Found>> {
        #[derive(serde::Deserialize)]
        struct Row {
            datname: String,
            size: u64,
            meta: Option<String>,
        }
        let answer = self.query(&format!(
            "select coalesce(json_agg(json_build_object('datname', datname, 'size', pg_database_size(oid), \
             'meta', shobj_description(oid, 'pg_database')) order by datname), '[]') \
             from pg_database where starts_with(datname, {})",
            literal(&self.prefix)
        ))?;
        let rows: Vec<Row> = serde_json::from_str(&answer).with_context(|| {
            format!(
                "unexpected answer from {} listing snapshots: {answer}",
                self.admin
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| Found {
                name: r.datname[self.prefix.len()..].to_string(),
                size: r.size,
                meta: r.meta.and_then(|m| serde_json::from_str(&m).ok()),
            })
            .collect())
    }

    /// The dev database's and its media's locks, as clone-prod and seed-dev take them; then
    /// what interrupted runs left for this dev database is removed, as no live run can own it.
    fn locks(&self) -> anyhow::Result<(TargetLock, Option<MediaLock>)> {
        let (lock, media_lock) = swap::take_locks(
            self.sh,
            self.tools,
            self.admin,
            self.target,
            Some(self.media),
        )?;
        swap::drop_stale(self.sh, self.tools, self.admin, &lock.stale);
        self.remove_stale_stores()?;
        Ok((lock, media_lock))
    }

    /// Removes media directories of this dev database's snapshots that no snapshot names
    /// (a save killed before or after its databases were renamed), and `.npsnap_*-<pid>`
    /// directories of dead runs of earlier versions.
    fn remove_stale_stores(&self) -> anyhow::Result<()> {
        let Ok(entries) = fs::read_dir(self.stores()) else {
            return Ok(());
        };
        // A snapshot this tool cannot read keeps every media directory of its name.
        let live = self.snapshots()?;
        let named = |name: &str, id: &str| {
            live.iter()
                .any(|f| f.name == name && f.meta.as_ref().is_none_or(|m| m.id == id))
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let unnamed = name
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.rsplit_once('@'))
                .is_some_and(|(snapshot, id)| {
                    id.len() == 16
                        && id.bytes().all(|b| b.is_ascii_hexdigit())
                        && !named(snapshot, id)
                });
            let dead_run = name.starts_with(".npsnap_")
                && name
                    .rsplit_once('-')
                    .and_then(|(_, pid)| pid.parse::<u32>().ok())
                    .is_some_and(|pid| pid != std::process::id() && !process::alive(pid));
            if unnamed || dead_run {
                term::step(format!(
                    "removing {}, left behind by an interrupted run",
                    entry.path().display()
                ));
                if let Err(err) = fs::remove_dir_all(entry.path()) {
                    term::warn(format!(
                        "could not remove {}: {err}",
                        entry.path().display()
                    ));
                }
            }
        }
        Ok(())
    }

    fn unknown(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "there is no snapshot `{name}` of {}: `cargo xtask dev-db list` shows those there are",
            self.target.masked()
        )
    }

    /// Drops a database this run made and no longer wants; one that stays is said to.
    fn discard(&self, database: &str) {
        if swap::drop_database(self.sh, self.tools, self.admin, database).is_err() {
            process::note_left_behind();
            term::warn(format!(
                "could not remove {database}: the next run of any command on {} removes it",
                self.target.masked()
            ));
        }
    }

    fn save(&self, name: &str, force: bool) -> anyhow::Result<()> {
        let snapshot = self.snapshot_db(name);
        let (_lock, _media_lock) = self.locks()?;
        let previous = self.meta_of(name)?;
        if let Some(meta) = &previous {
            if !force {
                bail!(
                    "snapshot `{name}` exists (saved {}): pass --force to save over it",
                    meta.saved
                );
            }
        }
        let id = snapshot_id(&snapshot);
        let meta = Meta {
            netpoint_dev_db_snapshot: FORMAT,
            id: id.clone(),
            name: name.to_string(),
            database: self.target.database.clone(),
            saved: self.query(
                "select to_char(now() at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'",
            )?,
            branch: git(self.sh, &["rev-parse", "--abbrev-ref", "HEAD"]),
            commit: git(self.sh, &["rev-parse", "--short", "HEAD"]),
            migrations: self.migrations()?,
            media: None,
        };
        // The new media go beside the previous ones, under a name only this save's database
        // will give; until the databases are renamed, nothing of the snapshot has changed.
        let store = self
            .media
            .is_dir()
            .then(|| StagingDir(self.store(name, &id)));
        let copied = match &store {
            Some(store) => {
                term::step(format!("copying media {}", self.media.display()));
                let earlier = self.earlier_copy()?;
                let copy = media::copy_from_live(
                    self.media,
                    &store.join("media"),
                    earlier
                        .as_ref()
                        .map(|(dir, origins)| (dir.as_path(), origins)),
                )?;
                copy.origins.write(&store.join(ORIGINS), &id)?;
                Some(copy)
            }
            None => None,
        };
        let meta = Meta {
            media: copied.as_ref().map(|c| MediaSize {
                files: c.all.files,
                bytes: c.all.bytes,
            }),
            ..meta
        };
        let text = serde_json::to_string(&meta)?;
        if let Some(store) = &store {
            atomic_file::write_bytes(&store.join("snapshot.json"), text.as_bytes())?;
        }
        process::check_interrupted()?;
        let new = self.temp_db("tmp");
        // The server finishes a copy whose session a signal ended: it runs to its end, and
        // is removed if the run stops after it.
        let made = process::critical(|| {
            self.copy_database(&self.target.database, &new, "saving it")?;
            self.query(&format!(
                "alter database {} allow_connections false",
                ident(&new)
            ))?;
            self.query(&format!(
                "comment on database {} is {}",
                ident(&new),
                literal(&text)
            ))
        });
        if let Err(err) = made.and_then(|_| process::check_interrupted()) {
            self.discard(&new);
            return Err(err);
        }
        // The one step that replaces the snapshot: both renames commit together.
        let old = self.temp_db("old");
        let renamed = process::critical(|| {
            match previous {
            Some(_) => self.query(&format!(
                "begin; alter database {0} rename to {1}; alter database {2} rename to {0}; commit;",
                ident(&snapshot),
                ident(&old),
                ident(&new)
            )),
            None => self.query(&format!(
                "alter database {} rename to {}",
                ident(&new),
                ident(&snapshot)
            )),
        }
        });
        if let Err(err) = renamed {
            self.discard(&new);
            return Err(err.context(format!("snapshot `{name}` is as it was")));
        }
        let store = store.map(StagingDir::keep);
        if let Some(previous) = &previous {
            if swap::drop_database(self.sh, self.tools, self.admin, &old).is_err() {
                term::warn(format!(
                    "snapshot `{name}` is saved, but its previous database {old} could not be dropped: the next run removes it"
                ));
            }
            let dir = self.store(name, &previous.id);
            if store.as_deref() != Some(dir.as_path()) && dir.exists() {
                if let Err(err) = fs::remove_dir_all(&dir) {
                    term::warn(format!(
                        "snapshot `{name}` is saved, but its previous media could not be removed ({err}): the next run removes {}",
                        dir.display()
                    ));
                }
            }
        }
        let size = self.query(&format!("select pg_database_size({})", literal(&snapshot)))?;
        term::success(format!(
            "saved {} as snapshot `{name}`: database {}{}",
            self.target.masked(),
            term::human_bytes(size.parse().unwrap_or(0)),
            match &copied {
                Some(c) => format!(
                    ", media {} files ({}; {} unchanged since an earlier snapshot linked from it)",
                    c.all.files,
                    term::human_bytes(c.all.bytes),
                    c.linked.files
                ),
                None => format!(", no media ({} does not exist)", self.media.display()),
            }
        ));
        Ok(())
    }

    /// The media of the snapshot of this dev database whose record was written last (by its
    /// save, or by a restore of it), and that record: the copy most of the live files are
    /// likely to be unchanged since, which a save links them from.
    fn earlier_copy(&self) -> anyhow::Result<Option<(PathBuf, Origins)>> {
        let newest = self
            .snapshots()?
            .iter()
            .filter_map(|f| f.meta.as_ref())
            .filter(|meta| meta.netpoint_dev_db_snapshot == FORMAT && meta.media.is_some())
            .filter_map(|meta| {
                let dir = self.store(&meta.name, &meta.id);
                let written = fs::metadata(dir.join(ORIGINS)).ok()?.modified().ok()?;
                Some((written, dir, &meta.id))
            })
            .max_by_key(|(written, ..)| *written);
        let Some((_, dir, id)) = newest else {
            return Ok(None);
        };
        match Origins::read(&dir.join(ORIGINS), id) {
            Ok(origins) => Ok(Some((dir.join("media"), origins))),
            Err(err) => {
                term::warn(format!("{err:#}: every media file is copied"));
                Ok(None)
            }
        }
    }

    fn restore(
        &self,
        name: &str,
        replacement: &Replacement,
        target: &Inspected,
    ) -> anyhow::Result<()> {
        let snapshot = self.snapshot_db(name);
        // Every check comes first: until the swap, nothing is changed and no session ended.
        let mut locked = replacement.lock(self.sh, self.tools, target, None)?;
        locked.drop_stale(self.sh, self.tools);
        self.remove_stale_stores()?;
        let Some(meta) = self.meta_of(name)? else {
            return Err(self.unknown(name));
        };
        if meta.netpoint_dev_db_snapshot != FORMAT {
            bail!(
                "snapshot `{name}` was saved by another version of this tool (format {}, this one restores {FORMAT}): save it again with `cargo xtask dev-db save {name} --force`",
                meta.netpoint_dev_db_snapshot
            );
        }
        let store = self.store(name, &meta.id);
        let origins = match meta.media {
            Some(_) => Some(self.check_store(name, &meta, &store)?),
            None => {
                locked.keep_media();
                None
            }
        };
        let mut linked = None;
        let stage = |_: &mut Timings| match (meta.media, &origins) {
            (Some(size), Some(origins)) => {
                atomic_file::remove_stale_staging(self.media);
                let dir = StagingDir(atomic_file::staging_dir(self.media)?);
                term::step(format!(
                    "copying the snapshot's media into place beside {}",
                    self.media.display()
                ));
                // The live media are replaced: what they hold unchanged since the snapshot's
                // record was written is linked from them.
                let live = self.media.is_dir().then_some(self.media);
                let copy = media::copy_to_live(&store.join("media"), &dir, live, origins)?;
                process::check_interrupted()?;
                if (copy.all.files, copy.all.bytes) != (size.files, size.bytes) {
                    bail!(
                        "the media of snapshot `{name}` at {} hold {} files ({}) where {} files ({}) were saved: drop the snapshot and save it again",
                        store.display(),
                        copy.all.files,
                        term::human_bytes(copy.all.bytes),
                        size.files,
                        term::human_bytes(size.bytes)
                    );
                }
                linked = Some(copy.linked.files);
                let staged = StagedMedia {
                    dir,
                    totals: copy.all,
                    linked: copy.linked,
                };
                Ok(Some(SnapshotMedia {
                    staged,
                    copy,
                    record: store.join(ORIGINS),
                    id: &meta.id,
                }))
            }
            _ => {
                term::step(format!(
                    "the snapshot has no media: {} stays as it is",
                    self.media.display()
                ));
                Ok(None)
            }
        };
        let database = Database {
            announce: None,
            create: Create::By(Box::new(|temp: &DbUrl| {
                process::critical(|| self.copy_database(&snapshot, &temp.database, "restoring it"))
            })),
            fill: Box::new(|_| Ok(())),
        };
        let _replaced = locked.replace(self.sh, self.tools, stage, database)?;
        term::success(format!(
            "restored snapshot `{name}` (saved {}) into {}{}",
            meta.saved,
            self.target.masked(),
            match (meta.media, linked) {
                (Some(m), Some(linked)) => format!(
                    " and {} ({} files; {} unchanged since the snapshot kept as they were)",
                    self.media.display(),
                    m.files,
                    linked
                ),
                _ => String::new(),
            }
        ));
        Ok(())
    }

    /// The snapshot's media are there and belong to its database (the same save), and their
    /// record reads: returns the record.
    fn check_store(&self, name: &str, meta: &Meta, store: &Path) -> anyhow::Result<Origins> {
        let beside = fs::read_to_string(store.join("snapshot.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Meta>(&text).ok());
        if !store.join("media").is_dir() || beside.is_none_or(|b| b.id != meta.id) {
            bail!(
                "the media of snapshot `{name}` are missing or belong to another save ({}): drop the snapshot and save it again",
                store.display()
            );
        }
        Origins::read(&store.join(ORIGINS), &meta.id).map_err(|err| {
            anyhow::anyhow!("snapshot `{name}`: {err:#}; drop the snapshot and save it again")
        })
    }

    fn list(&self) -> anyhow::Result<()> {
        let snapshots: Vec<(u64, &Meta)> = self
            .snapshots()?
            .iter()
            .filter_map(|f| Some((f.size, f.meta.as_ref()?)))
            .collect();
        if snapshots.is_empty() {
            println!(
                "no snapshots of {} yet: save one with `cargo xtask dev-db save NAME`",
                self.target.masked()
            );
            return Ok(());
        }
        println!(
            "snapshots of {} (media beside {}):",
            self.target.masked(),
            self.media.display()
        );
        println!(
            "{:<24} {:<24} {:>10} {:>22}  git",
            "name", "saved", "database", "media"
        );
        for (size, meta) in snapshots {
            let media = match meta.media {
                Some(m) => format!("{} files, {}", m.files, term::human_bytes(m.bytes)),
                None => "none".into(),
            };
            let git = match (&meta.branch, &meta.commit) {
                (Some(branch), Some(commit)) => format!("{branch} @ {commit}"),
                (None, Some(commit)) => commit.clone(),
                _ => "-".into(),
            };
            println!(
                "{:<24} {:<24} {:>10} {:>22}  {git}",
                meta.name,
                meta.saved,
                term::human_bytes(size),
                media
            );
            match &meta.migrations {
                Some(list) if !list.is_empty() => {
                    let newest: Vec<String> = list
                        .iter()
                        .map(|(app, name)| format!("{app} {name}"))
                        .collect();
                    println!("    migrations: {}", newest.join(", "));
                }
                Some(_) => println!("    migrations: none applied"),
                None => println!("    migrations: no django_migrations table"),
            }
        }
        Ok(())
    }

    fn drop_snapshot(&self, name: &str, yes: bool) -> anyhow::Result<()> {
        let Some(meta) = self.meta_of(name)? else {
            return Err(self.unknown(name));
        };
        if !yes {
            if !term::stdin_is_terminal() {
                bail!(
                    "snapshot `{name}` (saved {}) would be removed: pass --yes to confirm (standard input is not a terminal)",
                    meta.saved
                );
            }
            if !term::confirm(&format!("Remove snapshot `{name}` (saved {})?", meta.saved))? {
                bail!("cancelled: nothing was changed");
            }
        }
        let (_lock, _media_lock) = self.locks()?;
        swap::drop_database(self.sh, self.tools, self.admin, &self.snapshot_db(name))?;
        let store = self.store(name, &meta.id);
        if store.exists() {
            if let Err(err) = fs::remove_dir_all(&store) {
                term::warn(format!(
                    "snapshot `{name}` is dropped, but its media could not be removed ({err}): the next run removes {}",
                    store.display()
                ));
            }
        }
        term::success(format!("removed snapshot `{name}` (saved {})", meta.saved));
        Ok(())
    }

    /// The newest applied migration per app, when the database has Django's table.
    fn migrations(&self) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let query = |sql: &str| {
            self.tools
                .query(self.sh, self.target, Access::ReadOnly, sql)
        };
        if query("select to_regclass('public.django_migrations') is not null")? != "t" {
            return Ok(None);
        }
        let answer = query(
            "select coalesce(json_agg(json_build_array(app, name) order by app), '[]') from \
             (select distinct on (app) app, name from public.django_migrations \
              order by app, applied desc, id desc) newest",
        )?;
        Ok(Some(serde_json::from_str(&answer).with_context(|| {
            format!("unexpected answer reading django_migrations: {answer}")
        })?))
    }

    /// `CREATE DATABASE to TEMPLATE from` at file level. The template may have no sessions
    /// for the moment of the copy: ours that we may end are ended, and the output says so.
    fn copy_database(&self, from: &str, to: &str, why: &str) -> anyhow::Result<()> {
        let strategy = if self.major >= 15 {
            " strategy file_copy"
        } else {
            ""
        };
        let sql = format!(
            "create database {} template {}{strategy}",
            ident(to),
            ident(from)
        );
        let started = std::time::Instant::now();
        loop {
            let ended = self.query(&format!(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                 where datname = {} and pid <> pg_backend_pid() and backend_type = 'client backend' \
                 and pg_has_role(usesysid, 'member')",
                literal(from)
            ))?;
            if ended != "0" {
                term::step(format!(
                    "ended {ended} session(s) on {from} for the moment of the copy ({why})"
                ));
            }
            match self.tools.query_state(self.sh, self.admin, &sql)? {
                Ok(_) => return Ok(()),
                // object_in_use: a session we may not end, or one that came back.
                Err(failure) if failure.state == "55006" => {
                    if started.elapsed() > Duration::from_secs(15) || process::interrupted() {
                        bail!(
                            "cannot copy database {from} on {}: other sessions keep using it; disconnect them (or end them as a superuser), then run again",
                            self.admin.host_port()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(failure) => {
                    return Err(failure.into_error(self.admin)).context(format!(
                        "copying database {from} at file level on {}",
                        self.admin.host_port()
                    ))
                }
            }
        }
    }
}

/// A snapshot's media staged in place of the live ones, with what the copy learnt of them.
struct SnapshotMedia<'a> {
    staged: StagedMedia,
    copy: media::Tracked,
    /// The snapshot's record of the live files that hold its contents.
    record: PathBuf,
    id: &'a str,
}

impl Staged for SnapshotMedia<'_> {
    fn dir(&self) -> &Path {
        &self.staged.dir
    }

    /// Swaps the staged media in, then writes the snapshot's record anew: which live files
    /// now hold its contents.
    fn swap_in(
        staged: Option<Self>,
        target: Option<&Path>,
    ) -> anyhow::Result<Option<media::Totals>> {
        let (Some(media), Some(target)) = (staged, target) else {
            return Ok(None);
        };
        let stamp = Stamp::now(&media.staged.dir)?;
        let replaced = atomic_file::replace_dir_keeping_old(&media.staged.dir, target)?;
        let live = atomic_file::resolved(target);
        let old = replaced.as_ref().map(|(old, _)| old.as_path());
        let origins = media::settle_origins(media.copy, old, &live, &stamp);
        if let Some((old, target)) = &replaced {
            atomic_file::remove_replaced(old, target);
        }
        if let Err(err) = origins.write(&media.record, media.id) {
            term::warn(format!(
                "the media are in place, but which of them are unchanged could not be recorded ({err:#}): the next save or restore copies every file"
            ));
        }
        Ok(Some(media.staged.totals))
    }
}

/// A random id for one save (its database and media name it both).
fn snapshot_id(snapshot: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!("{snapshot} {} {:?}", std::process::id(), now);
    media::hex(&Sha256::digest(seed.as_bytes()))[..16].to_string()
}

/// `git <args>` in the checkout, when there is one.
fn git(sh: &Shell, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(sh.current_dir())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_stay_plain_and_short() {
        for good in ["before-migration", "v4.1", "a", "x_1", &"n".repeat(30)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ä", "x;drop", &"n".repeat(31)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid snapshot name"), "{bad}: {err}");
        }
    }
}
