//! The uploaded-media tree: scanning, copying and hashing it (on every core), listing it in
//! `sha256sum` format, and packing or unpacking it as `netpoint/media/` in a gzip tar.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::PermissionsExt,
    },
    path::{Component, Path, PathBuf},
    sync::mpsc,
};

use anyhow::{bail, Context};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Where a tar archive keeps the media, as `tar -czf x netpoint/media/` from an installation root.
pub const ARCHIVE_PREFIX: &str = "netpoint/media/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
    },
    /// A symbolic link whose target stays inside the root.
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the media root.
    pub rel: PathBuf,
    pub kind: Kind,
}

/// One file and its SHA-256, as in a `sha256sum` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    pub rel: PathBuf,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

pub fn totals(files: &[Hashed]) -> Totals {
    Totals {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
    }
}

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
fn walk(
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
fn link_stays_inside(root: &Path, rel: &Path, target: &Path) -> bool {
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

/// Bytes per read: large enough that syscalls cost nothing, small enough to hash from cache.
const READ_BUF: usize = 256 * 1024;

fn read_buffer() -> Vec<u8> {
    vec![0; READ_BUF]
}

fn copy_file_verified(
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

fn copy_dir_modes(src: &Path, entries: &[Entry], dst: &Path) -> anyhow::Result<()> {
    for entry in entries.iter().filter(|e| e.kind == Kind::Dir) {
        copy_dir_mode(src, dst, &entry.rel)?;
    }
    Ok(())
}

/// Gives the directory `rel` below `dst` the mode it has below `src`; done last, since a
/// read-only directory would refuse the files copied into it.
fn copy_dir_mode(src: &Path, dst: &Path, rel: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(src.join(rel))?.permissions().mode();
    fs::set_permissions(dst.join(rel), fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// SHA-256 of every file in `entries`, computed on all cores.
pub fn hash_all(
    root: &Path,
    entries: &[Entry],
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Vec<Hashed>> {
    entries
        .par_iter()
        .filter_map(|entry| match entry.kind {
            Kind::File { size } => Some((entry, size)),
            _ => None,
        })
        .map_init(read_buffer, |buf, (entry, size)| {
            let path = root.join(&entry.rel);
            let sha256 = hash_file_with(&path, buf)
                .with_context(|| format!("hashing {}", path.display()))?;
            on_file(size);
            Ok(Hashed {
                rel: entry.rel.clone(),
                sha256,
                size,
            })
        })
        .collect()
}

pub fn hash_file(path: &Path) -> io::Result<String> {
    hash_file_with(path, &mut read_buffer())
}

fn hash_file_with(path: &Path, buf: &mut [u8]) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = read_some(&mut file, buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `sha256sum` lines, sorted by path bytes, written as GNU `sha256sum` writes them: a name
/// with a backslash, a newline or a carriage return gets a leading backslash and those escaped;
/// other bytes, UTF-8 or not, go as they are, so `sha256sum -c` reads every line back.
pub fn sha256_list(files: &[Hashed]) -> Vec<u8> {
    let mut sorted: Vec<&Hashed> = files.iter().collect();
    sorted.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_bytes()
            .cmp(b.rel.as_os_str().as_bytes())
    });
    let mut out = Vec::new();
    for file in sorted {
        push_sums_line(&mut out, &file.sha256, file.rel.as_os_str().as_bytes());
    }
    out
}

/// One `sha256sum` line for a file name.
pub fn sums_line(sha256: &str, name: &str) -> String {
    let mut line = Vec::new();
    push_sums_line(&mut line, sha256, name.as_bytes());
    String::from_utf8(line).expect("escaping keeps UTF-8 as it is")
}

fn push_sums_line(out: &mut Vec<u8>, sha256: &str, name: &[u8]) {
    let escaped = name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    if escaped {
        out.push(b'\\');
    }
    out.extend_from_slice(sha256.as_bytes());
    out.extend_from_slice(b"  ");
    for &byte in name {
        match byte {
            b'\\' if escaped => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
    out.push(b'\n');
}

/// Reads `sha256sum` lines back into `path → hash`; names are bytes, as the file system has them.
pub fn parse_sums(text: &[u8], what: &str) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let mut sums = BTreeMap::new();
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{what} line {} is not in sha256sum format: regenerate the file",
                number + 1
            )
        };
        let (escaped, line) = match line.strip_prefix(b"\\") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (hash, name) = match line.get(64..66) {
            Some(b"  " | b" *") => (&line[..64], &line[66..]),
            _ => return Err(bad()),
        };
        if !hash.iter().all(u8::is_ascii_hexdigit) || name.is_empty() {
            return Err(bad());
        }
        let name = if escaped {
            unescape(name).ok_or_else(bad)?
        } else {
            name.to_vec()
        };
        let hash = String::from_utf8_lossy(hash).to_ascii_lowercase();
        sums.insert(PathBuf::from(std::ffi::OsString::from_vec(name)), hash);
    }
    Ok(sums)
}

fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut bytes = name.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

/// [`parse_sums`] for lists whose names are text, such as `SHA256SUMS`.
pub fn parse_sha256_list(text: &str, what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(parse_sums(text.as_bytes(), what)?
        .into_iter()
        .map(|(name, hash)| (name.to_string_lossy().into_owned(), hash))
        .collect())
}

/// Compares files on disk with a list: every listed file must be present with its hash, and
/// nothing else may be there. Returns the totals verified.
pub fn verify(
    root: &Path,
    expected: &BTreeMap<PathBuf, String>,
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Totals> {
    let entries = scan(root)?;
    let actual = hash_all(root, &entries, on_file)?;
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for file in &actual {
        let name = file.rel.display();
        match expected.get(&file.rel) {
            None => problems.push(format!("extra file {name}")),
            Some(hash) if *hash != file.sha256 => {
                problems.push(format!("{name} changed (SHA-256 differs)"))
            }
            Some(_) => {}
        }
        seen.insert(&file.rel);
    }
    for name in expected.keys().filter(|name| !seen.contains(name)) {
        problems.push(format!("missing file {}", name.display()));
    }
    if !problems.is_empty() {
        let more = if problems.len() > 5 {
            format!(" and {} more", problems.len() - 5)
        } else {
            String::new()
        };
        bail!(
            "media do not match their checksums: {}{more}",
            problems[..problems.len().min(5)].join(", ")
        );
    }
    Ok(totals(&actual))
}

/// Writes the tree as a gzip tar with members under `netpoint/media/`, hashing each file
/// while it is read. Returns the hashes for `media.sha256`.
///
/// The tar stream is cut into pieces compressed on every core and written, by a thread of
/// their own, as consecutive gzip members, which `gzip -d`, `tar -xzf` and [`extract_archive`]
/// read as one stream.
pub fn write_archive(
    root: &Path,
    entries: &[Entry],
    out: impl Write + Send,
    on_file: &dyn Fn(u64),
) -> anyhow::Result<Vec<Hashed>> {
    let (to_writer, compressed) = mpsc::channel();
    let (recycle, recycled) = mpsc::channel();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_members(out, compressed, recycle));
        let archived = write_tar(root, entries, GzMembers::new(to_writer, recycled), on_file);
        match writer.join() {
            Ok(Ok(())) => archived,
            // The writer's error is why the tar side stopped too.
            Ok(Err(err)) => Err(err).context("writing the media archive"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn write_tar(
    root: &Path,
    entries: &[Entry],
    members: GzMembers,
    on_file: &dyn Fn(u64),
) -> anyhow::Result<Vec<Hashed>> {
    let mut tar = tar::Builder::new(members);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    tar.append_dir("netpoint/", root)
        .context("archiving the media root")?;
    tar.append_dir(ARCHIVE_PREFIX, root)
        .context("archiving the media root")?;
    let mut hashed = Vec::new();
    for entry in entries {
        let path = root.join(&entry.rel);
        let name = Path::new(ARCHIVE_PREFIX).join(&entry.rel);
        match &entry.kind {
            Kind::Dir => tar.append_dir(&name, &path)?,
            Kind::Symlink { .. } => tar.append_path_with_name(&path, &name)?,
            Kind::File { .. } => {
                let mut file =
                    File::open(&path).with_context(|| format!("reading {}", path.display()))?;
                let meta = file.metadata()?;
                let mut header = tar::Header::new_gnu();
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                // The header (and a long-name entry when needed) from tar, then the data read
                // straight into the stream rather than through `io::copy`'s small buffer.
                tar.append_data(&mut header, &name, io::empty())
                    .with_context(|| format!("archiving {}", path.display()))?;
                let mut hasher = Sha256::new();
                let same_size = tar
                    .get_mut()
                    .append_file(&mut file, meta.len(), &mut hasher)
                    .with_context(|| format!("archiving {}", path.display()))?;
                if !same_size {
                    bail!(
                        "{} changed while it was archived: run again",
                        path.display()
                    );
                }
                on_file(meta.len());
                hashed.push(Hashed {
                    rel: entry.rel.clone(),
                    sha256: hex(&hasher.finalize()),
                    size: meta.len(),
                });
            }
        }
    }
    tar.into_inner()
        .and_then(GzMembers::finish)
        .context("finishing the media archive")?;
    Ok(hashed)
}

/// Bytes of tar stream per gzip member.
const MEMBER: usize = 4 << 20;

/// A member's number, the piece it came from (for reuse) and the member.
type Compressed = (u64, Vec<u8>, io::Result<Vec<u8>>);

/// Cuts what is written into `MEMBER`-byte pieces and gzips them on the rayon pool for
/// [`write_members`]. Two pieces more than there are threads (eight at most) are in flight, so
/// memory stays flat however large the tree.
struct GzMembers {
    /// Always `MEMBER` bytes long; `filled` of them are stream.
    piece: Vec<u8>,
    filled: usize,
    submitted: u64,
    in_flight: u64,
    max_in_flight: u64,
    free: Vec<(Vec<u8>, Vec<u8>)>,
    to_writer: mpsc::Sender<Compressed>,
    recycled: mpsc::Receiver<(Vec<u8>, Vec<u8>)>,
}

impl GzMembers {
    fn new(
        to_writer: mpsc::Sender<Compressed>,
        recycled: mpsc::Receiver<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        GzMembers {
            piece: vec![0; MEMBER],
            filled: 0,
            submitted: 0,
            in_flight: 0,
            max_in_flight: (rayon::current_num_threads() as u64 + 2).min(8),
            free: Vec::new(),
            to_writer,
            recycled,
        }
    }

    /// Reads `size` bytes of `file` into the stream, then the tar padding. False when the file
    /// is not `size` bytes long (any more).
    fn append_file(&mut self, file: &mut File, size: u64, hasher: &mut Sha256) -> io::Result<bool> {
        let mut left = size;
        while left > 0 {
            if self.filled == MEMBER {
                self.submit()?;
            }
            let room = (MEMBER - self.filled)
                .min(READ_BUF)
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let target = &mut self.piece[self.filled..self.filled + room];
            let n = read_some(file, target)?;
            if n == 0 {
                return Ok(false);
            }
            hasher.update(&target[..n]);
            self.filled += n;
            left -= n as u64;
        }
        let padding = (512 - size % 512) % 512;
        self.write_all(&[0; 512][..padding as usize])?;
        Ok(read_some(file, &mut [0])? == 0)
    }

    fn submit(&mut self) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            let buffers = recv_in_pool(&self.recycled)?;
            self.free.push(buffers);
            self.in_flight -= 1;
        }
        let (fresh, mut member) = self
            .free
            .pop()
            .unwrap_or_else(|| (vec![0; MEMBER], Vec::new()));
        let piece = std::mem::replace(&mut self.piece, fresh);
        let len = std::mem::take(&mut self.filled);
        let (number, to_writer) = (self.submitted, self.to_writer.clone());
        self.submitted += 1;
        self.in_flight += 1;
        rayon::spawn(move || {
            let result = gzip_member(&piece[..len], &mut member).map(|()| member);
            let _ = to_writer.send((number, piece, result));
        });
        Ok(())
    }

    /// Waits until every piece is written: a pool thread must not go on to wait for the writer
    /// while pieces it should compress are still queued behind it.
    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            recv_in_pool(&self.recycled)?;
            self.in_flight -= 1;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.submit()?;
        }
        self.drain()
    }
}

impl Drop for GzMembers {
    fn drop(&mut self) {
        let _ = self.drain();
    }
}

impl Write for GzMembers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.filled == MEMBER {
            self.submit()?;
        }
        let n = buf.len().min(MEMBER - self.filled);
        self.piece[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes members to `out` in order as they come in, handing their buffers back for reuse,
/// until every sender is gone.
fn write_members(
    mut out: impl Write,
    compressed: mpsc::Receiver<Compressed>,
    recycle: mpsc::Sender<(Vec<u8>, Vec<u8>)>,
) -> io::Result<()> {
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    for (number, piece, member) in compressed {
        waiting.insert(number, (piece, member?));
        while let Some((piece, mut member)) = waiting.remove(&next) {
            out.write_all(&member)?;
            next += 1;
            member.clear();
            let _ = recycle.send((piece, member));
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other(
            "a compressed piece of the archive went missing",
        ));
    }
    out.flush()
}

/// Waits for a message; on a pool thread it runs other pool work meanwhile, since the work it
/// waits for may be queued behind it.
fn recv_in_pool<T>(rx: &mpsc::Receiver<T>) -> io::Result<T> {
    let gone = || io::Error::other("the archive writer stopped");
    if rayon::current_thread_index().is_none() {
        return rx.recv().map_err(|_| gone());
    }
    loop {
        match rx.try_recv() {
            Ok(message) => return Ok(message),
            Err(mpsc::TryRecvError::Disconnected) => return Err(gone()),
            Err(mpsc::TryRecvError::Empty) => {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// One gzip member holding `data`: deflated at the fast level when it compresses, otherwise in
/// stored blocks, which cost no more than a copy (photos and PDFs do not compress).
fn gzip_member(data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if compresses(data) {
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        gz.write_all(data)?;
        gz.finish()?;
        return Ok(());
    }
    const BLOCK: usize = 0xffff;
    out.reserve(data.len() + data.len() / BLOCK * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    let mut blocks = data.chunks(BLOCK).peekable();
    while let Some(block) = blocks.next() {
        let len = block.len() as u16;
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(())
}

/// Whether deflating a few samples of `data` at the fast level saves at least 3 %.
fn compresses(data: &[u8]) -> bool {
    const SAMPLE: usize = 8 * 1024;
    const SAMPLES: usize = 4;
    let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut scratch = vec![0; SAMPLE + SAMPLE / 8];
    let (mut taken, mut made) = (0, 0);
    for i in 0..SAMPLES {
        let start = i * data.len().saturating_sub(SAMPLE) / (SAMPLES - 1);
        let sample = &data[start..(start + SAMPLE).min(data.len())];
        deflate.reset();
        let before = deflate.total_out();
        if deflate
            .compress(sample, &mut scratch, flate2::FlushCompress::Finish)
            .is_err()
        {
            return false;
        }
        taken += sample.len() as u64;
        made += deflate.total_out() - before;
        if sample.len() == data.len() {
            break;
        }
    }
    made * 100 < taken * 97
}

/// Unpacks a media archive into the new directory `dst`. Members must lie under
/// `netpoint/media/`; absolute paths, `..`, members under a link, links out of the root and
/// special files are refused.
pub fn extract_archive(archive: &Path, dst: &Path) -> anyhow::Result<()> {
    let file = File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(
        io::BufReader::with_capacity(READ_BUF, file),
    ));
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut dir_modes = Vec::new();
    let mut links: BTreeMap<PathBuf, (PathBuf, String)> = BTreeMap::new();
    for entry in tar.entries().context("reading the media archive")? {
        let mut entry = entry.context("reading the media archive")?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = Path::new(std::ffi::OsStr::from_bytes(&raw));
        if path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!("media archive member `{shown}` is an absolute path or leaves the media root: the archive is unsafe, refusing it");
        }
        let normal: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Ok(rel) = normal.strip_prefix(ARCHIVE_PREFIX.trim_end_matches('/')) else {
            if normal == Path::new("netpoint") && entry.header().entry_type().is_dir() {
                continue;
            }
            bail!("media archive member `{shown}` is not under {ARCHIVE_PREFIX}: not a NetPoint media archive");
        };
        if let Some(link) = rel.ancestors().skip(1).find(|a| links.contains_key(*a)) {
            bail!(
                "media archive member `{shown}` lies under the symbolic link {ARCHIVE_PREFIX}{}: the archive is unsafe, refusing it",
                link.display()
            );
        }
        let to = dst.join(rel);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if rel.as_os_str().is_empty() {
                    dir_modes.push((dst.to_path_buf(), mode));
                    continue;
                }
                fs::create_dir_all(&to)?;
                dir_modes.push((to, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                let out = File::create_new(&to)
                    .with_context(|| format!("media archive member `{shown}` appears twice or cannot be written"))?;
                // Through a large buffer: `io::copy` then reads and writes in its size.
                let mut out = io::BufWriter::with_capacity(READ_BUF, out);
                io::copy(&mut entry, &mut out).with_context(|| format!("extracting {shown}"))?;
                let out = out.into_inner().map_err(|err| err.into_error()).with_context(|| format!("extracting {shown}"))?;
                out.set_permissions(fs::Permissions::from_mode(mode))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.context("symlink without a target")?.into_owned();
                if rel.as_os_str().is_empty() || links.insert(rel.to_path_buf(), (target, shown.clone())).is_some() {
                    bail!("media archive member `{shown}` appears twice or replaces the media root: refusing the archive");
                }
            }
            other => bail!("media archive member `{shown}` is a {other:?} entry; only files, directories and symlinks are allowed"),
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

/// `cargo xtask hash-media DIR`: the tree's SHA-256 list on stdout.
pub fn print_sums(root: &Path) -> anyhow::Result<()> {
    let entries = scan(root)?;
    let hashed = hash_all(root, &entries, &|_| {})?;
    io::stdout()
        .write_all(&sha256_list(&hashed))
        .context("writing to standard output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside_once_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        fs::create_dir_all(root.join("a")).unwrap();
        let inside =
            |rel: &str, target: &str| link_stays_inside(&root, Path::new(rel), Path::new(target));
        assert!(inside("a/b.png", "../c.png"));
        assert!(inside("a/b.png", "./c.png"));
        assert!(!inside("b.png", "../c.png"));
        assert!(!inside("a/b.png", "/etc/passwd"));
        assert!(!inside("a/b.png", "../../x"));

        // A chain: each link's text stays inside, the path they make does not.
        std::os::unix::fs::symlink(".", root.join("x")).unwrap();
        assert!(inside("x", "."));
        assert!(!inside("z", "x/.."));
        assert!(!inside("a/z", "../x/../x/.."));
        assert!(inside("z", "x/a/../a"));
        std::os::unix::fs::symlink("a/..", root.join("up")).unwrap();
        assert!(!inside("z", "up/.."));
        // A loop ends instead of running forever.
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(!inside("z", "loop/x"));
    }

    #[test]
    fn archives_cannot_write_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("chain.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut link = |name: &str, target: &str| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, name, target).unwrap();
        };
        link("netpoint/media/x", ".");
        link("netpoint/media/x/l", "..");
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "netpoint/media/x/l/evil", &b"x"[..])
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let out = dir.path().join("out");
        let err = extract_archive(&archive, &out).unwrap_err().to_string();
        assert!(err.contains("symbolic link netpoint/media/x"), "{err}");
        assert!(!dir.path().join("evil").exists());
        assert!(
            !out.join("x").exists(),
            "a link was made before the refusal"
        );
    }

    #[test]
    fn sha256_lines_round_trip() {
        let files = vec![
            Hashed {
                rel: "b/x y.png".into(),
                sha256: "a".repeat(64),
                size: 1,
            },
            Hashed {
                rel: "a\\odd\nname".into(),
                sha256: "b".repeat(64),
                size: 2,
            },
            Hashed {
                rel: "Ä.jpg".into(),
                sha256: "c".repeat(64),
                size: 3,
            },
        ];
        let text = String::from_utf8(sha256_list(&files)).unwrap();
        assert!(text.starts_with("\\bbbb"), "{text}");
        let parsed = parse_sha256_list(&text, "list").unwrap();
        assert_eq!(parsed["b/x y.png"], "a".repeat(64));
        assert_eq!(parsed["a\\odd\nname"], "b".repeat(64));
        assert_eq!(parsed.len(), 3);
        assert!(parse_sha256_list("nonsense\n", "list").is_err());
        assert!(parse_sha256_list(&format!("\\{}  a\\q\n", "d".repeat(64)), "list").is_err());
    }

    #[test]
    fn sha256_lines_keep_names_that_are_not_utf8() {
        let name = |bytes: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
        let files: Vec<Hashed> = [&b"caf\xe9.jpg"[..], b"cr\rand\\\xff", b"plain.png"]
            .iter()
            .enumerate()
            .map(|(i, bytes)| Hashed {
                rel: name(bytes),
                sha256: format!("{i}").repeat(64),
                size: 1,
            })
            .collect();
        let text = sha256_list(&files);
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0], [&b"0".repeat(64)[..], b"  caf\xe9.jpg"].concat());
        assert_eq!(
            lines[1],
            [&b"\\"[..], &b"1".repeat(64), b"  cr\\rand\\\\\xff"].concat()
        );
        let parsed = parse_sums(&text, "list").unwrap();
        for file in &files {
            assert_eq!(parsed[&file.rel], file.sha256, "{}", file.rel.display());
        }

        // And GNU sha256sum agrees, byte for byte, on real files.
        let dir = tempfile::tempdir().unwrap();
        for file in &files {
            fs::write(dir.path().join(&file.rel), b"x").unwrap();
        }
        let entries = scan(dir.path()).unwrap();
        let ours = sha256_list(&hash_all(dir.path(), &entries, &|_| {}).unwrap());
        let names: Vec<&std::ffi::OsStr> = entries.iter().map(|e| e.rel.as_os_str()).collect();
        let gnu = std::process::Command::new("sha256sum")
            .arg("--")
            .args(&names)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(ours, gnu.stdout);
        let back = parse_sums(&gnu.stdout, "list").unwrap();
        assert_eq!(verify(dir.path(), &back, &|_| {}).unwrap().files, 3);
    }

    #[test]
    fn archive_round_trip_and_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        fs::create_dir_all(root.join("nested dir/ü")).unwrap();
        fs::write(root.join("nested dir/ü/a.png"), b"png").unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        let entries = scan(&root).unwrap();
        let archive = dir.path().join("m.tar.gz");
        let hashed =
            write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}).unwrap();
        let out = dir.path().join("out");
        extract_archive(&archive, &out).unwrap();
        let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
        assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 2);

        let evil = dir.path().join("evil.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            File::create(&evil).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        let name = b"netpoint/media/../../escape";
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let err = extract_archive(&evil, &dir.path().join("out2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the media root"), "{err}");
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text that compresses, photos that do not, one larger than a gzip member, an empty file,
    /// a link and a private file. Returns the size of the text.
    fn mixed_tree(root: &Path) -> u64 {
        fs::create_dir_all(root.join("photos/2024")).unwrap();
        fs::create_dir_all(root.join("docs")).unwrap();
        let text: String = (0..40_000)
            .map(|i| format!("row {i}, customer {}, plan basic\n", i % 97))
            .collect();
        fs::write(root.join("docs/export.csv"), &text).unwrap();
        fs::set_permissions(
            root.join("docs/export.csv"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::write(root.join("docs/empty.txt"), b"").unwrap();
        fs::write(root.join("photos/2024/big.jpg"), noise(MEMBER + 300_000, 1)).unwrap();
        for i in 0..20 {
            let photo = root.join(format!("photos/p{i:02}.png"));
            fs::write(photo, noise(50_000 + i * 7_919, i as u64 + 2)).unwrap();
        }
        std::os::unix::fs::symlink("../docs/export.csv", root.join("photos/link.csv")).unwrap();
        text.len() as u64
    }

    fn assert_same_tree(expected: &Path, actual: &Path) {
        let want = scan(expected).unwrap();
        let got = scan(actual).unwrap();
        let names = |entries: &[Entry]| {
            entries
                .iter()
                .map(|e| (e.rel.clone(), e.kind.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&got), names(&want));
        for entry in want.iter().filter(|e| matches!(e.kind, Kind::File { .. })) {
            let (a, b) = (expected.join(&entry.rel), actual.join(&entry.rel));
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{} differs",
                b.display()
            );
            let (a, b) = (fs::metadata(a).unwrap(), fs::metadata(&b).unwrap());
            assert_eq!(a.permissions().mode(), b.permissions().mode());
            let secs = |m: &fs::Metadata| {
                m.modified()
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            };
            assert_eq!(secs(&a), secs(&b), "{} mtime", entry.rel.display());
        }
    }

    #[test]
    fn archive_of_many_members_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        let text_len = mixed_tree(&root);
        let entries = scan(&root).unwrap();
        let archive = dir.path().join("m.tar.gz");
        let hashed =
            write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}).unwrap();

        assert_eq!(hashed.len(), 23);
        for file in &hashed {
            let data = fs::read(root.join(&file.rel)).unwrap();
            assert_eq!(
                file.sha256,
                hex(&Sha256::digest(&data)),
                "{}",
                file.rel.display()
            );
            assert_eq!(file.size, data.len() as u64);
        }

        let packed = fs::read(&archive).unwrap();
        let mut stream = Vec::new();
        flate2::read::MultiGzDecoder::new(&packed[..])
            .read_to_end(&mut stream)
            .unwrap();
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut first)
            .unwrap();
        assert!(first.len() < stream.len(), "the archive is a single member");
        assert_eq!(stream.len() % 512, 0);
        let input = totals(&hashed).bytes;
        assert!(
            (packed.len() as u64) < input - text_len / 2,
            "the text was not compressed: {} bytes for {input}",
            packed.len()
        );

        let out = dir.path().join("out");
        extract_archive(&archive, &out).unwrap();
        assert_same_tree(&root, &out);
        let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
        assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 23);

        let sh = xshell::Shell::new().unwrap();
        let gnu = dir.path().join("gnu");
        fs::create_dir(&gnu).unwrap();
        xshell::cmd!(sh, "tar -xzf {archive} -C {gnu}")
            .quiet()
            .run()
            .unwrap();
        assert_same_tree(&root, &gnu.join("netpoint/media"));
        let listing = xshell::cmd!(sh, "tar -tzf {archive}").read().unwrap();
        assert_eq!(listing.lines().next(), Some("netpoint/"));
        assert!(listing
            .lines()
            .skip(1)
            .all(|l| l.starts_with(ARCHIVE_PREFIX)));
    }

    #[test]
    fn archives_from_a_one_thread_pool() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        mixed_tree(&root);
        let entries = scan(&root).unwrap();
        let archive = dir.path().join("m.tar.gz");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let hashed = pool
            .install(|| write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}))
            .unwrap();
        let out = dir.path().join("out");
        extract_archive(&archive, &out).unwrap();
        let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
        assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 23);

        fs::remove_file(root.join("photos/p19.png")).unwrap();
        let err = pool
            .install(|| write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}))
            .unwrap_err();
        assert!(format!("{err:#}").contains("p19.png"), "{err:#}");
    }

    #[test]
    fn members_decode_at_block_edges() {
        for len in [0, 1, 0xffff, 0x10000, 3 * 0xffff + 7] {
            for data in [noise(len, 7), vec![b'a'; len]] {
                let mut member = Vec::new();
                gzip_member(&data, &mut member).unwrap();
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&member[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(back == data, "{len} bytes did not round-trip");
            }
            let mut member = Vec::new();
            gzip_member(&noise(len, 9), &mut member).unwrap();
            assert!(
                member.len() <= len + len / 0xffff * 5 + 23,
                "{len} bytes not stored"
            );
        }
    }

    #[test]
    fn copies_and_sums_match_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        mixed_tree(&root);
        let entries = scan(&root).unwrap();
        let copy = dir.path().join("copy");
        let copied = copy_verified(&root, &entries, &copy, &|_| {}).unwrap();
        assert_same_tree(&root, &copy);
        let list = sha256_list(&copied);
        assert_eq!(
            sha256_list(&hash_all(&copy, &entries, &|_| {}).unwrap()),
            list
        );

        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(&root);
        let mut names: Vec<String> = copied
            .iter()
            .map(|f| f.rel.to_string_lossy().into_owned())
            .collect();
        names.sort();
        let sums = xshell::cmd!(sh, "sha256sum -- {names...}").read().unwrap();
        assert_eq!(String::from_utf8(list).unwrap(), sums + "\n");
    }

    #[test]
    fn trees_copy_without_a_list_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        mixed_tree(&root);
        let counted = count(&root).unwrap();
        let listed = scan_totals(&scan(&root).unwrap());
        assert_eq!((counted.files, counted.bytes), (listed.files, listed.bytes));
        assert!(counted.files > 3, "{counted:?}");
        let copy = dir.path().join("copy");
        let seen = std::sync::atomic::AtomicU64::new(0);
        let copied = copy_tree(&root, &copy, &|n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_same_tree(&root, &copy);
        assert_eq!((copied.files, copied.bytes), (counted.files, counted.bytes));
        assert_eq!(seen.into_inner(), counted.bytes);

        std::os::unix::fs::symlink("../../outside", root.join("escape")).unwrap();
        let err = copy_tree(&root, &dir.path().join("copy2"), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("outside the media root"), "{err}");
        assert!(count(&root).is_err());
    }
}
