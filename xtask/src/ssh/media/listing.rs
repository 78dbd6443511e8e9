//! What the host says its media tree holds: GNU `find -printf` records, or POSIX `cksum` and
//! `find` output, read into a [`Tree`].

use std::{
    collections::BTreeMap,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use anyhow::bail;

use crate::media;

/// Regular files of a remote tree by path: their POSIX `cksum` CRC and size.
pub type Listing = BTreeMap<PathBuf, (u32, u64)>;

/// What the host said of one regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    /// Modification time in seconds since the epoch, when the host's `find` could tell.
    pub mtime: Option<i64>,
    /// Permission bits (0 when unknown).
    pub mode: u32,
}

/// A remote tree as listed: files, directories (with their modes, when the host's `find`
/// could tell) and symbolic links (with their targets, likewise).
#[derive(Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<PathBuf, FileMeta>,
    pub dirs: BTreeMap<PathBuf, Option<u32>>,
    pub links: BTreeMap<PathBuf, Option<PathBuf>>,
    /// The CRCs, when the listing came from `cksum` (a host without GNU `find`).
    pub(super) sums: Option<Listing>,
    /// Only some of the host's files ([`Tree::only`]): their CRCs are asked for by name,
    /// never by reading the whole tree.
    pub(super) partial: bool,
}

impl Tree {
    pub fn totals(&self) -> media::Totals {
        media::Totals {
            files: self.files.len() as u64,
            bytes: self.files.values().map(|f| f.size).sum(),
        }
    }

    /// The part of the tree that holds the files `names` (and the directories on their
    /// way), with the names that are no file of it.
    pub fn only(&self, names: &[String]) -> anyhow::Result<(Tree, Vec<String>)> {
        if self.sums.is_some() {
            bail!("fetching only a subset's media files needs GNU find and GNU tar on the SSH host; install them there, or clone the media whole with --media-only");
        }
        let mut only = Tree {
            partial: true,
            ..Tree::default()
        };
        let mut missing = Vec::new();
        for name in names {
            let rel = PathBuf::from(name);
            match self.files.get(&rel) {
                Some(meta) => {
                    for dir in rel.ancestors().skip(1) {
                        if let Some(mode) = self.dirs.get(dir) {
                            only.dirs.insert(dir.to_path_buf(), *mode);
                        }
                    }
                    only.files.insert(rel, *meta);
                }
                None => missing.push(name.clone()),
            }
        }
        Ok((only, missing))
    }

    /// Whether the listing holds `rel` as that kind of member: a file, a directory, or a
    /// link to that target (to any, when the host could not say).
    pub(super) fn holds(&self, rel: &Path, member: media::Member<'_>) -> bool {
        match member {
            media::Member::File => self.files.contains_key(rel),
            media::Member::Dir => self.dirs.contains_key(rel),
            media::Member::Symlink(target) => self
                .links
                .get(rel)
                .is_some_and(|listed| listed.as_deref().is_none_or(|t| t == target)),
        }
    }
}

/// GNU `find`: type, mode, size, time and path of every entry, then its link target (empty
/// for what is not a link), each NUL-terminated; only where `tar` is GNU tar too, which the
/// fetch of a file list needs (`--null --no-unquote`).
pub(super) const FIND_PRINTF: &str = "tar --version 2>/dev/null | grep -q 'GNU tar' && exec find . -printf '%y %m %s %T@ %p\\0%l\\0'";

/// Elsewhere, POSIX tools: every file's `cksum`, then the directories, the links and
/// anything else, each part ended by a line `/` (which no path printed by `find .` is).
pub(super) const POSIX_LISTING: &str =
    "find . -type f -exec cksum {} + && echo / && find . -type d -print && echo / && \
     find . -type l -print && echo / && find . ! -type f ! -type d ! -type l -print && echo /";

