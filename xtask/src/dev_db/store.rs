//! The snapshots of a dev database: found on its server, their media stores beside the
//! media directory, the locks a run takes and the leftovers of interrupted runs; `list` and
//! `drop`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use crate::{
    atomic_file,
    pg::sql::literal,
    pipeline::swap::{
        self,
        lock::{MediaLock, TargetLock},
    },
    process, term,
};

use super::{spare::SpareState, Dev, Found, Meta};

impl Dev<'_> {
    /// Where the snapshots' media live: beside the media directory (on its file system, so
    /// that copies can be reflinks and restores renames).
    pub(super) fn stores(&self) -> PathBuf {
        let real = atomic_file::resolved(self.media);
        let parent = real
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        parent.join(".netpoint-dev-db")
    }

    /// The media directory of the save `id` of snapshot `name`.
    pub(super) fn store(&self, name: &str, id: &str) -> PathBuf {
        self.stores().join(format!("{}{name}@{id}", self.prefix))
    }

    /// The description of snapshot `name`, when there is one. A database of that name that
    /// `dev-db` did not make is refused: it is never taken for a snapshot, nor replaced.
    pub(super) fn meta_of(&self, name: &str) -> anyhow::Result<Option<Meta>> {
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
    pub(super) fn snapshots(&self) -> anyhow::Result<&[Found]> {
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
    pub(super) fn locks(&self) -> anyhow::Result<(TargetLock, Option<MediaLock>)> {
        let (lock, media_lock) =
            swap::take_locks(self.cx, self.admin, self.target, Some(self.media))?;
        swap::drop_stale(self.cx, self.admin, &lock.stale);
        self.remove_stale_stores()?;
        Ok((lock, media_lock))
    }

    /// Removes media directories of this dev database's snapshots that no snapshot names
    /// (a save killed before or after its databases were renamed), and `.npsnap_*-<pid>`
    /// directories of dead runs of earlier versions.
    pub(super) fn remove_stale_stores(&self) -> anyhow::Result<()> {
        let Ok(entries) = fs::read_dir(self.stores()) else {
            return self.remove_stale_spares();
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
        self.remove_stale_spares()
    }

    pub(super) fn list(&self) -> anyhow::Result<()> {
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
            "{:<24} {:<24} {:>10} {:>22}  {:<14}  git",
            "name", "saved", "database", "media", "spare"
        );
        let (mut snapshots_bytes, mut spares_bytes) = (0, 0);
        let current = super::hook::current_branch();
        let spare_sizes = self.spare_sizes()?;
        for (size, meta) in snapshots {
            let spare = self.spare_state(&meta.name, meta)?;
            let media_bytes = meta.media.map_or(0, |m| m.bytes);
            snapshots_bytes += size + media_bytes;
            if spare == SpareState::Ready {
                spares_bytes += media_bytes;
            }
            spares_bytes += spare_sizes
                .iter()
                .find(|(name, _)| *name == meta.name)
                .map_or(0, |(_, size)| *size);
            let media = match meta.media {
                Some(m) => format!("{} files, {}", m.files, term::human_bytes(m.bytes)),
                None => "none".into(),
            };
            let mut git = match (&meta.branch, &meta.commit) {
                (Some(branch), Some(commit)) => format!("{branch} @ {commit}"),
                (Some(branch), None) => branch.clone(),
                (None, Some(commit)) => commit.clone(),
                _ => "-".into(),
            };
            if meta.branch.is_some() && meta.branch == current {
                git.push_str("  (branch checked out)");
            }
            println!(
                "{:<24} {:<24} {:>10} {:>22}  {:<14}  {git}",
                meta.name,
                meta.saved,
                term::human_bytes(size),
                media,
                match spare {
                    SpareState::Preparing => format!(
                        "{} {}%",
                        spare.word(),
                        self.spare_progress(&meta.name, meta, size)
                    ),
                    _ => spare.word().to_string(),
                }
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
            if let Some(drift) = self.migration_drift(meta) {
                println!("    migrations: {drift}");
            }
        }
        println!(
            "disk: snapshots {}, spares {} (media copies that share blocks by reflink take less)",
            term::human_bytes(snapshots_bytes),
            term::human_bytes(spares_bytes)
        );
        Ok(())
    }

    /// The size of each spare database of this dev database, by snapshot name.
    fn spare_sizes(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let prefix = self.spare_db("");
        let answer = self.query(&format!(
            "select coalesce(json_agg(json_build_array(substr(datname, {}), pg_database_size(oid))), '[]') \
             from pg_database where starts_with(datname, {})",
            prefix.len() + 1,
            literal(&prefix)
        ))?;
        serde_json::from_str(&answer).with_context(|| {
            format!(
                "unexpected answer from {} listing spares: {answer}",
                self.admin
            )
        })
    }

    pub(super) fn drop_snapshot(&self, name: &str, yes: bool) -> anyhow::Result<()> {
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
        swap::drop_database(self.cx, self.admin, &self.snapshot_db(name))?;
        let store = self.store(name, &meta.id);
        if store.exists() {
            if let Err(err) = fs::remove_dir_all(&store) {
                term::warn(format!(
                    "snapshot `{name}` is dropped, but its media could not be removed ({err}): the next run removes {}",
                    store.display()
                ));
            }
        }
        if let Err(err) = self.remove_spare(name) {
            term::warn(format!(
                "snapshot `{name}` is dropped, but its spare could not be removed ({err:#}): the next run removes it"
            ));
        }
        term::success(format!("removed snapshot `{name}` (saved {})", meta.saved));
        Ok(())
    }
}
