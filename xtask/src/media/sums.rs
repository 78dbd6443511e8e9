//! SHA-256 sums of a media tree on every core, and `media.sha256` in `sha256sum` format.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{self, Write},
    os::unix::ffi::{OsStrExt, OsStringExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{read_buffer, read_some, Entry, Hashed, Kind, Totals};
use super::{totals, walk::scan};

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

pub fn hash_file_with(path: &Path, buf: &mut [u8]) -> io::Result<String> {
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

/// SHA-256 of everything `reader` yields.
pub fn hash_reader(mut reader: impl std::io::Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = read_buffer();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
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

pub fn push_sums_line(out: &mut Vec<u8>, sha256: &str, name: &[u8]) {
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

pub fn unescape(name: &[u8]) -> Option<Vec<u8>> {
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

/// `cargo xtask hash-media DIR`: the tree's SHA-256 list on stdout.
pub fn print_sums(root: &Path) -> anyhow::Result<()> {
    let entries = scan(root)?;
    let hashed = hash_all(root, &entries, &|_| {})?;
    io::stdout()
        .write_all(&sha256_list(&hashed))
        .context("writing to standard output")
}
