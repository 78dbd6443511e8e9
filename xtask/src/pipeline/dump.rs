//! `pg_dump` of the source in a read-only session, and the stream of its output:
//! normalised, scrubbed and leak-scanned in one pass on its way to a sink.

use std::{collections::BTreeMap, process::Stdio};

use anyhow::Context as _;

use crate::{
    context::Context,
    pg::{
        self,
        sql::{literal, qualified},
        Access, DbUrl, Tool,
    },
    pipeline::{
        budget::{fitting_jobs, Sessions},
        leak_scan, load,
        scrub::{self, Action},
        snapshot::Snapshot,
    },
    plain::lines,
    process::{self, SpawnTool},
    term,
};

/// `pg_dump` of the source as plain SQL on its stdout, in a read-only session.
pub fn spawn_dump(
    cx: &Context,
    source: &DbUrl,
    patterns: &[String],
    extra: &[String],
) -> anyhow::Result<std::process::Child> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let excludes: Vec<String> = patterns
        .iter()
        .map(|p| format!("--exclude-table-data={p}"))
        .collect();
    let cmd = tools
        .cmd(sh, Tool::PgDump, source, Access::ReadOnly)?
        .args(["--format=plain", "--no-owner", "--no-privileges"])
        .args(&excludes)
        .args(extra);
    pg::tool_command(cmd, source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_tool()
        .with_context(|| format!("starting pg_dump for {source}"))
}

/// A dump of the source as it streams, and what is done to it on the way.
pub struct Dump<'a> {
    pub source: &'a DbUrl,
    /// The tables whose data is left out (`--exclude-table-data` patterns).
    pub patterns: &'a [String],
    /// The `SET` lines an older target would reject.
    pub drop_settings: Vec<&'static str>,
    pub scrub: &'a scrub::Plan,
    pub scan: Option<&'a leak_scan::Scanner>,
}

/// Streams `dump` through `sink`; fails with pg_dump's error when the dump failed. Returns
/// what `sink` returned and the rows each scrub rule touched.
pub fn with_dump<T>(
    cx: &Context,
    dump: Dump,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let Dump {
        source,
        patterns,
        drop_settings,
        scrub,
        scan,
    } = dump;
    let unread = Unread::counted(cx, source, &scrub.applied, patterns)?;
    let (mut patterns, mut extra) = (patterns.to_vec(), Vec::new());
    if let Some(unread) = &unread {
        patterns.extend(unread.patterns.iter().cloned());
        extra.push(format!("--snapshot={}", unread.snapshot.id));
    }
    let child = spawn_dump(cx, source, &patterns, &extra)?;
    let (deleted, holder) = match unread {
        Some(unread) => (unread.counts, Some(unread.snapshot)),
        None => (BTreeMap::new(), None),
    };
    let (result, mut counts) = pump_dump(
        child,
        source,
        drop_settings,
        &scrub.applied,
        scan,
        false,
        |reader| {
            sink(&mut ReleaseOnFirstByte {
                inner: reader,
                holder,
            })
        },
    )?;
    for (rule, rows) in deleted {
        *counts.entry(rule).or_default() += rows;
    }
    Ok((result, counts))
}

/// Passes a dump's output on, and ends the snapshot's holder at its first byte: pg_dump
/// writes nothing before it has taken the snapshot up, and needs the holder no longer.
struct ReleaseOnFirstByte<'a> {
    inner: &'a mut dyn std::io::Read,
    holder: Option<Snapshot>,
}

impl std::io::Read for ReleaseOnFirstByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.holder = None;
        }
        Ok(n)
    }
}

/// The tables a `delete-rows` rule empties, left out of a dump rather than read and dropped
/// row by row (a session store or a search cache can be the largest table of all). Their
/// rows are counted in a snapshot that the dump then shares, so the report counts exactly
/// the rows the dump leaves out; pg_dump still sets their sequences.
pub struct Unread {
    pub snapshot: Snapshot,
    /// `"schema"."table"` of each such table, for `--exclude-table-data`.
    pub patterns: Vec<String>,
    /// The rows each rule left out.
    pub counts: BTreeMap<String, u64>,
}

