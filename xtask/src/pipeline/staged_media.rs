//! The media side of a replace: the paths checked before anything changes, a verified copy
//! staged beside the target, and the swap into place once the database is in.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::{
    atomic_file::{self, StagingDir},
    media, process, ssh, term,
};

/// Media paths of a run, checked before anything is changed.
pub fn check_media_pair(source: Option<&Path>, target: Option<&Path>) -> anyhow::Result<()> {
    if let (Some(source), Some(target)) = (source, target) {
        fs::canonicalize(source)
            .with_context(|| format!("media directory {} not found", source.display()))?;
        check_apart("--source-media", source, target)?;
    }
    if let Some(target) = target {
        atomic_file::parent_dir(target).context("--target-media")?;
        check_holds_nothing_else(target)?;
        atomic_file::check_swappable(target)?;
    }
    Ok(())
}

/// Refuses a target media directory that holds the current or the home directory (`.`, `..`,
/// `/`, `~` given by mistake): replacing it would delete them with it.
pub fn check_holds_nothing_else(target: &Path) -> anyhow::Result<()> {
    let real = atomic_file::resolved(target);
    let current = std::env::current_dir().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for (what, dir) in [
        ("the current directory", current),
        ("your home directory", home),
    ] {
        let Some(dir) = dir.map(|d| atomic_file::resolved(&d)) else {
            continue;
        };
        if dir.starts_with(&real) {
            bail!(
                "--target-media {} holds {what} ({}): replacing it would delete that too; pass the media directory itself",
                target.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuses a target media directory that holds `source` or lies inside it, judged where the
/// file system resolves both paths (links followed), not by their text.
pub fn check_apart(flag: &str, source: &Path, target: &Path) -> anyhow::Result<()> {
    let (real_source, real_target) = (atomic_file::resolved(source), atomic_file::resolved(target));
    let (source, target) = (source.display(), target.display());
    if real_source == real_target {
        bail!("{flag} and --target-media are the same directory ({}): refusing to replace it with itself", real_source.display());
    }
    if real_target.starts_with(&real_source) {
        bail!("--target-media {target} is inside {flag} {source}: the media would be written into what they are read from; choose a target outside it");
    }
    if real_source.starts_with(&real_target) {
        bail!("{flag} {source} is inside --target-media {target}: replacing the target would delete it; choose a target outside it");
    }
    Ok(())
}

/// Whether `dir` holds anything at all.
pub fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// A copy of the media tree beside the target, verified file by file, ready to swap in.
pub struct StagedMedia {
    pub dir: StagingDir,
    pub totals: media::Totals,
}

pub fn stage_media_copy(
    source: &Path,
    totals: media::Totals,
    target: &Path,
) -> anyhow::Result<StagedMedia> {
    atomic_file::remove_stale_staging(target);
    term::step(format!(
        "copying media {} → {} ({} files, {})",
        source.display(),
        target.display(),
        totals.files,
        term::human_bytes(totals.bytes)
    ));
    let staged = StagedMedia {
        dir: StagingDir(atomic_file::staging_dir(target)?),
        totals,
    };
    let bar = term::bytes_progress("media", Some(totals.bytes));
    let copied = media::copy_tree(source, &staged.dir, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if (copied.files, copied.bytes) != (totals.files, totals.bytes) {
        bail!(
            "{} changed while it was being copied ({} files, {} before; {} files, {} copied): run the clone again",
            source.display(),
            totals.files,
            term::human_bytes(totals.bytes),
            copied.files,
            term::human_bytes(copied.bytes)
        );
    }
    process::check_interrupted()?;
    Ok(staged)
}

/// After the database step: swap staged media in only when the database succeeded.
pub fn finish_media(
    db: anyhow::Result<()>,
    staged: Option<StagedMedia>,
    target: Option<&Path>,
) -> anyhow::Result<Option<media::Totals>> {
    db?;
    let (Some(staged), Some(target)) = (staged, target) else {
        term::step("media: not cloned (no media directories given)");
        return Ok(None);
    };
    atomic_file::replace_dir(&staged.dir, target)?;
    term::step(format!(
        "media in place at {}: {} files, {} copied and verified",
        target.display(),
        staged.totals.files,
        term::human_bytes(staged.totals.bytes)
    ));
    Ok(Some(staged.totals))
}

/// Where the media come from: a directory of this machine, or one on the SSH host.
pub enum MediaSource<'a> {
    Local(&'a Path),
    Remote(ssh::RemoteMedia<'a>),
}

/// What a count of the source found: totals, and for a remote tree the listing its fetch is
/// checked against.
pub struct MediaCount {
    pub totals: media::Totals,
    listing: Option<ssh::Listing>,
}

impl MediaSource<'_> {
    /// For messages: the path, or `DEST:DIR`.
    pub fn shown(&self) -> String {
        match self {
            MediaSource::Local(path) => path.display().to_string(),
            MediaSource::Remote(remote) => remote.shown(),
        }
    }

    pub fn local(&self) -> Option<&Path> {
        match self {
            MediaSource::Local(path) => Some(path),
            MediaSource::Remote(_) => None,
        }
    }

    /// Counted, not listed, when local: a clone's memory does not grow with the files.
    pub fn count(&self) -> anyhow::Result<MediaCount> {
        match self {
            MediaSource::Local(path) => Ok(MediaCount {
                totals: media::count(path)?,
                listing: None,
            }),
            MediaSource::Remote(remote) => {
                let listing = remote.list()?;
                Ok(MediaCount {
                    totals: ssh::listing_totals(&listing),
                    listing: Some(listing),
                })
            }
        }
    }

    /// A verified copy beside `target`, ready to swap in.
    pub fn stage(&self, count: &MediaCount, target: &Path) -> anyhow::Result<StagedMedia> {
        match self {
            MediaSource::Remote(_) => {
                atomic_file::remove_stale_staging(target);
                let dir = StagingDir(atomic_file::staging_dir(target)?);
                let totals = self.stage_into(count, &dir)?;
                Ok(StagedMedia { dir, totals })
            }
            MediaSource::Local(path) => stage_media_copy(path, count.totals, target),
        }
    }

    /// A remote tree fetched into the new directory `dst` and checked against its listing.
    pub fn stage_into(&self, count: &MediaCount, dst: &Path) -> anyhow::Result<media::Totals> {
        match (self, &count.listing) {
            (MediaSource::Remote(remote), Some(listing)) => {
                let totals = remote.fetch(listing, dst)?;
                process::check_interrupted()?;
                Ok(totals)
            }
            _ => bail!("only a remote media tree is fetched"),
        }
    }
}
