//! `cargo xtask dev-db`: named snapshots of the dev database and media, saved and restored
//! in about a second.
//!
//! A snapshot's database is a file-level copy of the dev database on the same server
//! (`CREATE DATABASE … TEMPLATE`), named `npsnap_<key>_<name>` where the key stands for the
//! dev database's name, closed to connections, and described by a JSON comment that `list`
//! reads. Its media are a copy (reflinks where the file system has them) in
//! `.netpoint-dev-db/` beside the media directory. A restore makes a new database from the
//! snapshot and swaps it in exactly as `clone-prod` swaps a load in.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{
    atomic_file::{self, StagingDir},
    context::Context,
    media,
    pg::{
        sql::{ident, literal},
        url::{self, path_or_env},
        Access, DbUrl, PgTools,
    },
    pipeline::{
        staged_media::StagedMedia,
        swap::{
            self,
            lock::{MediaLock, TargetLock},
            LoadGuard,
        },
    },
    process, seed_dev, term,
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
    /// Random, also in `snapshot.json` beside the media: the two halves belong together.
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

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct MediaSize {
    files: u64,
    bytes: u64,
}

/// The prefix of a snapshot database's comment, which marks it as one.
pub const SNAPSHOT_MARK: &str = "{\"netpoint_dev_db_snapshot\":";

impl DevDb {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let name = match &self.action {
            Action::Save { name, .. }
            | Action::Restore { name, .. }
            | Action::Drop { name, .. } => Some(check_name(name)?),
            Action::List => None,
        };
        let target = match url::url_or_env(self.target.clone(), "NETPOINT_DATABASE_URL")? {
            Some(url) => url,
            None => seed_dev::container::DevContainer::new(sh).ensure(sh, tools)?,
        };
        swap::guard_target(
            &target,
            &LoadGuard {
                yes: true,
                allow_remote_target: self.allow_remote_target,
                allow_downgrade: false,
            },
        )?;
        let media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT")
            .unwrap_or_else(|| sh.current_dir().join("netpoint/media"));
        let (admin, state) = swap::inspect_target(sh, tools, &target)?;
        let dev = Dev {
            sh,
            tools,
            target: &target,
            admin: &admin,
            media: &media,
            major: state.server.major,
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
            Action::Restore { yes, .. } => dev.restore(name.unwrap(), &state, yes),
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
}

impl Dev<'_> {
    /// `npsnap_<key>_`: the snapshots of this dev database.
    fn prefix(&self) -> String {
        // Per server and database: two servers' `netpoint` keep their snapshots apart, media
        // included.
        let key = Sha256::digest(
            format!("{}/{}", self.target.host_port(), self.target.database).as_bytes(),
        );
        format!("npsnap_{}_", &media::hex(&key)[..8])
    }

    fn snapshot_db(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// Where the snapshots' media live: beside the media directory (on its file system, so
    /// that copies can be reflinks and restores renames).
    fn store(&self, name: &str) -> PathBuf {
        let real = atomic_file::resolved(self.media);
        let parent = real
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        parent
            .join(".netpoint-dev-db")
            .join(format!("{}{name}", self.prefix()))
    }

    fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.tools
            .query(self.sh, self.admin, Access::ReadWrite, sql)
    }

