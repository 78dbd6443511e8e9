//! The bundle: a directory that carries a database and its media from one machine to another.
//!
//! `netpoint.sql` (plain SQL), `netpoint_media.tar.gz` (members under `netpoint/media/`),
//! `media.sha256` (per media file), `manifest.json`, and `SHA256SUMS` over all of them.
//! Fixtures use the same layout with the media unpacked in `media/`.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::media;

pub const SQL: &str = "netpoint.sql";
pub const MEDIA_ARCHIVE: &str = "netpoint_media.tar.gz";
pub const MEDIA_DIR: &str = "media";
pub const MEDIA_SUMS: &str = "media.sha256";
pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";

/// Files a bundle may hold besides those listed in `SHA256SUMS`.
const UNLISTED: &[&str] = &[SUMS, MEDIA_DIR, "schema.sql", "README.md"];

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

/// Checks every file against `SHA256SUMS` before anything else is read: a changed, missing
/// or unlisted file is named and refused.
pub fn verify_sums(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    if !dir.is_dir() {
        bail!(
            "bundle {} not found: pass the directory written by `cargo xtask clone-prod --out`",
            dir.display()
        );
    }
    let text = fs::read_to_string(dir.join(SUMS))
        .with_context(|| format!("{} has no {SUMS}: not a complete bundle", dir.display()))?;
    let listed = media::parse_sha256_list(&text, SUMS)?;
    if !listed.contains_key(SQL) {
        bail!(
            "{SUMS} in {} does not list {SQL}: not a NetPoint bundle",
            dir.display()
        );
    }
    let mut problems = Vec::new();
    for (name, expected) in &listed {
        if name.contains('/') {
            problems.push(format!("{name} is not a bundle file"));
            continue;
        }
        match media::hash_file(&dir.join(name)) {
            Ok(actual) if actual == *expected => {}
            Ok(_) => problems.push(format!("{name} changed (SHA-256 differs)")),
            Err(_) => problems.push(format!("{name} is missing")),
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
    Ok(listed)
}

pub fn read_manifest(dir: &Path) -> anyhow::Result<Value> {
    let text =
        fs::read_to_string(dir.join(MANIFEST)).with_context(|| format!("reading {MANIFEST}"))?;
    serde_json::from_str(&text).with_context(|| format!("{MANIFEST} is not valid JSON"))
}

/// The manifest as pretty JSON with a final newline, keys in a fixed order.
pub fn manifest_text(manifest: &Value) -> String {
    let mut text = serde_json::to_string_pretty(manifest).expect("JSON values serialise");
    text.push('\n');
    text
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
        verify_sums(dir.path()).unwrap();

        fs::write(dir.path().join(SQL), "select 2;\n").unwrap();
        fs::write(dir.path().join("stray.txt"), "x").unwrap();
        fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        let err = verify_sums(dir.path()).unwrap_err().to_string();
        for expected in [
            "netpoint.sql changed",
            "manifest.json is missing",
            "unexpected file stray.txt",
        ] {
            assert!(err.contains(expected), "{err}");
        }
    }
}
