//! Copying a media tree file by file, each file hashed as it is read and checked as written.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
};

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

/// [`copy_verified`] for the whole tree at `src`, without keeping a list of its files: the
/// walk creates directories and links as it goes and hands files to the copying threads, so
/// memory stays the same however many files there are. Returns what was copied.
pub fn copy_tree(src: &Path, dst: &Path, on_file: &(dyn Fn(u64) + Sync)) -> anyhow::Result<Totals> {
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
    let (count, bytes) = (
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    );
    files.filter_map(made).par_bridge().try_for_each_init(
        || (read_buffer(), read_buffer()),
        |(buf, back), entry| {
            let entry = entry?;
            let (from, to) = (src.join(&entry.rel), dst.join(&entry.rel));
            let hashed = copy_file_verified(&from, &to, &entry.rel, buf, back)?;
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes.fetch_add(hashed.size, std::sync::atomic::Ordering::Relaxed);
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
    Ok(Totals {
        files: count.into_inner(),
        bytes: bytes.into_inner(),
    })
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
