//! Walking a media tree: its entries sorted by path, links that leave it refused.

use std::{
    fs::{self},
    path::{Component, Path, PathBuf},
};

use anyhow::{bail, Context};

use super::{Entry, Kind, Totals};

/// Every entry below `root`, sorted by path; links out of the root are refused.
pub fn scan(root: &Path) -> anyhow::Result<Vec<Entry>> {
    walk(root, true)?.collect()
}

/// The files and bytes below `root`, checked as [`scan`] checks them, without a list.
pub fn count(root: &Path) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    for entry in walk(root, false)? {
        if let Kind::File { size } = entry?.kind {
            totals.files += 1;
            totals.bytes += size;
        }
    }
    Ok(totals)
}

/// The entries below `root` one at a time, with [`scan`]'s checks; in its order when `sorted`.
/// Unsorted, a directory is read as it goes instead of being listed whole first, so memory does
/// not grow with the size of the largest directory.
pub fn walk(
    root: &Path,
    sorted: bool,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Entry>> + '_> {
    let meta = fs::metadata(root)
        .with_context(|| format!("media directory {} not found", root.display()))?;
    if !meta.is_dir() {
        bail!("media path {} is not a directory", root.display());
    }
    let mut items = walkdir::WalkDir::new(root).min_depth(1).follow_links(false);
    if sorted {
        items = items.sort_by_file_name();
    }
    let items = items.into_iter();
    Ok(items.map(move |item| {
        let item = item.with_context(|| format!("reading {}", root.display()))?;
        let rel = item.path().strip_prefix(root).unwrap().to_path_buf();
        let file_type = item.file_type();
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File {
                size: item.metadata()?.len(),
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(item.path())?;
            if !link_stays_inside(root, &rel, &target) {
                bail!(
                    "media symlink {} points outside the media root (to {}): replace it with the file itself",
                    item.path().display(),
                    target.display()
                );
            }
            Kind::Symlink { target }
        } else {
            bail!(
                "{} is not a regular file, directory or symlink: remove it from the media tree",
                item.path().display()
            );
        };
        Ok(Entry { rel, kind })
    }))
}

pub fn scan_totals(entries: &[Entry]) -> Totals {
    let mut totals = Totals::default();
    for entry in entries {
        if let Kind::File { size } = entry.kind {
            totals.files += 1;
            totals.bytes += size;
        }
    }
    totals
}

/// Whether a link at `rel` (relative to `root`) pointing at `target` stays inside the root
/// once the file system resolves it: every link met on the way is followed, as the kernel
/// would, so that a chain (`x -> .`, then `y -> x/..`) cannot climb out where each link's
/// text alone looks harmless.
pub fn link_stays_inside(root: &Path, rel: &Path, target: &Path) -> bool {
    // Links followed before giving up, as the kernel's limit on nested links.
    const MAX_HOPS: usize = 40;
    // The steps still to take, last first; `..` is a step of its own.
    fn steps(path: &Path) -> Option<Vec<std::ffi::OsString>> {
        let mut steps = Vec::new();
        for component in path.components().rev() {
            match component {
                Component::Normal(name) => steps.push(name.to_os_string()),
                Component::ParentDir => steps.push("..".into()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        Some(steps)
    }
    let mut at: Vec<std::ffi::OsString> = rel
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let Some(mut pending) = steps(target) else {
        return false;
    };
    let mut hops = 0;
    while let Some(step) = pending.pop() {
        if step == ".." {
            if at.pop().is_none() {
                return false;
            }
            continue;
        }
        at.push(step);
        let path = root.join(at.iter().collect::<PathBuf>());
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            hops += 1;
            let next = fs::read_link(&path).ok().and_then(|next| steps(&next));
            let Some(next) = next.filter(|_| hops <= MAX_HOPS) else {
                return false;
            };
            at.pop();
            pending.extend(next);
        }
    }
    true
}
