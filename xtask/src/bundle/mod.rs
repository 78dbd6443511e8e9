//! The bundle: a directory that carries a database and its media from one machine to another.
//!
//! `netpoint.sql` (plain SQL), `netpoint_media.tar.gz` (members under `netpoint/media/`),
//! `media.sha256` (per media file), `manifest.json`, `SHA256SUMS` over all of them, and
//! `SHA256SUMS.sig` when the bundle is signed ([`sign`]). Fixtures use the same layout with
//! the media unpacked in `media/`, never signed.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::media;
use crate::remedy::Remedy;

pub mod allowed_signers;
pub mod check;
pub mod sign;

pub const SQL: &str = "netpoint.sql";
pub const MEDIA_ARCHIVE: &str = "netpoint_media.tar.gz";
pub const MEDIA_DIR: &str = "media";
pub const MEDIA_SUMS: &str = "media.sha256";
pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";

/// Files a bundle may hold besides those listed in `SHA256SUMS`.
const UNLISTED: &[&str] = &[
    SUMS,
    sign::SIG,
    MEDIA_DIR,
    "schema.sql",
    "scrub-coverage.toml",
    "README.md",
];

/// `SHA256SUMS` text over the named files of `dir`, in name order.
pub fn sums_for(dir: &Path, names: &[&str]) -> anyhow::Result<String> {
    let mut names = names.to_vec();
    names.sort();
    let mut out = String::new();
    for name in names {
        let hash = media::hash_file(&dir.join(name)).with_context(|| format!("hashing {name}"))?;
        out.push_str(&media::sums_line(&hash, name));
    }
    Ok(out)
}

/// The bytes of `dir/SHA256SUMS`, read once: what a signature covers is what the files are
/// checked against.
pub fn read_sums(dir: &Path) -> anyhow::Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("bundle {} not found: {}", dir.display(), Remedy::BundleDir);
    }
    let path = dir.join(SUMS);
    if fs::symlink_metadata(&path).is_err() {
        bail!("{} has no {SUMS}: not a complete bundle", dir.display());
    }
    let sums = Pinned::open(dir, SUMS)?;
    let mut bytes = Vec::new();
    sums.reader().read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A bundle's file opened once, when it is checked, and read through that opening only:
/// a file renamed or linked into its place afterwards is never read, and one rewritten in
/// place is caught by [`Pinned::check_unchanged`].
#[derive(Debug)]
pub struct Pinned {
    file: fs::File,
    pub path: PathBuf,
    stamp: Stamp,
}

/// What changes whenever a file's bytes do: its size, and its change time, which no tool
/// can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

