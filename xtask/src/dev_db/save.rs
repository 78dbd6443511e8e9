//! `dev-db save`: a file-level copy of the dev database and a copy of its media, linked
//! from an earlier snapshot where unchanged, made to count by one rename.

use std::{fs, path::PathBuf};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{
    atomic_file::{self, StagingDir},
    media::{self, Origins},
    pg::{
        sql::{ident, literal},
        Access,
    },
    pipeline::swap,
    process, term,
};

use super::{Dev, MediaSize, Meta, FORMAT, ORIGINS};

impl Dev<'_> {
    /// With `git`, the branch and commit to record (the hook saves the branch just left).
    pub(super) fn save(
        &self,
        name: &str,
        force: bool,
        no_spare: bool,
        git_state: Option<(String, Option<String>)>,
    ) -> anyhow::Result<()> {
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
            branch: match &git_state {
                Some((branch, _)) => Some(branch.clone()),
                None => git(&self.cx.sh, &["rev-parse", "--abbrev-ref", "HEAD"]),
            },
            commit: match git_state {
                Some((_, commit)) => commit,
                None => git(&self.cx.sh, &["rev-parse", "--short", "HEAD"]),
            },
            migrations: None,
            applied: None,
            media: None,
            no_spare,
        };
        // The new media go beside the previous ones, under a name only this save's database
        // will give; until the databases are renamed, nothing of the snapshot has changed.
        let store = self
            .media
            .is_dir()
            .then(|| StagingDir(self.store(name, &id)));
        let (migrations, applied) = self.migrations()?.unzip();
        let earlier = match &store {
            Some(_) => self.earlier_copy()?,
            None => None,
        };
        process::check_interrupted()?;
        let new = self.temp_db("tmp");
        // Made before either copy starts: a run killed during them leaves it for the next
        // run to remove, whichever was further along.
        if let Some(store) = &store {
            fs::create_dir_all(&**store)
                .with_context(|| format!("creating {}", store.display()))?;
        }
        // The media are copied (mostly linked) on a thread while the server copies the
        // database: a save takes the longer of the two, not their sum.
        let (copied, made) = std::thread::scope(|scope| {
            let media = store.as_ref().map(|store| {
                term::step(format!("copying media {}", self.media.display()));
                let (live, id) = (self.media, &id);
                let earlier = earlier
                    .as_ref()
                    .map(|(dir, origins)| (dir.as_path(), origins));
                scope.spawn(move || -> anyhow::Result<_> {
                    let copy = media::copy_from_live(live, &store.join("media"), earlier)?;
                    copy.origins.write(&store.join(ORIGINS), id)?;
                    Ok(copy)
                })
            });
            // The server finishes a copy whose session a signal ended: it runs to its end,
            // and is removed if the run stops after it.
            let made =
                process::critical(|| self.copy_database(&self.target.database, &new, "saving it"));
            let copied = media
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .transpose();
            (copied, made)
        });
        let copied = match (copied, made) {
            (Ok(copied), Ok(_)) => copied,
            // A copy whose session a signal ended may be there all the same.
            (copied, made) => {
                self.discard(&new);
                return Err(made.err().or(copied.err()).expect("one failed"));
            }
        };
        let meta = Meta {
            migrations,
            applied,
            media: copied.as_ref().map(|c| MediaSize {
                files: c.all.files,
                bytes: c.all.bytes,
            }),
            ..meta
        };
        let text = serde_json::to_string(&meta)?;
        let made = (|| {
            if let Some(store) = &store {
                atomic_file::write_bytes(&store.join("snapshot.json"), text.as_bytes())?;
            }
            process::critical(|| {
                self.query(&format!(
                    "alter database {} allow_connections false",
                    ident(&new)
                ))?;
                self.query(&format!(
                    "comment on database {} is {}",
                    ident(&new),
                    literal(&text)
                ))
            })
        })();
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
            // In a psql detached from the run: a drop forces a checkpoint nobody should wait
            // for. Should it die, `npsnapold_<key>_<pid>` is a leftover the next run removes.
            swap::drop_in_background(self.cx, self.admin, &old);
            let dir = self.store(name, &previous.id);
            if store.as_deref() != Some(dir.as_path()) && dir.exists() {
                // With a spare to prepare, the previous media go aside as one of the spare's
                // unfinished directories: the background run removes them with the spare it
                // replaces, and nobody waits for thousands of files to be unlinked.
                let aside = self.stores().join(format!(
                    ".{}@replaced-{}",
                    self.spare_db(name),
                    previous.id
                ));
                let removed = match no_spare {
                    false => fs::rename(&dir, &aside).or_else(|_| fs::remove_dir_all(&dir)),
                    true => fs::remove_dir_all(&dir),
                };
                if let Err(err) = removed {
                    term::warn(format!(
                        "snapshot `{name}` is saved, but its previous media could not be removed ({err}): the next run removes {}",
                        dir.display()
                    ));
                }
            }
        }
        // The spare of the save replaced is tagged with that save: never renamed in, and
        // removed by the background run before it prepares the new one.
        if previous.is_some() && no_spare {
            if let Err(err) = self.remove_spare(name) {
                term::warn(format!(
                    "snapshot `{name}` is saved, but the spare of the save it replaced could not be removed ({err:#}): the next run removes it"
                ));
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
        if !no_spare {
            term::step(format!(
                "preparing the spare of `{name}` in the background (`cargo xtask dev-db list` shows when it is ready)"
            ));
            self.start_spare(name, false);
        }
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

    /// The newest applied migration per app, and every applied one, when the database has
    /// Django's table.
    #[allow(clippy::type_complexity)]
    fn migrations(&self) -> anyhow::Result<Option<(Vec<(String, String)>, Vec<(String, String)>)>> {
        let query = |sql: &str| {
            self.cx
                .tools
                .query(&self.cx.sh, self.target, Access::ReadOnly, sql)
        };
        if query("select to_regclass('public.django_migrations') is not null")? != "t" {
            return Ok(None);
        }
        let answer = query(
            "select json_build_array(\
             (select coalesce(json_agg(json_build_array(app, name) order by app), '[]') from \
              (select distinct on (app) app, name from public.django_migrations \
               order by app, applied desc, id desc) newest), \
             (select coalesce(json_agg(json_build_array(app, name) order by app, name), '[]') \
              from public.django_migrations))",
        )?;
        Ok(Some(serde_json::from_str(&answer).with_context(|| {
            format!("unexpected answer reading django_migrations: {answer}")
        })?))
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
