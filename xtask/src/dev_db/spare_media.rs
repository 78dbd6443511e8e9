//! A ready spare's media: taken by a restore, moved beside the live media and swapped in by
//! rename, with the record of their files, in time independent of their number.

use std::{
    cell::RefCell,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    atomic_file::{self, StagingDir},
    media,
    pipeline::replace::Staged,
    term,
};

use super::MediaSize;

/// A ready spare's media directory, the record of its files and their totals as the copy
/// that made them counted them.
pub(super) struct TakenMedia {
    pub dir: PathBuf,
    pub record: PathBuf,
    pub totals: Option<MediaSize>,
}

/// Beside a spare's media: their totals, written by the copy that made them.
pub(super) const TOTALS: &str = "totals.json";

/// A spare's media, moved beside the live ones by the restore, swapped in by rename.
pub(super) struct SpareMedia<'a> {
    pub dir: StagingDir,
    /// The spare's record of its files: the live files' once moved in.
    pub origins: PathBuf,
    pub totals: media::Totals,
    /// The snapshot's record of the live files that hold its contents.
    pub record: PathBuf,
    /// Where the media it replaced were moved aside (and the media directory), left for the
    /// detached run to remove: removing a tree takes time in proportion to its files.
    pub replaced: &'a RefCell<Option<(PathBuf, PathBuf)>>,
}

impl SpareMedia<'_> {
    /// Moves the spare's media to the staging place beside `live`: a rename. Their totals
    /// are those the copy that made them counted (counted again for a spare made without).
    pub(super) fn stage(
        spare: &TakenMedia,
        live: &Path,
    ) -> anyhow::Result<(StagingDir, media::Totals)> {
        atomic_file::remove_stale_staging(live);
        let dir = atomic_file::staging_dir(live)?;
        let spare_media = &spare.dir;
        let totals = match spare.totals {
            Some(MediaSize { files, bytes }) => media::Totals { files, bytes },
            None => media::count(spare_media)?,
        };
        fs::rename(spare_media, &dir)
            .with_context(|| format!("moving {} to {}", spare_media.display(), dir.display()))?;
        Ok((StagingDir(dir), totals))
    }
}

impl Staged for SpareMedia<'_> {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn swap_in(
        staged: Option<Self>,
        target: Option<&Path>,
    ) -> anyhow::Result<Option<media::Totals>> {
        let (Some(media), Some(target)) = (staged, target) else {
            return Ok(None);
        };
        if let Some((old, target)) = atomic_file::replace_dir_keeping_old(&media.dir, target)? {
            // A directory moved aside beside the media is a dead run's leftover once this run
            // has exited; one inside them (a mount point) is removed now.
            match old.parent() == Some(target.as_path()) {
                true => atomic_file::remove_replaced(&old, &target),
                false => *media.replaced.borrow_mut() = Some((old, target)),
            }
        }
        // The spare's record names the files now live (a rename changes no file's identity),
        // under the same save's id: it becomes the snapshot's, whatever the number of files.
        // A file changed since is told by its identity and copied, never linked.
        if let Err(err) = fs::rename(&media.origins, &media.record)
            .with_context(|| format!("moving {}", media.origins.display()))
        {
            term::warn(format!(
                "the media are in place, but which of them are unchanged could not be recorded ({err:#}): the next save or restore copies every file"
            ));
        }
        Ok(Some(media.totals))
    }
}