    fn meta_of(&self, name: &str) -> anyhow::Result<Option<Meta>> {
        let comment = self.query(&format!(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = {}",
            literal(&self.snapshot_db(name))
        ))?;
        if comment.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&comment).with_context(|| {
            format!("snapshot `{name}` has a description this tool did not write")
        })?))
    }

    /// The dev database's and its media's locks, as clone-prod and seed-dev take them.
    fn locks(&self) -> anyhow::Result<(TargetLock, Option<MediaLock>)> {
        swap::take_locks(
            self.sh,
            self.tools,
            self.admin,
            self.target,
            Some(self.media),
        )
    }

    fn unknown(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "there is no snapshot `{name}` of {}: `cargo xtask dev-db list` shows those there are",
            self.target.masked()
        )
    }

    fn save(&self, name: &str, force: bool) -> anyhow::Result<()> {
        let snapshot = self.snapshot_db(name);
        let (_lock, _media_lock) = self.locks()?;
        if let Some(meta) = self.meta_of(name)? {
            if !force {
                bail!(
                    "snapshot `{name}` exists (saved {}): pass --force to save over it",
                    meta.saved
                );
            }
        }
        let meta = Meta {
            netpoint_dev_db_snapshot: 1,
            id: snapshot_id(&snapshot),
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
        // A name no snapshot has (snapshot names never hold `tmp_`).
        let new = format!("npsnaptmp_{}", &snapshot["npsnap_".len()..]);
        swap::drop_database(self.sh, self.tools, self.admin, &new)?;
        let made = process::critical(|| {
            self.copy_database(&self.target.database, &new, "saving it")?;
            self.query(&format!(
                "alter database {} allow_connections false",
                ident(&new)
            ))
        });
        if let Err(err) = made {
            let _ = swap::drop_database(self.sh, self.tools, self.admin, &new);
            return Err(err);
        }
        let store = self.store(name);
        atomic_file::remove_stale_siblings(&store);
        let staged = StagingDir(atomic_file::sibling(&store, "new"));
        let media_size = match self.media.is_dir() {
            true => {
                term::step(format!("copying media {}", self.media.display()));
                let earlier = self.newest_media(name)?;
                let copied = copy_media(self.media, &staged.join("media"), earlier.as_deref())
                    .and_then(|size| process::check_interrupted().map(|()| size));
                match copied {
                    Ok(size) => Some(size),
                    Err(err) => {
                        let _ = swap::drop_database(self.sh, self.tools, self.admin, &new);
                        return Err(err);
                    }
                }
            }
            false => None,
        };
        let meta = Meta {
            media: media_size,
            ..meta
        };
        let text = serde_json::to_string(&meta)?;
        let committed = process::critical(|| {
            self.query(&format!(
                "comment on database {} is {}",
                ident(&new),
                literal(&text)
            ))?;
            // The media first (the previous ones kept aside), then the database; a failure
            // of the second puts the media back.
            let aside = atomic_file::sibling(&store, "old");
            fs::create_dir_all(store.parent().unwrap())?;
            if store.exists() {
                fs::rename(&store, &aside)
                    .with_context(|| format!("moving {} aside", store.display()))?;
            }
            let put_back = || {
                let _ = fs::remove_dir_all(&store);
                let _ = fs::rename(&aside, &store);
            };
            let placed = (|| {
                if media_size.is_some() {
                    fs::write(staged.join("snapshot.json"), &text)?;
                    fs::rename(&*staged, &store).with_context(|| {
                        format!("putting the media snapshot at {}", store.display())
                    })?;
                }
                swap::drop_database(self.sh, self.tools, self.admin, &snapshot)?;
                self.query(&format!(
                    "alter database {} rename to {}",
                    ident(&new),
                    ident(&snapshot)
                ))
            })();
            if let Err(err) = placed {
                put_back();
                return Err(err);
            }
            if aside.exists() {
                if let Err(err) = fs::remove_dir_all(&aside) {
                    term::warn(format!(
                        "snapshot `{name}` is saved, but its previous media could not be removed ({err}): remove {} by hand",
                        aside.display()
                    ));
                }
            }
            anyhow::Ok(())
        });
        if let Err(err) = committed {
            let _ = swap::drop_database(self.sh, self.tools, self.admin, &new);
            return Err(err);
        }
        let size = self.query(&format!("select pg_database_size({})", literal(&snapshot)))?;
        term::success(format!(
            "saved {} as snapshot `{name}`: database {}{}",
            self.target.masked(),
            term::human_bytes(size.parse().unwrap_or(0)),
            match media_size {
                Some(m) => format!(", media {} files ({})", m.files, term::human_bytes(m.bytes)),
                None => format!(", no media ({} does not exist)", self.media.display()),
            }
        ));
        Ok(())
    }

    fn restore(&self, name: &str, state: &swap::TargetState, yes: bool) -> anyhow::Result<()> {
        let snapshot = self.snapshot_db(name);
        let Some(meta) = self.meta_of(name)? else {
            return Err(self.unknown(name));
        };
        let store = self.store(name).join("media");
        let media = meta.media.map(|_| self.media);
        if !yes {
            swap::confirm_replace(
                self.target,
                state,
                media,
                &LoadGuard {
                    yes: false,
                    allow_remote_target: true,
                    allow_downgrade: false,
                },
            )?;
        }
        let (_lock, mut media_lock) = self.locks()?;
        let staged = match meta.media {
            Some(size) => {
                let beside = fs::read_to_string(self.store(name).join("snapshot.json"))
                    .ok()
                    .and_then(|text| serde_json::from_str::<Meta>(&text).ok());
                if !store.is_dir() || beside.is_none_or(|b| b.id != meta.id) {
                    bail!(
                        "the media of snapshot `{name}` are missing or belong to another save ({}): drop the snapshot and save it again",
                        store.display()
                    );
                }
                atomic_file::remove_stale_staging(self.media);
                let dir = StagingDir(atomic_file::staging_dir(self.media)?);
                term::step(format!(
                    "copying the snapshot's media into place beside {}",
                    self.media.display()
                ));
                // The live media are replaced: what they hold unchanged is linked from them.
                let live = self.media.is_dir().then_some(self.media);
                let copied = copy_media(&store, &dir, live)?;
                process::check_interrupted()?;
                if (copied.files, copied.bytes) != (size.files, size.bytes) {
                    bail!(
                        "the media of snapshot `{name}` at {} hold {} files ({}) where {} files ({}) were saved: drop the snapshot and save it again",
                        store.display(),
                        copied.files,
                        term::human_bytes(copied.bytes),
                        size.files,
                        term::human_bytes(size.bytes)
                    );
                }
                let totals = media::Totals {
                    files: size.files,
                    bytes: size.bytes,
                };
                Some(StagedMedia {
                    dir,
                    totals,
                    linked: media::Totals::default(),
                })
            }
            None => {
                term::step(format!(
                    "the snapshot has no media: {} stays as it is",
                    self.media.display()
                ));
                None
            }
        };
        swap::record_swap(&mut media_lock, self.target, &staged)?;
        swap::replace_with(
            self.sh,
            self.tools,
            self.admin,
            self.target,
            |temp| self.copy_database(&snapshot, &temp.database, "restoring it"),
            |_| Ok(()),
            || match &staged {
                Some(staged) => atomic_file::replace_dir(&staged.dir, self.media),
                None => Ok(()),
            },
        )?;
        term::success(format!(
            "restored snapshot `{name}` (saved {}) into {}{}",
            meta.saved,
            self.target.masked(),
            match meta.media {
                Some(m) => format!(" and {} ({} files)", self.media.display(), m.files),
                None => String::new(),
            }
        ));
        Ok(())
    }

    fn list(&self) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Row {
            size: u64,
            meta: Option<String>,
        }
        let prefix = self.prefix();
        let answer = self.query(&format!(
            "select coalesce(json_agg(json_build_object('size', pg_database_size(oid), \
             'meta', shobj_description(oid, 'pg_database')) order by datname), '[]') \
             from pg_database where starts_with(datname, {})",
            literal(&prefix)
        ))?;
        let rows: Vec<Row> = serde_json::from_str(&answer).with_context(|| {
            format!(
                "unexpected answer from {} listing snapshots: {answer}",
                self.admin
            )
        })?;
        let snapshots: Vec<(u64, Meta)> = rows
            .into_iter()
            .filter_map(|r| Some((r.size, serde_json::from_str(r.meta.as_deref()?).ok()?)))
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
        let store = self.store(name);
        if store.exists() {
            if let Err(err) = fs::remove_dir_all(&store) {
                term::warn(format!(
                    "snapshot `{name}` is dropped, but its media could not be removed ({err}): remove {} by hand",
                    store.display()
                ));
            }
        }
        term::success(format!("removed snapshot `{name}` (saved {})", meta.saved));
        Ok(())
    }

    /// The media of this database's newest other snapshot, which a save links unchanged
    /// files from: snapshots are never written to.
    fn newest_media(&self, except: &str) -> anyhow::Result<Option<PathBuf>> {
        let newest = self.query(&format!(
            "select datname from pg_database where starts_with(datname, {}) and datname <> {} \
             and starts_with(shobj_description(oid, 'pg_database'), {}) \
             order by shobj_description(oid, 'pg_database')::json->>'saved' desc limit 1",
            literal(&self.prefix()),
            literal(&self.snapshot_db(except)),
            literal(SNAPSHOT_MARK)
        ))?;
        let Some(name) = newest.strip_prefix(&self.prefix()) else {
            return Ok(None);
        };
        let media = self.store(name).join("media");
        Ok(media.is_dir().then_some(media))
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

/// Copies the media tree `src` into the new directory `dst`, so that later changes to
/// either side, a file rewritten in place included, never reach the other: a file that
/// `previous` (a tree nobody writes to through these names again: an older snapshot, or the
/// live media a restore replaces) holds with the same size, time and mode is hard-linked from
/// it; any other is copied, a reflink where the file system has them (`fs::copy` asks for
/// one), its time and mode kept.
fn copy_media(src: &Path, dst: &Path, previous: Option<&Path>) -> anyhow::Result<MediaSize> {
    use std::os::unix::fs::MetadataExt;
    let entries = media::scan(src)?;
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in &entries {
        let to = dst.join(&entry.rel);
        match &entry.kind {
            media::Kind::Dir => {
                fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?
            }
            media::Kind::Symlink { target } => std::os::unix::fs::symlink(target, &to)
                .with_context(|| format!("creating link {}", to.display()))?,
            media::Kind::File { .. } => {}
        }
    }
    let previous = previous.and_then(|p| fs::canonicalize(p).ok());
    let same = |new: &fs::Metadata, old: &fs::Metadata| {
        old.is_file()
            && (old.dev(), old.ino()) != (new.dev(), new.ino())
            && old.len() == new.len()
            && old.mode() == new.mode()
            && old.modified().ok() == new.modified().ok()
    };
    let size = entries
        .par_iter()
        .filter(|e| matches!(e.kind, media::Kind::File { .. }))
        .map(|entry| {
            let (from, to) = (src.join(&entry.rel), dst.join(&entry.rel));
            let meta = fs::symlink_metadata(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let old = previous
                .as_deref()
                .and_then(|p| media::earlier_file(p, &entry.rel));
            if let Some(old) = old {
                let unchanged = fs::symlink_metadata(&old).is_ok_and(|was| same(&meta, &was));
                if unchanged && fs::hard_link(&old, &to).is_ok() {
                    return anyhow::Ok(meta.len());
                }
            }
            let bytes = fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            if let Ok(modified) = meta.modified() {
                // Through a read-only descriptor: a copy of a 0444 file may not be opened
                // for writing, and its owner may set its times anyway.
                let _ = fs::File::open(&to).and_then(|f| f.set_modified(modified));
            }
            anyhow::Ok(bytes)
        })
        .try_fold(
            || MediaSize { files: 0, bytes: 0 },
            |acc, bytes| {
                bytes.map(|b| MediaSize {
                    files: acc.files + 1,
                    bytes: acc.bytes + b,
                })
            },
        )
        .try_reduce(
            || MediaSize { files: 0, bytes: 0 },
            |a, b| {
                Ok(MediaSize {
                    files: a.files + b.files,
                    bytes: a.bytes + b.bytes,
                })
            },
        )?;
    media::copy_dir_modes(src, &entries, dst)?;
    Ok(size)
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

    #[test]
    fn media_copies_are_independent_of_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("media");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f.png"), b"first").unwrap();
        fs::write(src.join("top.txt"), b"top").unwrap();
        std::os::unix::fs::symlink("a/b/f.png", src.join("link")).unwrap();
        let copy = dir.path().join("copy");
        let size = copy_media(&src, &copy, None).unwrap();
        assert_eq!((size.files, size.bytes), (2, 8));
        fs::write(src.join("a/b/f.png"), b"rewritten in place").unwrap();
        assert_eq!(fs::read(copy.join("a/b/f.png")).unwrap(), b"first");
        assert_eq!(
            fs::read_link(copy.join("link")).unwrap(),
            Path::new("a/b/f.png")
        );
        let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(mtime(&src.join("top.txt")), mtime(&copy.join("top.txt")));

        // From an earlier tree: the unchanged file is linked, the rewritten one copied.
        use std::os::unix::fs::MetadataExt;
        let again = dir.path().join("again");
        copy_media(&src, &again, Some(&copy)).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&copy.join("top.txt")), ino(&again.join("top.txt")));
        assert_ne!(ino(&copy.join("a/b/f.png")), ino(&again.join("a/b/f.png")));
        assert_eq!(
            fs::read(again.join("a/b/f.png")).unwrap(),
            b"rewritten in place"
        );
    }
}