impl Pinned {
    /// Opens `dir/name`, which must be a regular file of the bundle's own, not a link.
    pub fn open(dir: &Path, name: &str) -> anyhow::Result<Pinned> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let refuse = |what: &str| {
            anyhow::anyhow!(
                "bundle {}: {name} is {what}, nothing was changed: copy the bundle as plain files (`cp -rL`) and import the copy",
                dir.display()
            )
        };
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(refuse("a symbolic link"));
        }
        // No link followed, and no wait on a pipe put in the file's place.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => refuse("a symbolic link"),
                _ => anyhow::anyhow!("reading {}: {err}", path.display()),
            })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(refuse("not a regular file"));
        }
        Ok(Pinned {
            file,
            path,
            stamp: Stamp::of(&meta),
        })
    }

    /// The file from its start; readers do not share a position.
    pub fn reader(&self) -> PinnedReader<'_> {
        self.range(0, self.stamp.len)
    }

    /// Bytes `start..end` of the file.
    pub fn range(&self, start: u64, end: u64) -> PinnedReader<'_> {
        PinnedReader {
            file: &self.file,
            at: start,
            end,
        }
    }

    /// Fails unless the file still holds the bytes it held when it was opened.
    pub fn check_unchanged(&self) -> anyhow::Result<()> {
        let now = Stamp::of(&self.file.metadata()?);
        if now != self.stamp {
            bail!(
                "{} changed after it was checked, nothing was changed: make sure no one else can write to the bundle, and import it again",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// Reads a range of a [`Pinned`] file by position.
pub struct PinnedReader<'a> {
    file: &'a fs::File,
    at: u64,
    end: u64,
}

impl Read for PinnedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let max = buf.len().min(self.end.saturating_sub(self.at) as usize);
        if max == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..max], self.at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file was cut short after it was checked",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// A bundle's files as [`verify_sums`] checked them: each listed name with its hash and its
/// opening.
#[derive(Debug)]
pub struct Verified {
    pub files: BTreeMap<String, (String, Pinned)>,
}

impl Verified {
    pub fn listed(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(name, (hash, _))| (name.clone(), hash.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// The opening of `name`, which [`Manifest::check_files`] made sure is listed.
    pub fn file(&self, name: &str) -> anyhow::Result<&Pinned> {
        self.files
            .get(name)
            .map(|(_, pinned)| pinned)
            .ok_or_else(|| anyhow::anyhow!("{SUMS} does not list {name}: not a complete bundle"))
    }

    /// The whole of a small file (the manifest, the media checksums).
    pub fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file(name)?.reader().read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// Checks every file against `sums` (the bytes of `SHA256SUMS`) before anything else is
/// read: a changed, missing or unlisted file is named and refused. Each file is hashed
/// through the opening the import then reads it by.
pub fn verify_sums(dir: &Path, sums: &[u8]) -> anyhow::Result<Verified> {
    let text = std::str::from_utf8(sums).map_err(|_| {
        anyhow::anyhow!(
            "{SUMS} in {} is not text: not a NetPoint bundle",
            dir.display()
        )
    })?;
    let listed = media::parse_sha256_list(text, SUMS)?;
    if !listed.contains_key(SQL) {
        bail!(
            "{SUMS} in {} does not list {SQL}: not a NetPoint bundle",
            dir.display()
        );
    }
    let mut problems = Vec::new();
    let mut files = BTreeMap::new();
    for (name, expected) in &listed {
        if name.contains('/') {
            problems.push(format!("{name} is not a bundle file"));
            continue;
        }
        if fs::symlink_metadata(dir.join(name)).is_err() {
            problems.push(format!("{name} is missing"));
            continue;
        }
        let pinned = Pinned::open(dir, name)?;
        let actual = media::hash_reader(pinned.reader())
            .with_context(|| format!("reading {}", pinned.path.display()))?;
        if actual == *expected {
            files.insert(name.clone(), (actual, pinned));
        } else {
            problems.push(format!("{name} changed (SHA-256 differs)"));
        }
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !listed.contains_key(&name) && !UNLISTED.contains(&name.as_str()) {
            problems.push(format!("unexpected file {name}"));
        }
    }
    if !problems.is_empty() {
        bail!(
            "bundle {} failed its checksums, nothing was changed: {}",
            dir.display(),
            problems.join(", ")
        );
    }
    Ok(Verified { files })
}

/// The manifest's format, checked on every import: 2 added per-table row counts, 3 signed
/// bundles (`SHA256SUMS.sig`).
pub const FORMAT: u32 = 3;

/// `manifest.json`: what a bundle (or the fixtures) holds and where it came from. Read
/// strictly: an unknown field, format or a missing value refuses the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub tool: ToolInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub source: SourceInfo,
    /// Tables whose data was left out, schema-qualified.
    pub excluded_table_data: Vec<String>,
    /// Table-of-contents entries (`-- Name: ...; Type: ...`) in `netpoint.sql`.
    pub entries: u64,
    /// Rows of every table in `netpoint.sql`, by the name its `COPY` line gives it.
    pub rows: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubRecord>,
    /// Columns no scrub rule covers that hold credential-shaped values, and how many rows
    /// (never a value); absent when the scan found nothing, and in bundles from before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<Leak>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRecord>,
    /// The subset the bundle holds, when it holds one rather than the whole source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<SubsetRecord>,
}

/// A subset's definition: its roots as given, its sample, and the rules file's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetRecord {
    pub roots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The source server; never a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The SSH destination `host` and `port` are seen from, for a source reached over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    pub server_major: u32,
    pub encoding: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRecord {
    pub rules: Vec<ScrubbedRule>,
    pub skipped: Vec<String>,
}

/// A rule as `table.column: action`, with the rows it changed where they are recorded
/// (fixtures leave them out, since they depend on whether their source was scrubbed before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScrubbedRule {
    Counted { rule: String, rows: u64 },
    Named(String),
}

/// A leak scan's finding: `schema.table.column`, the rows whose value holds that kind of
/// thing, and the kind (a manifest from before kinds holds credentials only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leak {
    pub column: String,
    pub rows: u64,
    #[serde(default)]
    pub kind: LeakKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakKind {
    #[default]
    Credential,
    /// Personal data: an e-mail address.
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaRecord {
    pub files: u64,
    pub bytes: u64,
}

impl Manifest {
    pub fn tool() -> ToolInfo {
        ToolInfo {
            name: "netpoint-xtask".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }

    /// Reads and checks the manifest `files` verified; any problem refuses the bundle in one
    /// line.
    pub fn read(files: &Verified) -> anyhow::Result<Manifest> {
        let path = &files.file(MANIFEST)?.path;
        let text = String::from_utf8(files.read(MANIFEST)?).map_err(|_| {
            anyhow::anyhow!("{} is not UTF-8: not a complete bundle", path.display())
        })?;
        Manifest::parse(&text).with_context(|| {
            format!(
                "{} is not a manifest this tool can trust, nothing was changed",
                path.display()
            )
        })
    }

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        #[derive(Deserialize)]
        struct Versioned {
            format: Option<serde_json::Value>,
        }
        let versioned: Versioned = serde_json::from_str(text).map_err(|err| {
            anyhow::anyhow!(
                "invalid JSON at line {}, column {}: {err}",
                err.line(),
                err.column()
            )
        })?;
        match versioned.format.as_ref().and_then(|f| f.as_u64()) {
            Some(format) if format == u64::from(FORMAT) => {}
            Some(1) => bail!("format 1 was written by an older version and records no row counts to check the load against: export the bundle again"),
            Some(2) => bail!("format 2 was written by an older version, from before bundles were signed: export the bundle again"),
            Some(format) => bail!("format {format} is not known to this version (it reads format {FORMAT}): update the tool or export the bundle again"),
            None => bail!("it has no `format` number: export the bundle again"),
        }
        serde_json::from_str(text)
            .map_err(|err| anyhow::anyhow!("line {}, column {}: {err}", err.line(), err.column()))
    }

    /// Refuses a bundle whose files do not hold what the manifest records: media it exported
    /// must be there (`archived`: as `netpoint_media.tar.gz`, else unpacked), media it did not
    /// must not, and no other file may be listed.
    pub fn check_files(
        &self,
        dir: &Path,
        listed: &BTreeMap<String, String>,
        archived: bool,
    ) -> anyhow::Result<()> {
        let mut expected = vec![SQL, MANIFEST];
        if self.media.is_some() {
            expected.push(MEDIA_SUMS);
            if archived {
                expected.push(MEDIA_ARCHIVE);
            }
        }
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|name| !listed.contains_key(*name))
            .collect();
        let extra: Vec<&str> = listed
            .keys()
            .map(String::as_str)
            .filter(|name| !expected.contains(name))
            .collect();
        let media = match self.media {
            Some(media) => format!("{} media files", media.files),
            None => "no media".to_string(),
        };
        if !missing.is_empty() {
            bail!(
                "bundle {} lacks {} while {MANIFEST} records {media}, nothing was changed: export the bundle again",
                dir.display(),
                missing.join(" and ")
            );
        }
        if !extra.is_empty() {
            bail!(
                "bundle {} holds {} while {MANIFEST} records {media}, nothing was changed: export the bundle again",
                dir.display(),
                extra.join(" and ")
            );
        }
        Ok(())
    }

    /// Pretty JSON with a final newline.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("manifests serialise");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_names_each_problem() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SQL), "select 1;\n").unwrap();
        fs::write(dir.path().join(MANIFEST), "{}\n").unwrap();
        let sums = sums_for(dir.path(), &[SQL, MANIFEST]).unwrap();
        fs::write(dir.path().join(SUMS), &sums).unwrap();
        verify_sums(dir.path(), sums.as_bytes()).unwrap();
        // The signature is the one file a bundle holds that SHA256SUMS cannot list.
        fs::write(dir.path().join(sign::SIG), "x").unwrap();
        verify_sums(dir.path(), sums.as_bytes()).unwrap();

        fs::write(dir.path().join(SQL), "select 2;\n").unwrap();
        fs::write(dir.path().join("stray.txt"), "x").unwrap();
        fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        fs::write(dir.path().join("SHA256SUMS.asc"), "x").unwrap();
        let err = verify_sums(dir.path(), sums.as_bytes())
            .unwrap_err()
            .to_string();
        for expected in [
            "netpoint.sql changed",
            "manifest.json is missing",
            "unexpected file stray.txt",
            "unexpected file SHA256SUMS.asc",
        ] {
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn links_and_files_rewritten_after_the_check_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SQL), "select 1;\n").unwrap();
        let pinned = Pinned::open(dir.path(), SQL).unwrap();
        pinned.check_unchanged().unwrap();
        fs::write(dir.path().join(SQL), "select 2;\n").unwrap();
        let err = pinned.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("changed after it was checked"), "{err}");

        let elsewhere = dir.path().join("elsewhere.sql");
        fs::write(&elsewhere, "select 1;\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(MANIFEST)).unwrap();
        let err = Pinned::open(dir.path(), MANIFEST).unwrap_err().to_string();
        assert!(err.contains("manifest.json is a symbolic link"), "{err}");
    }

    #[test]
    fn older_formats_are_refused_with_the_fix() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let current = fs::read_to_string(fixtures.join(MANIFEST)).unwrap();
        assert_eq!(Manifest::parse(&current).unwrap().format, FORMAT);
        for (older, why) in [(1, "no row counts"), (2, "before bundles were signed")] {
            let text = current.replacen(
                &format!("\"format\": {FORMAT}"),
                &format!("\"format\": {older}"),
                1,
            );
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(err.ends_with("export the bundle again"), "{err}");
        }
    }
}
