//! Unpacking a media archive safely: only `netpoint/media/` members, no links out, no
//! writing through links, nothing outside the destination.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Component, Path, PathBuf},
};

use anyhow::{bail, Context};

use super::walk::link_stays_inside;
use super::{ARCHIVE_PREFIX, READ_BUF};

/// What a member of a tar stream is, for [`extract_tar`]'s `listed`: a hard link to an
/// earlier file counts as a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member<'a> {
    Dir,
    File,
    Symlink(&'a Path),
}

impl Member<'_> {
    fn what(&self) -> &'static str {
        match self {
            Member::Dir => "a directory",
            Member::File => "a file",
            Member::Symlink(_) => "a symbolic link",
        }
    }
}

/// Whether a listing holds a member (its path relative to the media root, and what it is).
pub type Listed<'a> = &'a dyn Fn(&Path, Member<'_>) -> bool;

/// The permission bits a member may keep: never setuid, setgid or sticky.
const PERMISSION_BITS: u32 = 0o777;

/// Unpacks a media archive into the new directory `dst`. Members must lie under
/// `netpoint/media/`; absolute paths, `..`, members under a link, links out of the root and
/// special files are refused.
pub fn extract_archive(archive: &Path, dst: &Path) -> anyhow::Result<()> {
    let file = File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
    let gz = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(READ_BUF, file));
    extract_tar(gz, Some(ARCHIVE_PREFIX), dst, None)
}

/// Unpacks a plain tar stream into the new directory `dst`, as [`extract_archive`] does:
/// members under `prefix` (`netpoint/media/`), or, without one, relative to the media root
/// itself (`tar -cf - .` run in it). With `listed`, every member (its path relative to the
/// media root, and what it is) must be one that `listed` accepts, or the stream is refused.
/// Modes keep only their permission bits.
pub fn extract_tar(
    stream: impl io::Read,
    prefix: Option<&str>,
    dst: &Path,
    listed: Option<Listed<'_>>,
) -> anyhow::Result<()> {
    let refuse_unlisted = |rel: &Path, member: Member<'_>, shown: &str| -> anyhow::Result<()> {
        match listed {
            Some(listed) if !rel.as_os_str().is_empty() && !listed(rel, member) => bail!(
                "the stream holds `{shown}`, {}, which the listing of the media does not: refusing it",
                member.what()
            ),
            _ => Ok(()),
        }
    };
    let mut tar = tar::Archive::new(stream);
    let prefix = prefix.map(|p| p.trim_end_matches('/'));
    let shown_prefix = prefix.map(|p| format!("{p}/")).unwrap_or_default();
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut dir_modes = Vec::new();
    let mut links: BTreeMap<PathBuf, (PathBuf, String)> = BTreeMap::new();
    // Regular files unpacked so far: what a hard-link member may name.
    let mut files = std::collections::BTreeSet::new();
    for entry in tar.entries().context("reading the media archive")? {
        let mut entry = entry.context("reading the media archive")?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let Some(normal) = inside(&raw) else {
            bail!("media archive member `{shown}` is an absolute path or leaves the media root: the archive is unsafe, refusing it");
        };
        let Ok(rel) = normal.strip_prefix(prefix.unwrap_or("")) else {
            if prefix.is_some()
                && normal == Path::new("netpoint")
                && entry.header().entry_type().is_dir()
            {
                continue;
            }
            bail!("media archive member `{shown}` is not under {shown_prefix}: not a NetPoint media archive");
        };
        if let Some(link) = rel.ancestors().skip(1).find(|a| links.contains_key(*a)) {
            bail!(
                "media archive member `{shown}` lies under the symbolic link {shown_prefix}{}: the archive is unsafe, refusing it",
                link.display()
            );
        }
        let to = dst.join(rel);
        let mode = entry.header().mode().unwrap_or(0o644) & PERMISSION_BITS;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                refuse_unlisted(rel, Member::Dir, &shown)?;
                if rel.as_os_str().is_empty() {
                    dir_modes.push((dst.to_path_buf(), mode));
                    continue;
                }
                fs::create_dir_all(&to)?;
                dir_modes.push((to, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                refuse_unlisted(rel, Member::File, &shown)?;
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mtime = entry.header().mtime().ok();
                write_file(&to, &mut entry, mode, mtime, &shown)?;
                files.insert(rel.to_path_buf());
            }
            // A second name of a file earlier in the archive (`tar` of a tree with hard
            // links): unpacked as a copy of it, so the two stay independent.
            tar::EntryType::Link => {
                refuse_unlisted(rel, Member::File, &shown)?;
                let raw = entry.link_name_bytes().context("hard link without a target")?.into_owned();
                let earlier = inside(&raw)
                    .as_deref()
                    .and_then(|n| n.strip_prefix(prefix.unwrap_or("")).ok())
                    .filter(|t| files.contains(*t))
                    .map(Path::to_path_buf);
                let Some(earlier) = earlier else {
                    bail!("media archive member `{shown}` is a hard link to `{}`, which is not a file earlier in the archive: refusing the archive", String::from_utf8_lossy(&raw));
                };
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mtime = entry.header().mtime().ok();
                write_file(&to, &mut File::open(dst.join(&earlier))?, mode, mtime, &shown)?;
                files.insert(rel.to_path_buf());
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.context("symlink without a target")?.into_owned();
                refuse_unlisted(rel, Member::Symlink(&target), &shown)?;
                if rel.as_os_str().is_empty() || links.insert(rel.to_path_buf(), (target, shown.clone())).is_some() {
                    bail!("media archive member `{shown}` appears twice or replaces the media root: refusing the archive");
                }
            }
            other => bail!("media archive member `{shown}` is a {other:?} entry; only files, directories, symlinks and hard links to files are allowed"),
        }
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))?;
    }
    // Links come last, so nothing is ever written through one; then each is judged where
    // the file system resolves it, chains of links included.
    for (rel, (target, shown)) in &links {
        let to = dst.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &to).with_context(|| {
            format!("media archive member `{shown}` appears twice (as a link and as a file or directory): refusing the archive")
        })?;
    }
    for (rel, (target, shown)) in &links {
        if !link_stays_inside(dst, rel, target) {
            bail!("media archive member `{shown}` links outside the media root (to {}) once its links are followed: refusing the archive", target.display());
        }
    }
    Ok(())
}

/// A member's name (or a hard link's target) as a relative path inside the archive's root,
/// `.` parts dropped; `None` when it is absolute or climbs out with `..`.
fn inside(raw: &[u8]) -> Option<PathBuf> {
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    path.components()
        .map(|c| match c {
            Component::Normal(part) => Some(Some(part)),
            Component::CurDir => Some(None),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(|parts| parts.into_iter().flatten().collect())
}

/// A new file `to` with `from`'s bytes, `mode` and modification time.
fn write_file(
    to: &Path,
    from: &mut dyn io::Read,
    mode: u32,
    mtime: Option<u64>,
    shown: &str,
) -> anyhow::Result<()> {
    let out = File::create_new(to).with_context(|| {
        format!("media archive member `{shown}` appears twice or cannot be written")
    })?;
    // Through a large buffer: `io::copy` then reads and writes in its size.
    let mut out = io::BufWriter::with_capacity(READ_BUF, out);
    io::copy(from, &mut out).with_context(|| format!("extracting {shown}"))?;
    let out = out
        .into_inner()
        .map_err(|err| err.into_error())
        .with_context(|| format!("extracting {shown}"))?;
    out.set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some(mtime) = mtime {
        let _ = out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
    }
    Ok(())
}