impl Unread {
    /// `None` when no rule deletes rows of a plain table, or when leaving them out could
    /// fail where the stream would not (room for one session only, no snapshot, a count
    /// that fails): the rows then go through the stream, which drops them.
    pub fn counted(
        cx: &Context,
        source: &DbUrl,
        rules: &[scrub::Rule],
        excluded: &[String],
    ) -> anyhow::Result<Option<Unread>> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let deleting: Vec<&scrub::Rule> = rules
            .iter()
            .filter(|rule| matches!(rule.action, Action::DeleteRows))
            .collect();
        if deleting.is_empty() {
            return Ok(None);
        }
        // The snapshot's holder is a second session beside pg_dump's: where the source has
        // room for one only, the rows stream as before.
        let sessions = [Sessions {
            url: source,
            per_job: 1,
            fixed: 0,
        }];
        if fitting_jobs(cx, 2, &sessions).0 < 2 {
            return Ok(None);
        }
        let names: Vec<String> = deleting.iter().map(|rule| literal(&rule.table)).collect();
        // Plain, logged tables only: a partitioned or inherited parent's children still
        // stream through the scrub, which knows the hierarchy, and a standby cannot count
        // an unlogged table (pg_dump leaves its rows out there anyway).
        let rows = tools.query(
            sh,
            source,
            Access::ReadOnly,
            &format!(
                "select coalesce(json_agg(json_build_array(n.nspname, c.relname)), '[]') \
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind = 'r' and c.relpersistence = 'p' and not c.relhassubclass \
                 and n.nspname || '.' || c.relname in ({})",
                names.join(", ")
            ),
        )?;
        let tables: Vec<(String, String)> =
            serde_json::from_str(&rows).context("reading the tables that delete-rows empties")?;
        let stream = |err: anyhow::Error| {
            term::detail(format!(
                "streaming the rows that delete-rows drops: {err:#}"
            ));
            Ok(None)
        };
        let mut snapshot = match Snapshot::export(cx, source) {
            Ok(snapshot) => snapshot,
            Err(err) => return stream(err),
        };
        let (mut patterns, mut counts) = (Vec::new(), BTreeMap::new());
        for rule in deleting {
            let mut matching = tables
                .iter()
                .filter(|(schema, name)| format!("{schema}.{name}") == rule.table);
            // `a.b.c` can name two tables (`"a.b".c` and `a."b.c"`): the stream decides then.
            let (Some((schema, name)), None) = (matching.next(), matching.next()) else {
                continue;
            };
            let pattern = qualified(schema, name);
            // Rows the user already left out are neither read nor counted, as before.
            if excluded.contains(&pattern) || patterns.contains(&pattern) {
                continue;
            }
            match snapshot.count(source, &pattern) {
                Ok(rows) => counts.insert(rule.describe(), rows),
                Err(err) => return stream(err),
            };
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Ok(None);
        }
        Ok(Some(Unread {
            snapshot,
            patterns,
            counts,
        }))
    }
}

/// Streams a running pg_dump's output, normalised and scrubbed, through `sink`; then checks
/// that pg_dump succeeded. Returns `sink`'s result and the rows each scrub rule changed.
pub fn pump_dump<T>(
    mut child: std::process::Child,
    source: &DbUrl,
    drop_settings: Vec<&'static str>,
    rules: &[scrub::Rule],
    scan: Option<&leak_scan::Scanner>,
    mark_loaded: bool,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let stderr = process::collect_stderr(child.stderr.take().unwrap());
    let output = child.stdout.take().unwrap();
    let output: Box<dyn std::io::Read + '_> = match scan {
        Some(scan) => Box::new(scan.reader(output)),
        None => Box::new(output),
    };
    // One pass over the lines for everything done to them: every pass is a copy.
    let mut normalise = lines::normaliser(drop_settings);
    let (mut scrub, counts) = scrub::scrubber(rules);
    let mut mark = mark_loaded.then(load::loaded_marker);
    let mut reader = lines::edit_lines(output, move |line| {
        let mut next = normalise(line);
        if !line.is_empty() {
            next = next.and(scrub(line));
            if let Some(mark) = mark.as_mut() {
                next = next.and(mark(line));
            }
        }
        next
    });
    let result = sink(&mut reader);
    drop(reader);
    let status = match (&result, child.try_wait()?) {
        (_, Some(status)) => status,
        (Ok(_), None) => child.wait()?,
        (Err(_), None) => {
            let _ = child.kill();
            child.wait()?
        }
    };
    let stderr = stderr.join().unwrap_or_default();
    if !status.success()
        && (result.is_ok() || !stderr.contains("Broken pipe"))
        && !process::interrupted()
    {
        return Err(pg::explain_failure(source, &stderr))
            .context(format!("pg_dump of {source} failed"));
    }
    let counts = counts.borrow().clone();
    Ok((result?, counts))
}

/// A reader that counts the bytes it passes and stops at an interrupt.
pub struct ProgressReader<'a, R: ?Sized> {
    pub inner: &'a mut R,
    pub on_bytes: &'a dyn Fn(u64),
}

impl<R: std::io::Read + ?Sized> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        process::check_interrupted()
            // Not `ErrorKind::Interrupted`: `io::copy` retries that kind for ever.
            .map_err(|_| std::io::Error::other("interrupted"))?;
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
