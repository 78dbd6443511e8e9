//! Copying a media tree file by file, each file hashed as it is read and checked as written.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{read_buffer, read_some, Entry, Hashed, Kind, Totals};
use super::{sums::hex, walk::walk};

/// Copies the tree at `src` into the new directory `dst`, hashing each file as it is read.
/// Every piece written is read back through a second descriptor opened on the copy and compared
/// with the source bytes, so a copy that differs anywhere is caught without a second pass over
/// the tree or a second hash.
pub fn copy_verified(
    src: &Path,
    entries: &[Entry],
    dst: &Path,
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Vec<Hashed>> {
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in entries {
        let to = dst.join(&entry.rel);
        match &entry.kind {
            Kind::Dir => {
                fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?
            }
            Kind::Symlink { target } => std::os::unix::fs::symlink(target, &to)
                .with_context(|| format!("creating link {}", to.display()))?,
            Kind::File { .. } => {}
        }
    }
    let hashed: Vec<Hashed> = entries
        .par_iter()
        .filter(|entry| matches!(entry.kind, Kind::File { .. }))
        .map_init(
            || (read_buffer(), read_buffer()),
            |(buf, back), entry| {
                let from = src.join(&entry.rel);
                let to = dst.join(&entry.rel);
                let hashed = copy_file_verified(&from, &to, &entry.rel, buf, back)?;
                on_file(hashed.size);
                Ok(hashed)
            },
        )
        .collect::<anyhow::Result<_>>()?;
    copy_dir_modes(src, entries, dst)?;
    Ok(hashed)
}

/// What [`copy_tree`] put in place: every file, and of them those linked from a previous copy.
#[derive(Debug, Default, Clone, Copy)]
pub struct TreeCopy {
    pub all: Totals,
    pub linked: Totals,
}

/// [`copy_verified`] for the whole tree at `src`, without keeping a list of its files: the
/// walk creates directories and links as it goes and hands files to the copying threads, so
/// memory stays the same however many files there are.
///
/// With `previous` (an earlier copy of the same tree, on the file system of `dst`), a file
/// that is there with the same size, modification time and mode as in `src` is hard-linked
/// from it instead of copied; the rest is copied and verified as without one.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    previous: Option<&Path>,
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<TreeCopy> {
    let files = walk(src, false)?;
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let made = |entry: anyhow::Result<Entry>| -> Option<anyhow::Result<Entry>> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        let to = dst.join(&entry.rel);
        let made = match &entry.kind {
            Kind::File { .. } => return Some(Ok(entry)),
            Kind::Dir => fs::create_dir(&to).with_context(|| format!("creating {}", to.display())),
            Kind::Symlink { target } => std::os::unix::fs::symlink(target, &to)
                .with_context(|| format!("creating link {}", to.display())),
        };
        made.err().map(Err)
    };
    let previous = previous.and_then(|p| fs::canonicalize(p).ok());
    let counters: [AtomicU64; 4] = Default::default();
    let add = |at: usize, size: u64| {
        counters[at].fetch_add(1, Ordering::Relaxed);
        counters[at + 1].fetch_add(size, Ordering::Relaxed);
    };
    files.filter_map(made).par_bridge().try_for_each_init(
        || (read_buffer(), read_buffer()),
        |(buf, back), entry| {
            let entry = entry?;
            let (from, to) = (src.join(&entry.rel), dst.join(&entry.rel));
            let old = previous
                .as_deref()
                .and_then(|p| earlier_file(p, &entry.rel));
            if let Some(size) = old.and_then(|old| link_unchanged(&from, &old, &to)) {
                add(0, size);
                add(2, size);
                on_file(size);
                return anyhow::Ok(());
            }
            let hashed = copy_file_verified(&from, &to, &entry.rel, buf, back)?;
            add(0, hashed.size);
            on_file(hashed.size);
            anyhow::Ok(())
        },
    )?;
    for entry in walk(src, false)? {
        let entry = entry?;
        if entry.kind == Kind::Dir {
            copy_dir_mode(src, dst, &entry.rel)?;
        }
    }
    let [files, bytes, linked_files, linked_bytes] = counters.map(AtomicU64::into_inner);
    Ok(TreeCopy {
        all: Totals { files, bytes },
        linked: Totals {
            files: linked_files,
            bytes: linked_bytes,
        },
    })
}

/// `rel` in the earlier copy whose real path is `previous`, unless a link on the way would
/// take it elsewhere: only files of the copy itself are ever linked from it.
pub fn earlier_file(previous: &Path, rel: &Path) -> Option<std::path::PathBuf> {
    let old = previous.join(rel);
    let parent = rel
        .parent()
        .map_or(previous.to_path_buf(), |p| previous.join(p));
    (fs::canonicalize(old.parent()?).ok()? == parent).then_some(old)
}

/// Whether `old` is a regular file of the same size, modification time and mode as `from`
/// (and not `from` itself under another name, which a link would tie to the source); if so it
/// is hard-linked as `to` and its size returned.
fn link_unchanged(from: &Path, old: &Path, to: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let (new, was) = (
        fs::symlink_metadata(from).ok()?,
        fs::symlink_metadata(old).ok()?,
    );
    let same = was.is_file()
        && (was.dev(), was.ino()) != (new.dev(), new.ino())
        && was.len() == new.len()
        && was.modified().ok()? == new.modified().ok()?
        && was.permissions().mode() == new.permissions().mode();
    (same && fs::hard_link(old, to).is_ok()).then_some(new.len())
}

pub fn copy_file_verified(
    from: &Path,
    to: &Path,
    rel: &Path,
    buf: &mut [u8],
    back: &mut [u8],
) -> anyhow::Result<Hashed> {
    let mut input = File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let meta = input.metadata()?;
    let mut output = File::create_new(to).with_context(|| format!("writing {}", to.display()))?;
    let mut copy = File::open(to).with_context(|| format!("verifying {}", to.display()))?;
    let differs = || {
        anyhow::anyhow!(
            "copy of {} does not match its source (read back differently): disk or filesystem fault",
            from.display()
        )
    };
    let mut hasher = Sha256::new();
    let mut size = 0;
    loop {
        let n =
            read_some(&mut input, buf).with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        match copy.read_exact(&mut back[..n]) {
            Ok(()) if back[..n] == buf[..n] => {}
            Err(err) if err.kind() != io::ErrorKind::UnexpectedEof => {
                return Err(err).with_context(|| format!("verifying {}", to.display()))
            }
            _ => return Err(differs()),
        }
        size += n as u64;
    }
    if copy.metadata()?.len() != size {
        return Err(differs());
    }
    output.set_permissions(meta.permissions())?;
    if let Ok(modified) = meta.modified() {
        let _ = output.set_modified(modified);
    }
    Ok(Hashed {
        rel: rel.to_path_buf(),
        sha256: hex(&hasher.finalize()),
        size,
    })
}

pub fn copy_dir_modes(src: &Path, entries: &[Entry], dst: &Path) -> anyhow::Result<()> {
    for entry in entries.iter().filter(|e| e.kind == Kind::Dir) {
        copy_dir_mode(src, dst, &entry.rel)?;
    }
    Ok(())
}

/// Gives the directory `rel` below `dst` the mode it has below `src`; done last, since a
/// read-only directory would refuse the files copied into it.
pub fn copy_dir_mode(src: &Path, dst: &Path, rel: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(src.join(rel))?.permissions().mode();
    fs::set_permissions(dst.join(rel), fs::Permissions::from_mode(mode))?;
    Ok(())
}
