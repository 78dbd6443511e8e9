//! The uploaded-media tree: scanning, copying and hashing it (on every core), listing it in
//! `sha256sum` format, and packing or unpacking it as `netpoint/media/` in a gzip tar.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    io::{self, Read, Write},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Component, Path, PathBuf},
};

use anyhow::{bail, Context};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Where a tar archive keeps the media, as `tar -czf x netpoint/media/` from an installation root.
pub const ARCHIVE_PREFIX: &str = "netpoint/media/";

const CHUNK: usize = 256 * 1024;

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
    let meta = fs::metadata(root)
        .with_context(|| format!("media directory {} not found", root.display()))?;
    if !meta.is_dir() {
        bail!("media path {} is not a directory", root.display());
    }
    let mut entries = Vec::new();
    for item in walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false)
    {
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
            if !link_stays_inside(&rel, &target) {
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
        entries.push(Entry { rel, kind });
    }
    Ok(entries)
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

/// Whether a link at `rel` (relative to the root) pointing at `target` resolves inside the root.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel
        .parent()
        .map(|p| p.components().count() as i64)
        .unwrap_or(0);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Copies the tree at `src` into the new directory `dst`, hashing each file as it is read,
/// then reads every copy back and checks it against the source's hash.
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
        .map(|entry| {
            let from = src.join(&entry.rel);
            let to = dst.join(&entry.rel);
            let hashed = copy_file_hashed(&from, &to, &entry.rel)?;
            let copied = hash_file(&to).with_context(|| format!("verifying {}", to.display()))?;
            if copied != hashed.sha256 {
                bail!("copy of {} does not match its source (SHA-256 differs): disk or filesystem fault", from.display());
            }
            on_file(hashed.size);
            Ok(hashed)
        })
        .collect::<anyhow::Result<_>>()?;
    copy_dir_modes(src, entries, dst)?;
    Ok(hashed)
}

