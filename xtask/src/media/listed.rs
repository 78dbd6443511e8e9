//! Copying the named files of a media tree (a subset's), verified and incremental as
//! [`copy_tree`](super::copy_tree) copies a whole tree; names that are not files of the tree
//! are reported, not fatal.

use std::{
    collections::BTreeSet,
    fs,
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use rayon::prelude::*;

use super::copy::{copy_dir_mode, copy_file_verified, link_unchanged, TreeCopy};
use super::{read_buffer, Totals};

/// What [`copy_listed`] did: the files copied or linked, and the names it could not copy.
#[derive(Debug, Default)]
pub struct ListedCopy {
    pub copy: TreeCopy,
    /// Names that are no regular file below the source (absent, or resolving outside it).
    pub missing: Vec<String>,
}

/// The file `name` (a path relative to the root, as a file column holds it) below `root`
/// (resolved): its relative path, when it names a regular file that stays inside the root
/// once every link is followed.
fn source_file(root: &Path, name: &str) -> Option<PathBuf> {
    let rel = PathBuf::from(name);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || rel.as_os_str().is_empty() {
        return None;
    }
    let real = fs::canonicalize(root.join(&rel)).ok()?;
    (real.starts_with(root) && fs::metadata(&real).is_ok_and(|m| m.is_file())).then_some(rel)
}

/// Copies the files `names` of the tree at `src` into the new directory `dst`, each hashed as
/// read and checked as written; a file unchanged since `previous` (an earlier copy) is
/// linked from it. Directories on the way are created with the source's modes.
pub fn copy_listed(
    src: &Path,
    names: &[String],
    dst: &Path,
    previous: Option<&Path>,
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<ListedCopy> {
    let root = fs::canonicalize(src)
        .with_context(|| format!("media directory {} not found", src.display()))?;
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut missing = Vec::new();
    let mut files = Vec::new();
    let mut dirs = BTreeSet::new();
    for name in names {
        match source_file(&root, name) {
            Some(rel) => {
                dirs.extend(rel.ancestors().skip(1).map(Path::to_path_buf));
                files.push(rel);
            }
            None => missing.push(name.clone()),
        }
    }
    dirs.remove(Path::new(""));
    for dir in &dirs {
        fs::create_dir_all(dst.join(dir))
            .with_context(|| format!("creating {}", dst.join(dir).display()))?;
    }
    let previous = previous.and_then(|p| fs::canonicalize(p).ok());
    let counters: [AtomicU64; 4] = Default::default();
    let add = |at: usize, size: u64| {
        counters[at].fetch_add(1, Ordering::Relaxed);
        counters[at + 1].fetch_add(size, Ordering::Relaxed);
    };
    files.par_iter().try_for_each_init(
        || (read_buffer(), read_buffer()),
        |(buf, back), rel| {
            let (from, to) = (root.join(rel), dst.join(rel));
            let linked = previous
                .as_deref()
                .and_then(|p| link_unchanged(p, rel, &from, &to));
            let size = match linked {
                Some(size) => {
                    add(2, size);
                    size
                }
                None => copy_file_verified(&from, &to, rel, buf, back)?.size,
            };
            add(0, size);
            on_file(size);
            anyhow::Ok(())
        },
    )?;
    for dir in dirs.iter().rev() {
        copy_dir_mode(&root, dst, dir)?;
    }
    let [files, bytes, linked_files, linked_bytes] = counters.map(AtomicU64::into_inner);
    Ok(ListedCopy {
        copy: TreeCopy {
            all: Totals { files, bytes },
            linked: Totals {
                files: linked_files,
                bytes: linked_bytes,
            },
        },
        missing,
    })
}
