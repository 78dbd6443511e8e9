//! Copying a media tree file by file, each file hashed as it is read and checked as written;
//! and the copies `dev-db` makes, which link only files whose recorded identity is unchanged.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::origins::{Identity, Origins, Stamp};
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
            let linked = previous
                .as_deref()
                .and_then(|p| link_unchanged(p, &entry.rel, &from, &to));
            if let Some(size) = linked {
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

/// `rel` in the earlier copy whose real path is `previous`, when it is a regular file of
/// `size` bytes that `unchanged` accepts (given its metadata), and no link on the way takes it
/// elsewhere: only files of the copy itself are ever linked from it. Every copy that links a
/// file instead of copying it asks this first, each with its own idea of `unchanged`.
pub fn unchanged_file(
    previous: &Path,
    rel: &Path,
    size: u64,
    unchanged: impl FnOnce(&fs::Metadata) -> bool,
) -> Option<PathBuf> {
    let old = previous.join(rel);
    let parent = rel
        .parent()
        .map_or(previous.to_path_buf(), |p| previous.join(p));
    if fs::canonicalize(old.parent()?).ok()? != parent {
        return None;
    }
    let was = fs::symlink_metadata(&old).ok()?;
    (was.is_file() && was.len() == size && unchanged(&was)).then_some(old)
}

/// Links `rel` of the earlier copy `previous` as `to` when it has the same size,
/// modification time and mode as `from` (and is not `from` itself under another name, which
/// a link would tie to the source); returns its size if so.
pub(super) fn link_unchanged(previous: &Path, rel: &Path, from: &Path, to: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let new = fs::symlink_metadata(from).ok()?;
    let old = unchanged_file(previous, rel, new.len(), |was| {
        (was.dev(), was.ino()) != (new.dev(), new.ino())
            && matches!((was.modified(), new.modified()), (Ok(a), Ok(b)) if a == b)
            && was.permissions().mode() == new.permissions().mode()
    })?;
    fs::hard_link(old, to).ok().map(|()| new.len())
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

/// A copy made by [`copy_from_live`] or [`copy_to_live`].
#[derive(Debug, Default)]
pub struct Tracked {
    pub all: Totals,
    pub linked: Totals,
    /// From [`copy_from_live`], the live files' identities as they were read (the copy's
    /// record); from [`copy_to_live`], those of the new copies, the live files to be.
    pub origins: Origins,
    /// From [`copy_to_live`]: the live files linked into the copy, as they were once linked.
    pub linked_files: Vec<(PathBuf, Identity)>,
}

/// One file of a tracked copy: its path, whether it was linked, its size, and the identity
/// to record for it.
type Placed = (PathBuf, bool, u64, Option<Identity>);

/// Copies the live media tree `live` into the new directory `dst` (a snapshot, which nobody
/// writes to). A file is hard-linked from `earlier` (another snapshot's tree, and its record)
/// only when the live file has the identity the record holds for it: the same inode, not
/// changed since that copy was made. Every other file is copied, a reflink where the file
/// system has them. Returns the record for `dst`: each live file's identity as it was read,
/// for those that changed before the copy began.
pub fn copy_from_live(
    live: &Path,
    dst: &Path,
    earlier: Option<(&Path, &Origins)>,
) -> anyhow::Result<Tracked> {
    let entries = make_tree(live, dst)?;
    let stamp = Stamp::now(dst)?;
    let earlier = earlier.and_then(|(root, origins)| Some((fs::canonicalize(root).ok()?, origins)));
    let placed = each_file(&entries, |rel| {
        let (from, to) = (live.join(rel), dst.join(rel));
        let meta =
            fs::symlink_metadata(&from).with_context(|| format!("reading {}", from.display()))?;
        if !meta.is_file() {
            bail!(
                "{} changed while it was being copied: run again",
                from.display()
            );
        }
        let identity = Identity::of(&meta);
        let linked = earlier.as_ref().is_some_and(|(root, origins)| {
            origins.get(rel) == Some(&identity)
                && unchanged_file(root, rel, meta.len(), |_| true)
                    .is_some_and(|old| fs::hard_link(old, &to).is_ok())
        });
        if !linked {
            copy_keeping_time(&from, &to, &meta)?;
        }
        let record = identity.before(&stamp).then_some(identity);
        Ok((rel.to_path_buf(), linked, meta.len(), record))
    })?;
    copy_dir_modes(live, &entries, dst)?;
    Ok(tracked(placed))
}

/// Copies the snapshot tree `snapshot` into the new directory `dst`, which is to replace the
/// live tree `live`. A live file is hard-linked into `dst` only when it has the identity
/// `origins` (the snapshot's record) holds for it, so holds the snapshot's contents; every
/// other file is copied from the snapshot. The record of the result is settled by
/// [`settle_origins`] once `dst` is in place.
pub fn copy_to_live(
    snapshot: &Path,
    dst: &Path,
    live: Option<&Path>,
    origins: &Origins,
) -> anyhow::Result<Tracked> {
    let entries = make_tree(snapshot, dst)?;
    let live = live.and_then(|l| fs::canonicalize(l).ok());
    let placed = each_file(&entries, |rel| {
        let (from, to) = (snapshot.join(rel), dst.join(rel));
        let meta =
            fs::symlink_metadata(&from).with_context(|| format!("reading {}", from.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not the file the snapshot saved: drop the snapshot and save it again",
                from.display()
            );
        }
        let unchanged = live.as_deref().and_then(|live| {
            unchanged_file(live, rel, meta.len(), |was| {
                origins.get(rel) == Some(&Identity::of(was))
            })
        });
        if let Some(old) = unchanged {
            if fs::hard_link(&old, &to).is_ok() {
                let now = Identity::of(&fs::symlink_metadata(&to)?);
                return Ok((rel.to_path_buf(), true, meta.len(), Some(now)));
            }
        }
        copy_keeping_time(&from, &to, &meta)?;
        let made = Identity::of(&fs::symlink_metadata(&to)?);
        Ok((rel.to_path_buf(), false, meta.len(), Some(made)))
    })?;
    copy_dir_modes(snapshot, &entries, dst)?;
    let mut copy = Tracked::default();
    for (rel, linked, size, identity) in placed {
        copy.all.files += 1;
        copy.all.bytes += size;
        let identity = identity.expect("every placed file has one");
        if linked {
            copy.linked.files += 1;
            copy.linked.bytes += size;
            copy.linked_files.push((rel, identity));
        } else {
            copy.origins.insert(rel, identity);
        }
    }
    Ok(copy)
}

/// The record of a tree [`copy_to_live`] made, once it replaced the live tree (which is now
/// at `old`, not yet removed; `live` is where the new one is). A copy is recorded as it was
/// made when that was before `stamp`, taken before the swap: nobody else could write to it
/// until then. A linked file had a second name in `old`: that name is removed here, and the
/// file recorded with the change time this gives it, unless it changed after it was linked
/// (it is then left out, and copied next time).
pub fn settle_origins(copy: Tracked, old: Option<&Path>, live: &Path, stamp: &Stamp) -> Origins {
    let mut origins = Origins::default();
    for (rel, identity) in copy.origins.into_files() {
        if identity.before(stamp) {
            origins.insert(rel, identity);
        }
    }
    let Some(old) = old else {
        return origins;
    };
    let settled: Vec<(PathBuf, Identity)> = copy
        .linked_files
        .par_iter()
        .filter_map(|(rel, linked)| {
            let aside = old.join(rel);
            let was = Identity::of(&fs::symlink_metadata(&aside).ok()?);
            if was != *linked {
                return None;
            }
            fs::remove_file(&aside).ok()?;
            let now = Identity::of(&fs::symlink_metadata(live.join(rel)).ok()?);
            now.same_file(linked).then(|| (rel.clone(), now))
        })
        .collect();
    for (rel, identity) in settled {
        origins.insert(rel, identity);
    }
    origins
}

/// Scans `src` and makes its directories and links in the new directory `dst`.
fn make_tree(src: &Path, dst: &Path) -> anyhow::Result<Vec<Entry>> {
    let entries = super::scan(src)?;
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in &entries {
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
    Ok(entries)
}

/// Runs `place` for every file of `entries` on every core; an interrupt stops it.
fn each_file(
    entries: &[Entry],
    place: impl Fn(&Path) -> anyhow::Result<Placed> + Sync,
) -> anyhow::Result<Vec<Placed>> {
    entries
        .par_iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .map(|entry| {
            crate::process::check_interrupted()?;
            place(&entry.rel)
        })
        .collect()
}

fn tracked(placed: Vec<Placed>) -> Tracked {
    let mut copy = Tracked::default();
    for (rel, linked, size, identity) in placed {
        copy.all.files += 1;
        copy.all.bytes += size;
        if linked {
            copy.linked.files += 1;
            copy.linked.bytes += size;
        }
        if let Some(identity) = identity {
            copy.origins.insert(rel, identity);
        }
    }
    copy
}

/// `fs::copy` (a reflink where the file system has them, the mode kept), with the source's
/// modification time.
fn copy_keeping_time(from: &Path, to: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    if let Ok(modified) = meta.modified() {
        // Through a read-only descriptor: a copy of a 0444 file may not be opened for
        // writing, and its owner may set its times anyway.
        let _ = File::open(to).and_then(|f| f.set_modified(modified));
    }
    Ok(())
}