/// `find -printf '%y %m %s %T@ %p\0%l\0'` records as a tree.
pub fn parse_tree(text: &[u8]) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    let ends = text.iter().filter(|&&b| b == 0).count();
    if ends % 2 == 1 || text.last().is_some_and(|&b| b != 0) {
        bail!("the listing from find ends in the middle of an entry");
    }
    let mut parts = text.split(|&b| b == 0);
    while let (Some(record), Some(target)) = (parts.next(), parts.next()) {
        let mut fields = record.splitn(5, |&b| b == b' ');
        let mut field = || fields.next().and_then(|p| std::str::from_utf8(p).ok());
        let (kind, mode, size, time) = (field(), field(), field(), field());
        let path = fields.next();
        let parsed = (|| {
            let mode = u32::from_str_radix(mode?, 8).ok()?;
            let size: u64 = size?.parse().ok()?;
            let secs: i64 = time?.split('.').next()?.parse().ok()?;
            Some((kind?, mode, size, secs))
        })();
        let (Some((kind, mode, size, secs)), Some(path)) = (parsed, path) else {
            bail!(
                "unexpected line from find: {:?}",
                String::from_utf8_lossy(record)
            );
        };
        if path == b"." {
            continue;
        }
        let rel = relative(path, "find")?;
        match kind {
            "f" => {
                let meta = FileMeta {
                    size,
                    mtime: Some(secs),
                    mode,
                };
                tree.files.insert(rel, meta);
            }
            "d" => {
                tree.dirs.insert(rel, Some(mode));
            }
            "l" => {
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target));
                tree.links.insert(rel, Some(target));
            }
            other => bail!(
                "{} is a special file (find type {other}): only files, directories and links belong in media",
                rel.display()
            ),
        }
    }
    Ok(tree)
}

/// `./path` as printed by `find .`, as a path relative to the media root.
pub(super) fn relative(path: &[u8], from: &str) -> anyhow::Result<PathBuf> {
    match path.strip_prefix(b"./") {
        Some(rel) if !rel.is_empty() => Ok(PathBuf::from(std::ffi::OsStr::from_bytes(rel))),
        _ => bail!(
            "unexpected path from {from}: {:?}",
            String::from_utf8_lossy(path)
        ),
    }
}

/// [`POSIX_LISTING`]'s output as a tree: files with their CRCs, then directories and links
/// (without modes or targets, which POSIX `find` cannot print); anything else is refused.
pub fn parse_posix_listing(text: &[u8]) -> anyhow::Result<Tree> {
    let mut parts = text.split(|&b| b == b'\n');
    let mut part = || -> anyhow::Result<Vec<&[u8]>> {
        let mut lines = Vec::new();
        loop {
            match parts.next() {
                Some(b"/") => return Ok(lines),
                Some(line) if !line.is_empty() => lines.push(line),
                Some(_) => {}
                None => {
                    bail!("the listing ends early (a file name with a line break in it? rename it)")
                }
            }
        }
    };
    let mut cksums = part()?.join(&b'\n');
    cksums.push(b'\n');
    let sums = parse_listing(&cksums)?;
    let (dirs, links, others) = (part()?, part()?, part()?);
    if let Some(other) = others.first() {
        bail!(
            "{} is a special file: only files, directories and links belong in media",
            String::from_utf8_lossy(other)
        );
    }
    let mut tree = Tree::default();
    for dir in dirs.into_iter().filter(|d| *d != b".") {
        tree.dirs.insert(relative(dir, "find")?, None);
    }
    for link in links {
        tree.links.insert(relative(link, "find")?, None);
    }
    tree.files = sums
        .iter()
        .map(|(rel, &(_, size))| {
            let meta = FileMeta {
                size,
                mtime: None,
                mode: 0,
            };
            (rel.clone(), meta)
        })
        .collect();
    tree.sums = Some(sums);
    Ok(tree)
}

/// `cksum` lines (`CRC SIZE ./path`) by path.
pub fn parse_listing(text: &[u8]) -> anyhow::Result<Listing> {
    use std::os::unix::ffi::OsStrExt;
    let mut listing = Listing::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, |&b| b == b' ');
        let crc = parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
        let size = parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
        let name = parts.next().and_then(|p| p.strip_prefix(b"./"));
        let (Some(crc), Some(size), Some(name)) = (crc, size, name) else {
            bail!(
                "unexpected line from cksum: {:?} (a file name with a line break in it? rename it)",
                String::from_utf8_lossy(line)
            );
        };
        listing.insert(
            PathBuf::from(std::ffi::OsStr::from_bytes(name)),
            (crc, size),
        );
    }
    Ok(listing)
}