fn copy_file_hashed(from: &Path, to: &Path, rel: &Path) -> anyhow::Result<Hashed> {
    let mut input = File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let meta = input.metadata()?;
    let mut output = File::create_new(to).with_context(|| format!("writing {}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut size = 0;
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        size += n as u64;
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
        let mode = fs::metadata(src.join(&entry.rel))?.permissions().mode();
        fs::set_permissions(dst.join(&entry.rel), fs::Permissions::from_mode(mode))?;
    }
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
        .map(|(entry, size)| {
            let path = root.join(&entry.rel);
            let sha256 = hash_file(&path).with_context(|| format!("hashing {}", path.display()))?;
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
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `sha256sum` lines, sorted by path bytes; names with `\` or a newline are escaped as
/// `sha256sum` does, so `sha256sum -c` reads every line back.
pub fn sha256_list(files: &[Hashed]) -> String {
    let mut sorted: Vec<&Hashed> = files.iter().collect();
    sorted.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_bytes()
            .cmp(b.rel.as_os_str().as_bytes())
    });
    let mut out = String::new();
    for file in sorted {
        out.push_str(&sums_line(&file.sha256, &file.rel.to_string_lossy()));
    }
    out
}

/// One `sha256sum` line for a file name.
pub fn sums_line(sha256: &str, name: &str) -> String {
    if name.contains(['\\', '\n']) {
        format!(
            "\\{sha256}  {}\n",
            name.replace('\\', "\\\\").replace('\n', "\\n")
        )
    } else {
        format!("{sha256}  {name}\n")
    }
}

/// Reads `sha256sum` lines back into `path → hash`.
pub fn parse_sha256_list(text: &str, what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let parsed = line.split_once("  ").or_else(|| line.split_once(" *"));
        let Some((hash, name)) = parsed
            .filter(|(hash, _)| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            bail!(
                "{what} line {} is not in sha256sum format: regenerate the file",
                number + 1
            );
        };
        let name = if escaped {
            name.replace("\\n", "\n").replace("\\\\", "\\")
        } else {
            name.to_string()
        };
        sums.insert(name, hash.to_ascii_lowercase());
    }
    Ok(sums)
}

/// Compares files on disk with a list: every listed file must be present with its hash, and
/// nothing else may be there. Returns the totals verified.
pub fn verify(
    root: &Path,
    expected: &BTreeMap<String, String>,
    on_file: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Totals> {
    let entries = scan(root)?;
    let actual = hash_all(root, &entries, on_file)?;
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for file in &actual {
        let name = file.rel.to_string_lossy().into_owned();
        match expected.get(&name) {
            None => problems.push(format!("extra file {name}")),
            Some(hash) if *hash != file.sha256 => {
                problems.push(format!("{name} changed (SHA-256 differs)"))
            }
            Some(_) => {}
        }
        seen.insert(name, ());
    }
    for name in expected.keys().filter(|name| !seen.contains_key(*name)) {
        problems.push(format!("missing file {name}"));
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
pub fn write_archive(
    root: &Path,
    entries: &[Entry],
    out: impl Write,
    on_file: &dyn Fn(u64),
) -> anyhow::Result<Vec<Hashed>> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
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
                let file =
                    File::open(&path).with_context(|| format!("reading {}", path.display()))?;
                let meta = file.metadata()?;
                let mut header = tar::Header::new_gnu();
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                let mut reader = HashingReader {
                    inner: file,
                    hasher: Sha256::new(),
                    size: 0,
                };
                tar.append_data(&mut header, &name, &mut reader)
                    .with_context(|| format!("archiving {}", path.display()))?;
                if reader.size != meta.len() {
                    bail!(
                        "{} changed while it was archived: run again",
                        path.display()
                    );
                }
                on_file(reader.size);
                hashed.push(Hashed {
                    rel: entry.rel.clone(),
                    sha256: hex(&reader.hasher.finalize()),
                    size: reader.size,
                });
            }
        }
    }
    let gz = tar.into_inner().context("finishing the media archive")?;
    gz.finish()
        .context("finishing the media archive")?
        .flush()?;
    Ok(hashed)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Unpacks a media archive into the new directory `dst`. Members must lie under
/// `netpoint/media/`; absolute paths, `..`, links out of the root and special files are refused.
pub fn extract_archive(archive: &Path, dst: &Path) -> anyhow::Result<()> {
    let file = File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut dir_modes = Vec::new();
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
                let mut out = File::create_new(&to)
                    .with_context(|| format!("media archive member `{shown}` appears twice or cannot be written"))?;
                io::copy(&mut entry, &mut out).with_context(|| format!("extracting {shown}"))?;
                out.set_permissions(fs::Permissions::from_mode(mode))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.context("symlink without a target")?.into_owned();
                if !link_stays_inside(rel, &target) {
                    bail!("media archive member `{shown}` links outside the media root (to {}): refusing the archive", target.display());
                }
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(&target, &to)?;
            }
            other => bail!("media archive member `{shown}` is a {other:?} entry; only files, directories and symlinks are allowed"),
        }
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside() {
        assert!(link_stays_inside(
            Path::new("a/b.png"),
            Path::new("../c.png")
        ));
        assert!(link_stays_inside(
            Path::new("a/b.png"),
            Path::new("./c.png")
        ));
        assert!(!link_stays_inside(
            Path::new("b.png"),
            Path::new("../c.png")
        ));
        assert!(!link_stays_inside(
            Path::new("a/b.png"),
            Path::new("/etc/passwd")
        ));
        assert!(!link_stays_inside(
            Path::new("a/b.png"),
            Path::new("../../x")
        ));
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
        let text = sha256_list(&files);
        assert!(text.starts_with("\\bbbb"), "{text}");
        let parsed = parse_sha256_list(&text, "list").unwrap();
        assert_eq!(parsed["b/x y.png"], "a".repeat(64));
        assert_eq!(parsed["a\\odd\nname"], "b".repeat(64));
        assert_eq!(parsed.len(), 3);
        assert!(parse_sha256_list("nonsense\n", "list").is_err());
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
        let sums = parse_sha256_list(&sha256_list(&hashed), "list").unwrap();
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
}

/// `cargo xtask hash-media DIR`: the tree's SHA-256 list on stdout.
pub fn print_sums(root: &Path) -> anyhow::Result<()> {
    let entries = scan(root)?;
    let hashed = hash_all(root, &entries, &|_| {})?;
    print!("{}", sha256_list(&hashed));
    Ok(())
}
