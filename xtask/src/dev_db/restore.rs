//! `dev-db restore`: the snapshot copied into a new database and its media staged, both
//! swapped in by the engine's replace sequence.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::bail;

use crate::{
    atomic_file::{self, StagingDir},
    media::{self, Origins, Stamp},
    pg::DbUrl,
    pipeline::{
        replace::{Create, Database, Inspected, Replacement, Staged},
        report::Timings,
        staged_media::StagedMedia,
        swap,
    },
    process, term,
};

use super::{spare::TakenSpare, spare_media::SpareMedia, Dev, Meta, FORMAT, ORIGINS};

impl Dev<'_> {
    pub(super) fn restore(
        &self,
        name: &str,
        replacement: &Replacement,
        target: &Inspected,
    ) -> anyhow::Result<()> {
        let snapshot = self.snapshot_db(name);
        // Every check comes first: until the swap, nothing is changed and no session ended.
        let mut locked = replacement.lock(self.cx, target, None)?;
        locked.query_in(&self.session);
        locked.drop_stale(self.cx);
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
        match meta.media {
            Some(_) => self.check_store(name, &meta, &store)?,
            None => locked.keep_media(),
        }
        let (spare_lock, spare_db, spare_media) = match self.take_spare(name, &meta) {
            Some(TakenSpare {
                lock,
                database,
                media,
            }) => (Some(lock), Some(database), media),
            None => (None, None, None),
        };
        // The snapshot's record of its files is read, strictly, when its media are copied; a
        // restore that moves the spare's media in writes it anew, in time independent of the
        // number of files.
        let origins = match (meta.media, &spare_media) {
            (Some(_), None) => Some(self.read_origins(name, &meta, &store)?),
            _ => None,
        };
        let mut linked = None;
        let mut media_from_spare = false;
        let replaced_media = std::cell::RefCell::new(None);
        let stage = |_: &mut Timings| match meta.media {
            Some(size) => {
                if let Some(spare) = spare_media {
                    match SpareMedia::stage(&spare, self.media) {
                        Ok((dir, totals)) if (totals.files, totals.bytes) == (size.files, size.bytes) => {
                            media_from_spare = true;
                            return Ok(Some(Placed::Spare(SpareMedia {
                                dir,
                                origins: spare.record,
                                totals,
                                record: store.join(ORIGINS),
                                replaced: &replaced_media,
                            })));
                        }
                        Ok(_) => term::step("the spare's media differ from the snapshot's: copying them instead"),
                        Err(err) => term::step(format!(
                            "the spare's media could not be moved into place ({err:#}): copying them instead"
                        )),
                    }
                }
                let read;
                let origins = match &origins {
                    Some(origins) => origins,
                    None => {
                        read = self.read_origins(name, &meta, &store)?;
                        &read
                    }
                };
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
                Ok(Some(Placed::Copied(SnapshotMedia {
                    staged,
                    copy,
                    record: store.join(ORIGINS),
                    id: &meta.id,
                })))
            }
            None => {
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
                process::critical(|| match &spare_db {
                    Some(spare) => self.rename_spare_to(spare, &temp.database),
                    None => self.copy_database(&snapshot, &temp.database, "restoring it"),
                })
            })),
            fill: Box::new(|_| Ok(())),
        };
        let background = !meta.no_spare && !super::spares_off();
        if background {
            locked.keep_previous();
        }
        let replaced = locked.replace(self.cx, stage, database);
        drop(spare_lock);
        let mut handed_over = false;
        if background {
            // The previous dev database is dropped by the detached run, under its name, and
            // the media replaced are removed by it.
            let old = swap::aside_name(&self.target.database);
            let ok = replaced.is_ok();
            let run = self.start_spare(name, ok);
            handed_over = run.is_some();
            if ok && !run.is_some_and(|pid| self.hand_over(&old, pid)) {
                self.discard(&old);
            }
        }
        if let Some((old, target)) = replaced_media.take() {
            if !handed_over {
                atomic_file::remove_replaced(&old, &target);
            }
        }
        let _replaced = replaced?;
        term::success(format!(
            "restored snapshot `{name}` (saved {}) into {}{}{}",
            meta.saved,
            self.target.masked(),
            match (meta.media, media_from_spare) {
                (Some(m), true) => format!(" and {} ({} files)", self.media.display(), m.files),
                _ => String::new(),
            },
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
        if spare_db.is_some() {
            term::step(format!(
                "renamed the ready spare of `{name}` into place; preparing the next one in the background"
            ));
        }
        if let Some(drift) = self.migration_drift(&meta) {
            term::warn(format!("migrations: {drift}"));
        }
        Ok(())
    }

    /// The snapshot's media are there and belong to its database (the same save).
    fn check_store(&self, name: &str, meta: &Meta, store: &Path) -> anyhow::Result<()> {
        let beside = fs::read_to_string(store.join("snapshot.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Meta>(&text).ok());
        if !store.join("media").is_dir() || beside.is_none_or(|b| b.id != meta.id) {
            bail!(
                "the media of snapshot `{name}` are missing or belong to another save ({}): drop the snapshot and save it again",
                store.display()
            );
        }
        Ok(())
    }

    /// The record of the snapshot's media, read strictly.
    fn read_origins(&self, name: &str, meta: &Meta, store: &Path) -> anyhow::Result<Origins> {
        Origins::read(&store.join(ORIGINS), &meta.id).map_err(|err| {
            anyhow::anyhow!("snapshot `{name}`: {err:#}; drop the snapshot and save it again")
        })
    }
}

/// The media a restore puts in place: a copy of the snapshot's, or its spare's.
enum Placed<'a> {
    Copied(SnapshotMedia<'a>),
    Spare(SpareMedia<'a>),
}

impl Staged for Placed<'_> {
    fn dir(&self) -> &Path {
        match self {
            Placed::Copied(media) => media.dir(),
            Placed::Spare(media) => media.dir(),
        }
    }

    fn swap_in(
        staged: Option<Self>,
        target: Option<&Path>,
    ) -> anyhow::Result<Option<media::Totals>> {
        match staged {
            Some(Placed::Copied(media)) => SnapshotMedia::swap_in(Some(media), target),
            Some(Placed::Spare(media)) => SpareMedia::swap_in(Some(media), target),
            None => Ok(None),
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
