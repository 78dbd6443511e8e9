//! Checks of a bundle's SQL before anything is loaded: read once, as psql will read it,
//! every statement must be one pg_dump writes where it stands (session settings before the
//! first entry, the entry type's own statements after), the script must end as pg_dump ends
//! a dump, and hold the entries and rows its manifest records.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use crate::{bundle, plain::toc};

/// Reads `sql` once and checks it before anything is loaded; returns its table of contents.
pub fn check_complete(
    pinned: &bundle::Pinned,
    manifest: &bundle::Manifest,
) -> anyhow::Result<toc::Toc> {
    let sql = &pinned.path;
    let toc = toc::scan(std::io::BufReader::with_capacity(1 << 20, pinned.reader()))
        .with_context(|| format!("reading {}", sql.display()))?;
    // What was read is what was hashed: nothing wrote to the file in between.
    pinned.check_unchanged()?;
    if let Some(refused) = &toc.refused {
        let entry = refused
            .entry
            .as_ref()
            .map_or(String::new(), |entry| format!(" (entry {entry})"));
        bail!(
            "{}, line {}{entry}: {}: not a dump this tool loads, nothing was changed",
            sql.display(),
            refused.line,
            refused.what
        );
    }
    if !toc.complete {
        bail!(
            "{} is cut short: it does not end as a finished pg_dump ends, nothing was changed; export the bundle again",
            sql.display()
        );
    }
    let encoding = &manifest.source.encoding;
    if toc.client_encoding.as_ref() != Some(encoding) {
        bail!(
            "{} sets client_encoding to {} where {} records the source's encoding as {encoding}: not a dump this tool loads, nothing was changed",
            sql.display(),
            toc.client_encoding.as_deref().unwrap_or("nothing"),
            bundle::MANIFEST,
        );
    }
    if toc.entries.len() as u64 != manifest.entries {
        bail!(
            "{} has {} table-of-contents entries where {} recorded {}, nothing was changed; export the bundle again",
            sql.display(),
            toc.entries.len(),
            bundle::MANIFEST,
            manifest.entries
        );
    }
    if toc.rows != manifest.rows {
        let differ = toc
            .rows
            .keys()
            .chain(manifest.rows.keys())
            .find(|table| toc.rows.get(*table) != manifest.rows.get(*table))
            .expect("the maps differ");
        let count = |rows: &BTreeMap<String, u64>| {
            rows.get(differ).map_or("no".to_string(), |n| n.to_string())
        };
        bail!(
            "{} holds {} rows of {differ} where {} recorded {}, nothing was changed; export the bundle again",
            sql.display(),
            count(&toc.rows),
            bundle::MANIFEST,
            count(&manifest.rows)
        );
    }
    Ok(toc)
}
