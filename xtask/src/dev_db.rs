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
//! makes a new database from the snapshot and swaps it in with the replace sequence
//! `clone-prod` uses (`pipeline::replace`).
//!
//! A restore renames the snapshot's ready spare into place instead, when there is one
//! (`spare.rs`).
//!
//! `save.rs`, `restore.rs`, `spare.rs` and `store.rs` (the snapshots found, their media,
//! `list` and `drop`) hold the actions.

mod hook;
mod migrations;
mod restore;
mod save;
mod spare;
mod spare_media;
mod store;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{
    cli,
    context::Context,
    pg::{
        dev_container::DevContainer,
        sql::{ident, literal},
        DbUrl, QuerySession,
    },
    pipeline::{
        replace::Replacement,
        staged_media::check_holds_nothing_else,
        swap::{self, LoadGuard},
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
        /// Keep no ready spare of it (restores copy it instead) [also: $NETPOINT_DEV_DB_NO_SPARE=1].
        #[arg(long)]
        no_spare: bool,
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
    /// Keep a snapshot per git branch: `install` a post-checkout hook, or `uninstall` it.
    Hook {
        #[command(subcommand)]
        hook: HookAction,
    },
    /// Prepare the spare of snapshot NAME (run detached by save and restore).
    #[command(hide = true)]
    Spare {
        name: String,
        /// First drop the previous dev database this run was handed, once run PID exits.
        #[arg(long, value_name = "PID")]
        after: Option<u32>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum HookAction {
    /// Install the post-checkout hook: on a branch switch, save the branch left and restore
    /// the one checked out (a hook already there is kept and runs first).
    Install,
    /// Remove the hook, putting back the one that was there before.
    Uninstall,
    /// What the hook runs: git's post-checkout arguments.
    #[command(hide = true)]
    Run {
        old: String,
        new: String,
        flag: String,
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
    /// Every applied Django migration, `[app, name]`, to compare with the checkout's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied: Option<Vec<(String, String)>>,
    media: Option<MediaSize>,
    /// Saved with `--no-spare`: restores copy it, no spare is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_spare: bool,
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
        match &self.action {
            Action::Hook {
                hook: HookAction::Install,
            } => hook::install(),
            Action::Hook {
                hook: HookAction::Uninstall,
            } => hook::uninstall(),
            Action::Hook {
                hook: HookAction::Run { old, flag, .. },
            } => {
                if let Some((left, checked_out)) = hook::switch(flag) {
                    // A checkout is never blocked: whatever fails is one line.
                    match self.follow_branch(cx, old, &left, &checked_out) {
                        Ok(line) => eprintln!("dev-db: {line}"),
                        Err(err) => eprintln!("dev-db: {err:#}"),
                    }
                }
                Ok(())
            }
            _ => self.run_on(cx, None).map(|_| ()),
        }
    }

    /// Saves the state of branch `left` (at commit `old`) and restores the one saved for
    /// `checked_out`, if any; returns the one line saying what was done.
    fn follow_branch(
        &self,
        cx: &Context,
        old: &str,
        left: &str,
        checked_out: &str,
    ) -> anyhow::Result<String> {
        let (save_as, restore) = (hook::snapshot_name(left), hook::snapshot_name(checked_out));
        let with = |action| DevDb {
            action,
            target: self.target.clone(),
            target_media: self.target_media.clone(),
            allow_remote_target: self.allow_remote_target,
        };
        let commit = hook::git(&["rev-parse", "--short", old]);
        let started = std::time::Instant::now();
        with(Action::Save {
            name: save_as.clone(),
            force: true,
            no_spare: false,
        })
        .run_on(cx, Some((left, commit)))
        .with_context(|| format!("could not save branch {left}, so nothing was restored"))?;
        // Hundredths: a restore that renames a spare in takes about a tenth of a second.
        let took = |started: std::time::Instant| format!("{:.2}s", started.elapsed().as_secs_f64());
        let saved = format!("saved branch {left} as `{save_as}` ({})", took(started));
        let started = std::time::Instant::now();
        let restored = with(Action::Restore {
            name: restore.clone(),
            yes: true,
        })
        .run_on(cx, Some((checked_out, None)))
        .with_context(|| format!("{saved}, but could not restore branch {checked_out}"))?;
        Ok(match restored {
            true => format!(
                "{saved}, restored `{restore}` of branch {checked_out} ({})",
                took(started)
            ),
            false => format!("{saved}; branch {checked_out} has no snapshot yet, the dev database stays as it is"),
        })
    }

    /// Runs the action; with `branch`, for the hook: the branch (and commit) a save records,
    /// and a restore of a snapshot that does not exist does nothing and returns false.
    fn run_on(&self, cx: &Context, branch: Option<(&str, Option<String>)>) -> anyhow::Result<bool> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let name = match &self.action {
            Action::Save { name, .. }
            | Action::Restore { name, .. }
            | Action::Drop { name, .. }
            | Action::Spare { name, .. } => Some(check_name(name)?),
            Action::List | Action::Hook { .. } => None,
        };
        let media = cli::dev_media(self.target_media.clone())
            .unwrap_or_else(|| sh.current_dir().join("netpoint/media"));
        if matches!(self.action, Action::Save { .. } | Action::Restore { .. }) {
            // A restore replaces the media directory and a save copies it: never `/`, `~`
            // or a directory that holds the checkout.
            check_holds_nothing_else(&media)?;
        }
        let target = match cli::dev_database(self.target.clone())? {
            Some(url) => url,
            None => DevContainer::new(sh).ensure(sh, tools)?,
        };
        let yes = match &self.action {
            Action::Restore { yes, .. } => *yes,
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
        let inspected = replacement.inspect_unless_confirmed(sh, tools)?;
        let (admin, state) = (&inspected.admin, &inspected.state);
        let key = &state.snapshot_key;
        if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("unexpected answer from {admin} for the snapshots' key: {key}");
        }
        let dev = Dev {
            cx,
            target: &target,
            admin,
            media: &media,
            major: state.server.major,
            prefix: format!("npsnap_{key}_"),
            found: std::cell::OnceCell::new(),
            checkout_migrations: std::cell::OnceCell::new(),
            session: QuerySession::new(admin),
            detached: Detached {
                target: self.target.clone(),
                media: media.clone(),
                allow_remote_target: self.allow_remote_target,
            },
        };
        // Its psql connects while the locks are taken.
        dev.session.connect_early(sh, tools);
        match self.action {
            Action::Save {
                force, no_spare, ..
            } => {
                if !state.exists {
                    bail!(
                        "there is no dev database {target}: make one with `cargo xtask seed-dev` (or clone-prod), then save it"
                    );
                }
                let git = branch.map(|(branch, commit)| (branch.to_string(), commit));
                dev.save(name.unwrap(), force, no_spare || spares_off(), git)
            }
            Action::Restore { .. } => {
                if branch.is_some() && dev.meta_of(name.unwrap())?.is_none() {
                    return Ok(false);
                }
                dev.restore(name.unwrap(), &replacement, &inspected)
            }
            Action::List => dev.list(),
            Action::Drop { yes, .. } => dev.drop_snapshot(name.unwrap(), yes),
            Action::Spare { after, .. } => dev.prepare_spare(name.unwrap(), after),
            Action::Hook { .. } => unreachable!("the hook's actions are run above"),
        }
        .map(|()| true)
    }
}

/// `NETPOINT_DEV_DB_NO_SPARE=1`: no spares, for a disk that cannot hold two copies.
fn spares_off() -> bool {
    std::env::var("NETPOINT_DEV_DB_NO_SPARE").is_ok_and(|v| v.trim() == "1")
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
    cx: &'a Context,
    target: &'a DbUrl,
    admin: &'a DbUrl,
    media: &'a Path,
    major: u32,
    /// `npsnap_<key>_`: the snapshots of this dev database on its server.
    prefix: String,
    /// The snapshots, once read (a run that holds the locks is the only one to change them).
    found: std::cell::OnceCell<Vec<Found>>,
    /// The checkout's Django migration files, once looked for.
    checkout_migrations:
        std::cell::OnceCell<Option<std::collections::BTreeSet<migrations::Migration>>>,
    /// The run's queries on the server, one session for all of them.
    session: QuerySession,
    /// What a detached run preparing a spare is given to find the same dev database.
    detached: Detached,
}

/// The settings a detached run of xtask is started with: the URL travels in its
/// environment, never on its command line.
struct Detached {
    target: Option<String>,
    media: PathBuf,
    allow_remote_target: bool,
}

/// A snapshot found on the server: its name, its database's size and its description
/// (none when this tool cannot read it).
struct Found {
    name: String,
    size: u64,
    meta: Option<Meta>,
}

impl Dev<'_> {
    pub(super) fn snapshot_db(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `npsnaptmp_<key>_<pid>` or `npsnapold_<key>_<pid>`: this run's temporary databases,
    /// which `swap::stale_query` finds if the run dies.
    pub(super) fn temp_db(&self, kind: &str) -> String {
        format!(
            "npsnap{kind}_{}{}",
            &self.prefix["npsnap_".len()..],
            std::process::id()
        )
    }

    /// A query on the server's maintenance database, in the run's one session. Several
    /// statements are each their own transaction unless wrapped in `begin; … commit;`.
    pub(super) fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.session.query(&self.cx.sh, &self.cx.tools, sql)
    }

    /// One line on how the snapshot's applied migrations differ from the checkout's
    /// migration files, when the checkout has some and the save recorded them.
    pub(super) fn migration_drift(&self, meta: &Meta) -> Option<String> {
        let applied = meta.applied.as_deref()?;
        let checkout = self.checkout_migrations.get_or_init(|| {
            // The checkout the command runs in (as the hook does), else the workspace.
            let root = hook::git(&["rev-parse", "--show-toplevel"])
                .map_or_else(|| self.cx.sh.current_dir(), PathBuf::from);
            migrations::in_checkout(&root)
        });
        migrations::compare(applied, checkout.as_ref()?)
    }

    pub(super) fn unknown(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "there is no snapshot `{name}` of {}: `cargo xtask dev-db list` shows those there are",
            self.target.masked()
        )
    }

    /// Drops a database this run made and no longer wants; one that stays is said to.
    pub(super) fn discard(&self, database: &str) {
        if swap::drop_database(self.cx, self.admin, database).is_err() {
            process::note_left_behind();
            term::warn(format!(
                "could not remove {database}: the next run of any command on {} removes it",
                self.target.masked()
            ));
        }
    }

    /// `CREATE DATABASE to TEMPLATE from` at file level. The template may have no sessions
    /// for the moment of the copy: ours that we may end are ended, and the output says so.
    pub(super) fn copy_database(&self, from: &str, to: &str, why: &str) -> anyhow::Result<()> {
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
            match self.cx.tools.query_state(&self.cx.sh, self.admin, &sql)? {
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
