//! Checks of a bundle's SQL before anything is loaded: whole, as pg_dump ends a dump;
//! only session settings before the first entry; no statement beyond the database; and the
//! entries and rows its manifest records.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{bail, Context};

use crate::{bundle, plain::toc};

/// Reads `sql` once and checks that it is whole before anything is loaded: it ends as
/// pg_dump ends a finished dump, and holds exactly the rows the manifest recorded.
/// Refuses a dump whose lines before its first table-of-contents entry are not the session
/// settings pg_dump writes there: a parallel load runs them in every session.
pub fn check_preamble(sql: &Path, end: u64) -> anyhow::Result<()> {
    const MOST: u64 = 64 << 10;
    let mut text = Vec::new();
    fs::File::open(sql)
        .and_then(|file| {
            use std::io::Read;
            file.take(end.min(MOST + 1)).read_to_end(&mut text)
        })
        .with_context(|| format!("reading {}", sql.display()))?;
    // The settings pg_dump 9.6 to 17 put there, one statement a line.
    const SETTINGS: &[&str] = &[
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
        "client_encoding",
        "standard_conforming_strings",
        "check_function_bodies",
        "xmloption",
        "client_min_messages",
        "row_security",
        "default_with_oids",
        "default_tablespace",
        "default_table_access_method",
    ];
    let setting = |line: &[u8]| {
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line
            .strip_prefix("SET ")?
            .strip_suffix(';')?
            .split_once(" = ")?;
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "'_-.".contains(c));
        (SETTINGS.contains(&name) && plain).then_some(())
    };
    let pg_dump_writes = |line: &&[u8]| {
        line.is_empty()
            || line.starts_with(b"--")
            || setting(line).is_some()
            || *line == b"SELECT pg_catalog.set_config('search_path', '', false);"
            || [&b"\\restrict "[..], b"\\unrestrict "]
                .iter()
                .any(|command| {
                    line.strip_prefix(*command)
                        .is_some_and(|key| key.iter().all(u8::is_ascii_alphanumeric))
                })
    };
    let odd = text
        .split(|&b| b == b'\n')
        .find(|line| !pg_dump_writes(line));
    if end > MOST || odd.is_some() {
        let line = String::from_utf8_lossy(odd.unwrap_or_default());
        let line: String = line.chars().take(60).collect();
        bail!(
            "{} holds `{line}` before its first table-of-contents entry, where pg_dump writes only session settings: not a dump this tool loads, nothing was changed; export the bundle again",
            sql.display()
        );
    }
    Ok(())
}

pub fn check_complete(sql: &Path, manifest: &bundle::Manifest) -> anyhow::Result<toc::Toc> {
    let file = fs::File::open(sql).with_context(|| format!("reading {}", sql.display()))?;
    let toc = toc::scan(std::io::BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", sql.display()))?;
    if !toc.complete {
        bail!(
            "{} is cut short: it does not end as a finished pg_dump ends, nothing was changed; export the bundle again",
            sql.display()
        );
    }
    check_preamble(sql, toc.header_end)?;
    if let Some((line, words)) = &toc.foreign {
        bail!(
            "{}, line {line}: a {words} statement, which acts beyond the database and which pg_dump never writes into a dump: \
             not a dump this tool loads, nothing was changed",
            sql.display()
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
    if toc.rows.contains_key("") {
        bail!(
            "{} has a COPY line that names its table in a way pg_dump does not write: not a dump this tool loads, nothing was changed",
            sql.display()
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
