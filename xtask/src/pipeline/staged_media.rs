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
        check_apart("source media directory", source, target)?;
    }
    if let Some(target) = target {
        atomic_file::parent_dir(target).context("target media directory")?;
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
                "target media directory {} holds {what} ({}): replacing it would delete that too; name the media directory itself",
                target.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuses a target media directory that holds `source` or lies inside it, judged where the
/// file system resolves both paths (links followed), not by their text. `source_is` names
/// the source in messages ("source media directory", "bundle").
pub fn check_apart(source_is: &str, source: &Path, target: &Path) -> anyhow::Result<()> {
    let (real_source, real_target) = (atomic_file::resolved(source), atomic_file::resolved(target));
    let (source, target) = (source.display(), target.display());
    if real_source == real_target {
        bail!("the {source_is} and the target media directory are the same directory ({}): refusing to replace it with itself", real_source.display());
    }
    if real_target.starts_with(&real_source) {
        bail!("target media directory {target} is inside the {source_is} {source}: the media would be written into what they are read from; choose a target outside it");
    }
    if real_source.starts_with(&real_target) {
        bail!("the {source_is} {source} is inside target media directory {target}: replacing the target would delete it; choose a target outside it");
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
    /// The files of `totals` that were unchanged since the previous copy and linked from it.
    pub linked: media::Totals,
}

/// The target's current media, when it holds any: the copy an incremental clone starts from.
fn previous_copy(target: &Path) -> Option<&Path> {
    has_entries(target).then_some(target)
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
    let dir = StagingDir(atomic_file::staging_dir(target)?);
    let bar = term::bytes_progress("media", Some(totals.bytes));
    let copied = media::copy_tree(source, &dir, previous_copy(target), &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if (copied.all.files, copied.all.bytes) != (totals.files, totals.bytes) {
        bail!(
            "{} changed while it was being copied ({} files, {} before; {} files, {} copied): run the clone again",
            source.display(),
            totals.files,
            term::human_bytes(totals.bytes),
            copied.all.files,
            term::human_bytes(copied.all.bytes)
        );
    }
    let staged = StagedMedia {
        dir,
        totals,
        linked: copied.linked,
    };
    process::check_interrupted()?;
    Ok(staged)
}

/// After the database step: swaps the staged media in.
pub fn finish_media(
    staged: Option<StagedMedia>,
    target: Option<&Path>,
) -> anyhow::Result<Option<media::Totals>> {
    let (Some(staged), Some(target)) = (staged, target) else {
        term::step("media: not cloned (no media directories given)");
        return Ok(None);
    };
    atomic_file::replace_dir(&staged.dir, target)?;
    let linked = staged.linked;
    let copied = media::Totals {
        files: staged.totals.files - linked.files,
        bytes: staged.totals.bytes - linked.bytes,
    };
    term::step(match linked.files {
        0 => format!(
            "media in place at {}: {} files, {} copied and verified",
            target.display(),
            staged.totals.files,
            term::human_bytes(staged.totals.bytes)
        ),
        _ => format!(
            "media in place at {}: {} files, {}; {} new or changed ({}) copied and verified, {} unchanged since the previous copy linked from it",
            target.display(),
            staged.totals.files,
            term::human_bytes(staged.totals.bytes),
            copied.files,
            term::human_bytes(copied.bytes),
            linked.files
        ),
    });
    Ok(Some(staged.totals))
}

/// Where the media come from: a directory of this machine, or one on the SSH host.
pub enum MediaSource<'a> {
    Local(&'a Path),
    Remote(ssh::RemoteMedia<'a>),
}

/// What a count of the source found: totals, and for a remote tree the listing it is fetched by.
pub struct MediaCount {
    pub totals: media::Totals,
    tree: Option<ssh::Tree>,
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
                tree: None,
            }),
            MediaSource::Remote(remote) => {
                let tree = remote.list()?;
                Ok(MediaCount {
                    totals: tree.totals(),
                    tree: Some(tree),
                })
            }
        }
    }

    /// A verified copy beside `target`, ready to swap in; files unchanged since the copy
    /// the target holds are linked from it rather than copied or fetched again.
    pub fn stage(&self, count: &MediaCount, target: &Path) -> anyhow::Result<StagedMedia> {
        match self {
            MediaSource::Remote(_) => {
                atomic_file::remove_stale_staging(target);
                let dir = StagingDir(atomic_file::staging_dir(target)?);
                let copied = self.fetch_into(count, previous_copy(target), &dir)?;
                Ok(StagedMedia {
                    dir,
                    totals: copied.all,
                    linked: copied.linked,
                })
            }
            MediaSource::Local(path) => stage_media_copy(path, count.totals, target),
        }
    }

    /// A subset's media beside `target`, ready to swap in: only the files `names` (paths
    /// relative to the root), verified as a whole tree's are, files unchanged since the copy
    /// the target holds linked from it. Returns the names that are no file of the source.
    pub fn stage_listed(
        &self,
        count: &MediaCount,
        names: &[String],
        target: &Path,
    ) -> anyhow::Result<(StagedMedia, Vec<String>)> {
        atomic_file::remove_stale_staging(target);
        term::step(format!(
            "copying the {} media files the subset names {} → {}",
            names.len(),
            self.shown(),
            target.display()
        ));
        let dir = StagingDir(atomic_file::staging_dir(target)?);
        let (copied, missing) = match (self, &count.tree) {
            (MediaSource::Local(path), _) => {
                let bar = term::bytes_progress("media", None);
                let listed =
                    media::copy_listed(path, names, &dir, previous_copy(target), &|n| bar.inc(n))?;
                bar.finish_and_clear();
                (listed.copy, listed.missing)
            }
            (MediaSource::Remote(remote), Some(tree)) => {
                let (only, missing) = tree.only(names)?;
                (remote.fetch(&only, previous_copy(target), &dir)?, missing)
            }
            (MediaSource::Remote(_), None) => {
                bail!("a remote media tree is listed before it is fetched")
            }
        };
        process::check_interrupted()?;
        let staged = StagedMedia {
            dir,
            totals: copied.all,
            linked: copied.linked,
        };
        Ok((staged, missing))
    }

    /// A remote tree fetched into the new directory `dst` (files unchanged since `previous`
    /// linked from it) and checked against its listing.
    /// Fetches the files `names` of a remote tree into `dst` (a new directory), verified as a
    /// whole tree's are; returns the names the tree does not hold.
    pub fn fetch_listed_into(
        &self,
        count: &MediaCount,
        names: &[String],
        dst: &Path,
    ) -> anyhow::Result<Vec<String>> {
        match (self, &count.tree) {
            (MediaSource::Remote(remote), Some(tree)) => {
                let (only, missing) = tree.only(names)?;
                remote.fetch(&only, None, dst)?;
                process::check_interrupted()?;
                Ok(missing)
            }
            _ => bail!("only a remote media tree is fetched"),
        }
    }

    pub fn fetch_into(
        &self,
        count: &MediaCount,
        previous: Option<&Path>,
        dst: &Path,
    ) -> anyhow::Result<media::TreeCopy> {
        match (self, &count.tree) {
            (MediaSource::Remote(remote), Some(tree)) => {
                let copied = remote.fetch(tree, previous, dst)?;
                process::check_interrupted()?;
                Ok(copied)
            }
            _ => bail!("only a remote media tree is fetched"),
        }
    }
}
