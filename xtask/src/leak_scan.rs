//! Leak scan: the text and JSON columns no scrub rule covers, searched for credential-shaped
//! values after every load and export. Findings name a column and a row count, never a value.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Read,
    sync::{LazyLock, Mutex},
};

use anyhow::{bail, Context};
use serde::Deserialize;
use xshell::Shell;

use crate::{
    bundle::{self, Leak},
    db_url::DbUrl,
    dump, parallel,
    pg_tools::{Access, PgTools},
    restore, scrub, term,
};

/// Set to `1` to skip the scan: for benchmarks that measure its cost, never for real runs.
pub const SKIP_VAR: &str = "NETPOINT_SKIP_LEAK_SCAN";

/// Credential shapes as PostgreSQL regular expressions (ARE), matched case-insensitively.
const SHAPES: &[&str] = &[
    // URL user information with a password: scheme://user:pass@host
    r"[a-z][a-z0-9+.-]*://[^/[:space:]:@]+:[^/[:space:]@]+@",
    // Authorization: Basic dXNlcjpwYXNz, "Authorization": "token abc..."
    r#"\mauthorization["']?[[:space:]]*[:=][[:space:]]*["']?([a-z]+[[:space:]]+)?[a-z0-9._~+/=-]{8,}"#,
    r"\mbearer[[:space:]]+[a-z0-9._~+/=-]{8,}",
    // password=..., secret: ..., "api_key": "..." (a JSON null is no secret)
    r#"(passw(or)?d|secret|token|api[_-]?key|access[_-]?key)["']?[[:space:]]*[:=][[:space:]]*["']?(?!null\M)[^[:space:]"',;&}]{3,}"#,
    r"-----begin [a-z ]*private key-----",
    // GitHub, GitLab, Slack, AWS, Stripe, Google, npm
    r"\m(gh[pousr]_[a-z0-9]{30,}|github_pat_[a-z0-9_]{20,}|glpat-[a-z0-9_-]{20,}|xox[baprs]-[a-z0-9-]{10,}|akia[0-9a-z]{16}\M|[sr]k_live_[a-z0-9]{16,}|aiza[0-9a-z_-]{35}|npm_[a-z0-9]{36})",
];

/// The one pattern every scanned value is matched against.
fn pattern() -> String {
    SHAPES
        .iter()
        .map(|shape| format!("({shape})"))
        .collect::<Vec<_>>()
        .join("|")
}

/// Words one of which every shape holds, as `like` patterns on the row's text with ASCII
/// lower-cased (collation "C"): a cheap test that lets only the few rows holding one through
/// to the regular expression.
const WORDS: &[&str] = &[
    "%://%",
    "%authoriz%",
    "%bearer%",
    "%passw%",
    "%secret%",
    "%token%",
    "%key%",
    "%gh_\\_%",
    "%github\\_pat\\_%",
    "%glpat-%",
    "%xox%",
    "%akia%",
    "%k\\_live\\_%",
    "%aiza%",
    "%npm\\_%",
];

/// Text, character, JSON types and arrays of them (a domain counts as its base type).
const CATALOG: &str =
    "select coalesce(json_agg(json_build_object('schema', n.nspname, 'table', c.relname, \
     'column', a.attname, 'pages', c.relpages, 'kind', case \
     when e.oid = 'jsonb'::regtype then 'jsonb[]' when e.oid is not null then 'array' \
     when coalesce(nullif(t.typbasetype, 0), t.oid) = 'jsonb'::regtype then 'jsonb' else 'text' end) \
     order by n.nspname, c.relname, a.attnum), '[]') \
     from pg_class c join pg_namespace n on n.oid = c.relnamespace \
     join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
     join pg_type t on t.oid = a.atttypid \
     left join pg_type e on e.oid = t.typelem and t.typcategory = 'A' \
     where c.relkind = 'r' and n.nspname <> 'information_schema' and n.nspname !~ '^pg_' \
     and coalesce(e.oid, nullif(t.typbasetype, 0), t.oid) in \
     ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'json'::regtype, 'jsonb'::regtype)";

/// What the scan leaves out: columns scrub rules rewrite, tables a rule empties, and tables
/// whose data is not copied.
#[derive(Debug, Default)]
pub struct Covered {
    columns: BTreeSet<(String, String)>,
    tables: BTreeSet<String>,
}

impl Covered {
    /// `rules` as a scrub plan applies them; `excluded` tables are `schema.table`.
    pub fn by_rules(rules: &[scrub::Rule], excluded: &[String]) -> Covered {
        let mut covered = Covered {
            tables: excluded.iter().cloned().collect(),
            ..Covered::default()
        };
        for rule in rules {
            match &rule.column {
                Some(column) => covered.columns.insert((rule.table.clone(), column.clone())),
                None => covered.tables.insert(rule.table.clone()),
            };
        }
        covered
    }

    /// The rules and exclusions a bundle's manifest records (`schema.table.column: action`).
    pub fn by_manifest(manifest: &bundle::Manifest) -> Covered {
        let mut covered = Covered {
            tables: manifest.excluded_table_data.iter().cloned().collect(),
            ..Covered::default()
        };
        let rules = manifest.scrub.iter().flat_map(|record| &record.rules);
        for rule in rules {
            let text = match rule {
                bundle::ScrubbedRule::Counted { rule, .. } => rule,
                bundle::ScrubbedRule::Named(rule) => rule,
            };
            let Some((name, action)) = text.rsplit_once(": ") else {
                continue;
            };
            match (action, name.rsplit_once('.')) {
                ("delete-rows", _) => covered.tables.insert(name.to_string()),
                (_, Some((table, column))) => covered
                    .columns
                    .insert((table.to_string(), column.to_string())),
                (_, None) => false,
            };
        }
        covered
    }
}

/// One table's columns to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
    pub pages: i64,
}

/// The columns a catalog answer lists, less those `covered`, grouped by table.
fn uncovered(columns: Vec<CatalogColumn>, covered: &Covered) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    for column in columns {
        let table = format!("{}.{}", column.schema, column.table);
        if covered.tables.contains(&table)
            || covered.columns.contains(&(table, column.column.clone()))
        {
            continue;
        }
        match tables.last_mut() {
            Some(last) if last.schema == column.schema && last.name == column.table => {
                last.columns.push(column.column)
            }
            _ => tables.push(Table {
                schema: column.schema,
                name: column.table,
                columns: vec![column.column],
                pages: column.pages,
            }),
        }
    }
    tables
}

/// Tables dealt into `n` groups of about equal size, largest first, so that `n` sessions
/// finish together.
fn groups(mut tables: Vec<Table>, n: usize) -> Vec<Vec<Table>> {
    let n = n.clamp(1, tables.len().max(1));
    tables.sort_by(|a, b| b.pages.cmp(&a.pages).then_with(|| a.name.cmp(&b.name)));
    let mut groups: Vec<(i64, Vec<Table>)> = vec![(0, Vec::new()); n];
    for table in tables {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(pages, _)| *pages)
            .expect("one group at least");
        lightest.0 += table.pages.max(1);
        lightest.1.push(table);
    }
    groups
        .into_iter()
        .map(|(_, tables)| tables)
        .filter(|tables| !tables.is_empty())
        .collect()
}

/// One query over `tables`, one sequential scan each, answering
/// `[[table index, matching rows of each column...], ...]` as JSON.
pub fn group_sql(tables: &[Table]) -> String {
    let pattern = restore::literal(&pattern());
    let words: Vec<String> = WORDS.iter().map(|w| restore::literal(w)).collect();
    let words = format!("array[{}]", words.join(", "));
    let selects: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(n, table)| {
            let counts: Vec<String> = table
                .columns
                .iter()
                .map(|column| {
                    format!(
                        "count(*) filter (where {}::text ~* {pattern})",
                        restore::ident(column)
                    )
                })
                .collect();
            let text: Vec<String> = table
                .columns
                .iter()
                .map(|column| format!("{}::text collate \"C\"", restore::ident(column)))
                .collect();
            format!(
                "(select json_build_array({n}, {}) as j from {}.{} where lower(concat_ws(' ', {})) like any ({words}))",
                counts.join(", "),
                restore::ident(&table.schema),
                restore::ident(&table.name),
                text.join(", ")
            )
        })
        .collect();
    format!(
        "select coalesce(json_agg(r.j), '[]') from ({}) r",
        selects.join(" union all ")
    )
}

#[derive(Debug, Deserialize)]
struct CatalogColumn {
    schema: String,
    table: String,
    column: String,
    pages: i64,
    #[serde(default)]
    kind: String,
}

/// What a scan found, and over how many columns.
#[derive(Debug, Default)]
pub struct Report {
    /// By `schema.table.column`, in name order.
    pub findings: Vec<Leak>,
    pub columns: usize,
    /// How long a scan of its own took; `None` for a scan of the rows as they streamed.
    pub elapsed: Option<std::time::Duration>,
}

/// Scans `url`'s uncovered columns in read-only sessions, up to `--jobs` side by side. `None`
/// when the scan is turned off for a benchmark.
pub fn scan(
    sh: &Shell,
    tools: &PgTools,
    url: &DbUrl,
    covered: &Covered,
) -> anyhow::Result<Option<Report>> {
    if skipped() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let answer = tools.query(sh, url, Access::ReadOnly, CATALOG)?;
    let columns: Vec<CatalogColumn> = serde_json::from_str(&answer)
        .with_context(|| format!("unexpected answer from {url} about its text columns"))?;
    let tables = uncovered(columns, covered);
    let total = tables.iter().map(|t| t.columns.len()).sum();
    // As many sessions as the server, the role and the database still accept.
    let (sessions, _) = parallel::fitting_jobs(
        sh,
        tools,
        &[parallel::Sessions {
            url,
            per_job: 1,
            fixed: 0,
        }],
    );
    let groups = groups(tables, sessions.max(1));
    let answers: Vec<anyhow::Result<String>> = std::thread::scope(|scope| {
        let running: Vec<_> = groups
            .iter()
            .map(|group| {
                let sh = sh.clone();
                scope.spawn(move || tools.query(&sh, url, Access::ReadOnly, &group_sql(group)))
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut findings = Vec::new();
    for (group, answer) in groups.iter().zip(answers) {
        let answer = answer.with_context(|| format!("leak scan of {url}"))?;
        let rows: Vec<Vec<u64>> = serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {url} to the leak scan"))?;
        for row in rows {
            let Some((&n, counts)) = row.split_first() else {
                continue;
            };
            let table = usize::try_from(n)
                .ok()
                .and_then(|n| group.get(n))
                .with_context(|| format!("unexpected answer from {url} to the leak scan"))?;
            for (column, &rows) in table.columns.iter().zip(counts) {
                if rows > 0 {
                    findings.push(Leak {
                        column: format!("{}.{}.{column}", table.schema, table.name),
                        rows,
                    });
                }
            }
        }
    }
    findings.sort_by(|a, b| a.column.cmp(&b.column));
    Ok(Some(Report {
        findings,
        columns: total,
        elapsed: Some(started.elapsed()),
    }))
}

/// Warns of each finding; with `strict`, fails in one line instead, saying what stays as it
/// was (`untouched`) and what to do.
pub fn check(report: Option<&Report>, strict: bool, untouched: &str) -> anyhow::Result<()> {
    let Some(report) = report.filter(|r| !r.findings.is_empty()) else {
        return Ok(());
    };
    if strict {
        bail!(
            "leak scan (--strict): credential-shaped values in {} that no scrub rule covers; {untouched}: \
             add scrub rules for these columns with --scrub-rules FILE, or drop --strict",
            listed(&report.findings)
        );
    }
    for leak in &report.findings {
        term::warn(format!(
            "leak scan: {}: {} with credential-shaped values that no scrub rule covers \
             (add a rule with --scrub-rules FILE)",
            leak.column,
            rows(leak.rows)
        ));
    }
    Ok(())
}

/// What the closing summary says of the scan.
pub fn summary(report: Option<&Report>) -> String {
    match report {
        None => "leak scan skipped".to_string(),
        Some(report) if report.findings.is_empty() => format!(
            "leak scan: nothing found in {} unscrubbed text columns ({})",
            report.columns,
            how_long(report)
        ),
        Some(report) => format!(
            "leak scan: credential-shaped values in {} ({})",
            listed(&report.findings),
            how_long(report)
        ),
    }
}

fn how_long(report: &Report) -> String {
    match report.elapsed {
        Some(elapsed) => term::human_duration(elapsed),
        None => "scanned as the rows streamed".to_string(),
    }
}

fn listed(findings: &[Leak]) -> String {
    findings
        .iter()
        .map(|leak| format!("{} ({})", leak.column, rows(leak.rows)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows(n: u64) -> String {
    match n {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    }
}

/// Words one of which every shape holds, matched ASCII case-insensitively on the raw stream:
/// a cheap test that lets only the few rows holding one through to the regular expressions.
const STREAM_WORDS: &[&str] = &[
    "://",
    "authoriz",
    "bearer",
    "passw",
    "secret",
    "token",
    "key",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "akia",
    "k_live_",
    "aiza",
    "npm_",
];

/// The shapes of [`SHAPES`] for values read as they stream past, bytes in any ASCII-based
/// encoding. The `password=` pair is separate: a JSON `null` is no secret, which PostgreSQL
/// says with a look-ahead and Rust by looking at the value it captured.
struct Shapes {
    words: aho_corasick::AhoCorasick,
    plain: regex::bytes::Regex,
    pair: regex::bytes::Regex,
}

static STREAM_SHAPES: LazyLock<Shapes> = LazyLock::new(|| {
    Shapes {
    words: aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(STREAM_WORDS)
        .expect("leak scan words"),
    plain: regex::bytes::Regex::new(concat!(
        r"(?i-u)",
        r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",
        r#"|\bauthorization["']?\s*[:=]\s*["']?([a-z]+\s+)?[a-z0-9._~+/=-]{8,}"#,
        r"|\bbearer\s+[a-z0-9._~+/=-]{8,}",
        r"|-----begin [a-z ]*private key-----",
        r"|\b(gh[pousr]_[a-z0-9]{30,}|github_pat_[a-z0-9_]{20,}|glpat-[a-z0-9_-]{20,}",
        r"|xox[baprs]-[a-z0-9-]{10,}|akia[0-9a-z]{16}\b|[sr]k_live_[a-z0-9]{16,}",
        r"|aiza[0-9a-z_-]{35}|npm_[a-z0-9]{36})",
    ))
    .expect("leak scan shapes"),
    pair: regex::bytes::Regex::new(
        r#"(?i-u)(passw(or)?d|secret|token|api[_-]?key|access[_-]?key)["']?\s*[:=]\s*["']?([^\s"',;&}]{3,})"#,
    )
    .expect("leak scan pair shape"),
}
});

impl Shapes {
    fn worded(&self, value: &[u8]) -> bool {
        self.words.is_match(value)
    }

    fn matched(&self, value: &[u8]) -> bool {
        if self.plain.is_match(value) {
            return true;
        }
        self.pair.captures_iter(value).any(|caps| {
            let value = &caps[3];
            let null = value.len() >= 4
                && value[..4].eq_ignore_ascii_case(b"null")
                && value
                    .get(4)
                    .is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'_'));
            !null
        })
    }
}

/// How a column's values look in a binary `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// A version byte, then the text.
    Jsonb,
    /// PostgreSQL's binary array: a header, then each element with its length.
    Array {
        jsonb: bool,
    },
}

/// The uncovered columns of one table, with where its findings are counted.
#[derive(Debug)]
struct Scanned {
    name: String,
    columns: Vec<(String, Kind)>,
}

/// A leak scan done on the rows as they stream through xtask (dumps and straight copies),
/// so no extra pass over the data is made. One per run; each stream gets its own
/// [`Scanner::reader`] or [`Scanner::copy`], which add their counts here as they finish.
pub struct Scanner {
    tables: HashMap<String, Scanned>,
    columns: usize,
    found: Mutex<BTreeMap<String, u64>>,
}

impl Scanner {
    /// Reads `url`'s text and JSON columns and keeps those `covered` leaves to scan. `None`
    /// when the scan is turned off for a benchmark.
    pub fn start(
        sh: &Shell,
        tools: &PgTools,
        url: &DbUrl,
        covered: &Covered,
    ) -> anyhow::Result<Option<Scanner>> {
        if skipped() {
            return Ok(None);
        }
        let answer = tools.query(sh, url, Access::ReadOnly, CATALOG)?;
        let columns: Vec<CatalogColumn> = serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {url} about its text columns"))?;
        Ok(Some(Scanner::of(columns, covered)))
    }

    fn of(columns: Vec<CatalogColumn>, covered: &Covered) -> Scanner {
        let kinds: HashMap<(String, String, String), Kind> = columns
            .iter()
            .map(|c| {
                let kind = match c.kind.as_str() {
                    "jsonb" => Kind::Jsonb,
                    "array" => Kind::Array { jsonb: false },
                    "jsonb[]" => Kind::Array { jsonb: true },
                    _ => Kind::Text,
                };
                ((c.schema.clone(), c.table.clone(), c.column.clone()), kind)
            })
            .collect();
        let mut tables = HashMap::new();
        let mut total = 0;
        for table in uncovered(columns, covered) {
            let name = format!("{}.{}", table.schema, table.name);
            total += table.columns.len();
            let columns = table
                .columns
                .iter()
                .map(|column| {
                    let key = (table.schema.clone(), table.name.clone(), column.clone());
                    (column.clone(), kinds[&key])
                })
                .collect();
            tables.insert(name.clone(), Scanned { name, columns });
        }
        Scanner {
            tables,
            columns: total,
            found: Mutex::default(),
        }
    }

    /// Passes a dump (plain SQL as pg_dump writes it) through unchanged, scanning the rows
    /// of every `COPY` block of a table with uncovered columns.
    pub fn reader<R: Read>(&self, inner: R) -> ScanningReader<'_, R> {
        ScanningReader {
            inner,
            rows: RowScan::new(self, None),
        }
    }

    /// A scan of one table's `COPY ... TO STDOUT` output, `columns` in the order copied:
    /// `None` when the table has nothing to scan.
    pub fn copy(&self, table: &str, columns: &[String], binary: bool) -> Option<CopyScan<'_>> {
        let scanned = self.tables.get(table)?;
        let targets = targets(scanned, columns);
        if targets.is_empty() {
            return None;
        }
        Some(match binary {
            true => CopyScan::Binary(BinaryScan {
                scanner: self,
                table: scanned,
                targets,
                buf: Vec::new(),
                header: false,
                counts: vec![0; scanned.columns.len()],
            }),
            false => CopyScan::Text(RowScan::new(self, Some((scanned, targets)))),
        })
    }

    /// Scans a whole dump held in memory.
    pub fn scan_bytes(&self, dump: &[u8]) {
        let mut rows = RowScan::new(self, None);
        rows.feed(dump);
        rows.finish();
    }

    fn add(&self, table: &Scanned, counts: &[u64]) {
        let mut found = self.found.lock().unwrap();
        for ((column, _), &n) in table.columns.iter().zip(counts) {
            if n > 0 {
                *found.entry(format!("{}.{column}", table.name)).or_default() += n;
            }
        }
    }

    /// What the streams found, once they have all finished.
    pub fn report(self) -> Report {
        let findings = self
            .found
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|(column, rows)| Leak { column, rows })
            .collect();
        Report {
            findings,
            columns: self.columns,
            elapsed: None,
        }
    }
}

/// A column to scan: its position in a copy's rows and in its [`Scanned`] table.
#[derive(Debug, Clone, Copy)]
struct Target {
    field: usize,
    slot: usize,
    kind: Kind,
}

/// For each of `scanned`'s columns that a copy holds, its position in the copy and in
/// `scanned`.
fn targets(scanned: &Scanned, columns: &[String]) -> Vec<Target> {
    columns
        .iter()
        .enumerate()
        .filter_map(|(at, name)| {
            let (slot, (_, kind)) = scanned
                .columns
                .iter()
                .enumerate()
                .find(|(_, (column, _))| column == name)?;
            Some(Target {
                field: at,
                slot,
                kind: *kind,
            })
        })
        .collect()
}

fn skipped() -> bool {
    let skip = std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1");
    if skip {
        term::warn(format!("leak scan skipped ({SKIP_VAR}=1)"));
    }
    skip
}

/// A reader that hands its input on unchanged while a [`RowScan`] looks at it.
pub struct ScanningReader<'a, R> {
    inner: R,
    rows: RowScan<'a>,
}

impl<R: Read> Read for ScanningReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match n {
            0 => self.rows.finish(),
            n => self.rows.feed(&buf[..n]),
        }
        Ok(n)
    }
}

/// Text-format `COPY` rows, found in a dump by their `COPY` lines or given as one table's
/// copy: lines are kept only until whole, and only rows holding a word are split.
pub struct RowScan<'a> {
    scanner: &'a Scanner,
    buf: Vec<u8>,
    /// The block being read: its table, the columns to scan and the rows found in each.
    block: Option<Block<'a>>,
    /// Inside a `COPY` block of a table with nothing to scan.
    passing: bool,
}

struct Block<'a> {
    table: &'a Scanned,
    targets: Vec<Target>,
    counts: Vec<u64>,
}

const END_OF_COPY: &[u8] = b"\\.\n";

impl<'a> RowScan<'a> {
    fn new(scanner: &'a Scanner, copy: Option<(&'a Scanned, Vec<Target>)>) -> Self {
        RowScan {
            scanner,
            buf: Vec::new(),
            block: copy.map(|(table, targets)| Block {
                counts: vec![0; table.columns.len()],
                table,
                targets,
            }),
            passing: false,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if self.block.is_some() || self.passing {
                if rest.starts_with(END_OF_COPY) {
                    self.end_block();
                    at += END_OF_COPY.len();
                    continue;
                }
                let Some(last) = memchr::memrchr(b'\n', rest) else {
                    break;
                };
                let (rows, ended) = match memchr::memmem::find(&rest[..=last], b"\n\\.\n") {
                    Some(end) => (end + 1, true),
                    None => (last + 1, false),
                };
                if let Some(block) = self.block.as_mut() {
                    block.scan(&rest[..rows]);
                }
                at += rows;
                if !ended {
                    break;
                }
            } else {
                let Some(end) = memchr::memchr(b'\n', rest) else {
                    break;
                };
                let line = &rest[..=end];
                if dump::is_copy_start(line) {
                    let block = Block::of(self.scanner, line);
                    self.passing = block.is_none();
                    self.block = block;
                }
                at += end + 1;
            }
        }
        self.buf.drain(..at);
    }

    fn end_block(&mut self) {
        if let Some(block) = self.block.take() {
            self.scanner.add(block.table, &block.counts);
        }
        self.passing = false;
    }

    /// The end of the stream: a last row without its newline, and the block it is in.
    pub fn finish(&mut self) {
        if !self.buf.is_empty() && !self.buf.ends_with(b"\n") {
            self.buf.push(b'\n');
            self.feed(&[]);
        }
        self.end_block();
        self.buf.clear();
    }
}

impl<'a> Block<'a> {
    /// The block a `COPY` line starts, when its table has columns to scan.
    fn of(scanner: &'a Scanner, line: &[u8]) -> Option<Block<'a>> {
        let (table, columns) = scrub::copy_header(line)?;
        let table = scanner.tables.get(&table)?;
        let targets = targets(table, &columns);
        (!targets.is_empty()).then(|| Block {
            counts: vec![0; table.columns.len()],
            table,
            targets,
        })
    }

    /// Whole rows, each ending in `\n`.
    fn scan(&mut self, rows: &[u8]) {
        let shapes = &*STREAM_SHAPES;
        let mut at = 0;
        while let Some(hit) = shapes
            .words
            .find(aho_corasick::Input::new(rows).range(at..))
        {
            let start = memchr::memrchr(b'\n', &rows[..hit.start()]).map_or(0, |n| n + 1);
            let end =
                memchr::memchr(b'\n', &rows[hit.start()..]).map_or(rows.len(), |n| hit.start() + n);
            self.row(&rows[start..end]);
            at = end;
        }
    }

    fn row(&mut self, row: &[u8]) {
        let shapes = &*STREAM_SHAPES;
        let mut fields = row.split(|&b| b == b'\t').enumerate();
        for &Target {
            field: at, slot, ..
        } in &self.targets
        {
            let Some(field) = fields.find_map(|(n, field)| (n == at).then_some(field)) else {
                break;
            };
            if field != b"\\N" && shapes.worded(field) && shapes.matched(&unescape(field)) {
                self.counts[slot] += 1;
            }
        }
    }
}

/// COPY text format → the value's bytes.
fn unescape(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return field.into();
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'v') => out.push(11),
            Some(d @ b'0'..=b'7') => {
                let mut n = u32::from(d - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(n as u8);
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out.into()
}

/// The scan of one table's straight copy, in the copy's format.
pub enum CopyScan<'a> {
    Text(RowScan<'a>),
    Binary(BinaryScan<'a>),
}

impl CopyScan<'_> {
    pub fn feed(&mut self, data: &[u8]) {
        match self {
            CopyScan::Text(rows) => rows.feed(data),
            CopyScan::Binary(binary) => binary.feed(data),
        }
    }

    pub fn finish(&mut self) {
        match self {
            CopyScan::Text(rows) => rows.finish(),
            CopyScan::Binary(binary) => binary.finish(),
        }
    }
}

/// PostgreSQL's binary `COPY` format: a header, then tuples of length-prefixed fields.
pub struct BinaryScan<'a> {
    scanner: &'a Scanner,
    table: &'a Scanned,
    targets: Vec<Target>,
    buf: Vec<u8>,
    header: bool,
    counts: Vec<u64>,
}

const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl BinaryScan<'_> {
    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        if !self.header {
            let fixed = BINARY_SIGNATURE.len() + 8;
            let Some(extension) = be_i32(&self.buf, fixed - 4) else {
                return;
            };
            let end = fixed + extension.max(0) as usize;
            if self.buf.len() < end {
                return;
            }
            self.header = true;
            at = end;
        }
        while let Some(end) = self.tuple(at) {
            at = end;
        }
        self.buf.drain(..at);
    }

    /// Scans the tuple at `at` when it is whole, returning where the next one starts.
    fn tuple(&mut self, at: usize) -> Option<usize> {
        let buf = &self.buf;
        let fields = i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?);
        if fields < 0 {
            return None;
        }
        // First the tuple's end: a tuple is counted once, when it is whole.
        let mut end = at + 2;
        for _ in 0..fields {
            end += 4 + be_i32(buf, end)?.max(0) as usize;
        }
        if buf.len() < end {
            return None;
        }
        let shapes = &*STREAM_SHAPES;
        let mut pos = at + 2;
        let mut targets = self.targets.iter().peekable();
        for n in 0..fields as usize {
            let len = be_i32(buf, pos)?;
            pos += 4;
            let Some(&&Target { field, slot, kind }) = targets.peek() else {
                break;
            };
            if field != n {
                pos += len.max(0) as usize;
                continue;
            }
            targets.next();
            if len < 0 {
                continue;
            }
            let value = &buf[pos..pos + len as usize];
            pos += len as usize;
            let hit = match kind {
                Kind::Text => shapes.worded(value) && shapes.matched(value),
                Kind::Jsonb => {
                    let text = value.get(1..).unwrap_or_default();
                    shapes.worded(text) && shapes.matched(text)
                }
                Kind::Array { jsonb } => {
                    shapes.worded(value)
                        && array_elements(value)
                            .into_iter()
                            .map(|e| {
                                if jsonb {
                                    e.get(1..).unwrap_or_default()
                                } else {
                                    e
                                }
                            })
                            .any(|e| shapes.matched(e))
                }
            };
            if hit {
                self.counts[slot] += 1;
            }
        }
        Some(end)
    }

    fn finish(&mut self) {
        self.scanner.add(self.table, &self.counts);
        self.counts.iter_mut().for_each(|n| *n = 0);
        self.buf.clear();
    }
}

/// The elements of a binary array value, NULLs left out.
fn array_elements(value: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    let Some(dims) = be_i32(value, 0) else {
        return elements;
    };
    let mut count: usize = 1;
    let mut pos = 12;
    for _ in 0..dims.max(0) {
        let Some(size) = be_i32(value, pos) else {
            return elements;
        };
        count = count.saturating_mul(size.max(0) as usize);
        pos += 8;
    }
    for _ in 0..if dims > 0 { count } else { 0 } {
        let Some(len) = be_i32(value, pos) else {
            break;
        };
        pos += 4;
        if len < 0 {
            continue;
        }
        let Some(element) = value.get(pos..pos + len as usize) else {
            break;
        };
        elements.push(element);
        pos += len as usize;
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(schema: &str, table: &str, column: &str, pages: i64) -> CatalogColumn {
        CatalogColumn {
            schema: schema.into(),
            table: table.into(),
            column: column.into(),
            pages,
            kind: "text".into(),
        }
    }

    fn table(name: &str, columns: &[&str], pages: i64) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            pages,
        }
    }

    #[test]
    fn covered_columns_and_tables_are_left_out() {
        let rules = scrub::preset_in("public");
        let covered = Covered::by_rules(&rules, &["public.extras_objectchange".to_string()]);
        let tables = uncovered(
            vec![
                column("public", "dcim_site", "comments", 3),
                column("public", "dcim_site", "name", 3),
                column("public", "django_session", "session_data", 9),
                column("public", "extras_objectchange", "object_repr", 99),
                column("public", "extras_webhook", "name", 1),
                column("public", "extras_webhook", "secret", 1),
                column("public", "extras_webhook", "additional_headers", 1),
            ],
            &covered,
        );
        assert_eq!(
            tables,
            vec![
                table("dcim_site", &["comments", "name"], 3),
                table("extras_webhook", &["name"], 1),
            ]
        );
    }

    #[test]
    fn a_manifest_covers_what_its_rules_name() {
        let manifest: bundle::Manifest = serde_json::from_str(
            r#"{"format": 2, "tool": {"name": "t"}, "source": {"server_major": 15, "encoding": "UTF8"},
                "excluded_table_data": ["public.extras_objectchange"], "entries": 0, "rows": {},
                "scrub": {"rules": [{"rule": "public.users_user.email: fake-email", "rows": 3},
                                    "public.django_session: delete-rows"], "skipped": []}}"#,
        )
        .unwrap();
        let covered = Covered::by_manifest(&manifest);
        assert!(covered
            .columns
            .contains(&("public.users_user".into(), "email".into())));
        assert!(covered.tables.contains("public.django_session"));
        assert!(covered.tables.contains("public.extras_objectchange"));
        assert_eq!(covered.columns.len(), 1);
    }

    #[test]
    fn groups_balance_by_size_and_keep_every_table() {
        let tables = vec![
            table("a", &["x"], 100),
            table("b", &["x"], 60),
            table("c", &["x"], 50),
            table("d", &["x"], 10),
        ];
        let groups = groups(tables.clone(), 2);
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|t| t.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "d"], vec!["b", "c"]]);
        assert_eq!(super::groups(tables.clone(), 16).len(), 4);
        assert_eq!(super::groups(tables, 1).len(), 1);
        assert!(super::groups(Vec::new(), 4).is_empty());
    }

    #[test]
    fn sql_scans_each_table_once_with_every_column_quoted() {
        let sql = group_sql(&[
            table("dcim_site", &["comments", "we\"ird"], 1),
            Table {
                schema: "Odd Schema".into(),
                ..table("t", &["c"], 1)
            },
        ]);
        assert!(sql.starts_with("select coalesce(json_agg(r.j), '[]') from ("));
        assert_eq!(sql.matches(" from \"").count(), 2, "{sql}");
        assert!(sql.contains(
            "(select json_build_array(0, count(*) filter (where \"comments\"::text ~* '"
        ));
        assert!(sql.contains("count(*) filter (where \"we\"\"ird\"::text ~* '"));
        assert!(sql.contains("'%npm\\_%'])) union all (select json_build_array(1, "));
        assert!(sql.contains(
            " from \"public\".\"dcim_site\" where lower(concat_ws(' ', \"comments\"::text collate \"C\", \"we\"\"ird\"::text collate \"C\")) like any (array['%://%', "
        ));
        assert!(sql.ends_with(" from \"Odd Schema\".\"t\" where lower(concat_ws(' ', \"c\"::text collate \"C\")) like any (array['%://%', '%authoriz%', '%bearer%', '%passw%', '%secret%', '%token%', '%key%', '%gh_\\_%', '%github\\_pat\\_%', '%glpat-%', '%xox%', '%akia%', '%k\\_live\\_%', '%aiza%', '%npm\\_%']))) r"), "{sql}");
        assert_eq!(sql.matches("~*").count(), 3);
    }

    #[test]
    fn the_pattern_is_one_quoted_literal() {
        let literal = restore::literal(&pattern());
        let inner = &literal[1..literal.len() - 1];
        assert!(!inner.replace("''", "").contains('\''), "quotes doubled");
        assert_eq!(pattern().matches("|(").count(), SHAPES.len() - 1);
    }

    /// The `like` pre-test must let every credential through to the regular expression.
    #[test]
    fn every_shape_holds_a_word() {
        let like = |pattern: &str| {
            let mut re = String::from("^");
            let mut chars = pattern.chars();
            while let Some(c) = chars.next() {
                match c {
                    '%' => re.push_str(".*"),
                    '_' => re.push('.'),
                    '\\' => re.push_str(&regex::escape(&chars.next().unwrap().to_string())),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            regex::Regex::new(&format!("{re}$")).unwrap()
        };
        let words: Vec<regex::Regex> = WORDS.iter().map(|w| like(w)).collect();
        for credential in [
            "https://admin:hunter2@example.com",
            "Authorization: Basic dXNlcjpwYXNz",
            "Bearer abcdefgh1234",
            "PASSWD=s3cret",
            "{\"client_secret\": \"abc\"}",
            "X-Token: t0k3n",
            "{\"API-Key\": \"abc\"}",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_abcdefghijklmnopqrstuvwxyz",
            "glpat-abcdefghij0123456789",
            "xoxp-1234567890-abc",
            "AKIAIOSFODNN7EXAMPLE",
            "rk_live_abcdefghijklmnop",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789",
        ] {
            let lower = credential.to_lowercase();
            assert!(words.iter().any(|w| w.is_match(&lower)), "{credential}");
        }
        assert!(!words.iter().any(|w| w.is_match("ge-0/0/1 uplink to core")));
    }

    #[test]
    fn reports_name_columns_and_counts() {
        let report = Report {
            findings: vec![
                Leak {
                    column: "public.dcim_site.comments".into(),
                    rows: 1,
                },
                Leak {
                    column: "public.dcim_device.comments".into(),
                    rows: 4,
                },
            ],
            columns: 9,
            elapsed: Some(std::time::Duration::ZERO),
        };
        let err = check(Some(&report), true, "the target is untouched")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("public.dcim_site.comments (1 row), public.dcim_device.comments (4 rows)")
                && err.contains("--scrub-rules")
                && err.contains("drop --strict")
                && !err.contains('\n'),
            "{err}"
        );
        check(Some(&report), false, "").unwrap();
        check(Some(&Report::default()), true, "").unwrap();
        assert_eq!(
            summary(Some(&Report::default())),
            "leak scan: nothing found in 0 unscrubbed text columns (scanned as the rows streamed)"
        );
        let timed = Report {
            elapsed: Some(std::time::Duration::ZERO),
            ..Report::default()
        };
        assert_eq!(
            summary(Some(&timed)),
            "leak scan: nothing found in 0 unscrubbed text columns (0.0s)"
        );
    }

    fn scanner() -> Scanner {
        let columns = vec![
            column("public", "t", "note", 1),
            CatalogColumn {
                kind: "jsonb".into(),
                ..column("public", "t", "data", 1)
            },
            CatalogColumn {
                kind: "array".into(),
                ..column("public", "t", "tags", 1)
            },
            column("public", "t", "secret", 1),
        ];
        let rules = vec![scrub::Rule {
            table: "public.t".into(),
            column: Some("secret".into()),
            action: scrub::Action::Empty,
        }];
        Scanner::of(columns, &Covered::by_rules(&rules, &[]))
    }

    fn found(scanner: Scanner) -> Vec<(String, u64)> {
        let report = scanner.report();
        assert_eq!(report.columns, 3);
        report
            .findings
            .into_iter()
            .map(|l| (l.column, l.rows))
            .collect()
    }

    #[test]
    fn stream_shapes_match_credentials_and_leave_the_rest() {
        let shapes = &*STREAM_SHAPES;
        for credential in [
            "https://admin:hunter2@example.com",
            "Authorization: Basic dXNlcjpwYXNz",
            "Bearer abcdefgh1234",
            "PASSWD=s3cret",
            "{\"client_secret\": \"abc\"}",
            "X-Token: t0k3n",
            "{\"API-Key\": \"abc\"}",
            "password=nullable1",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_abcdefghijklmnopqrstuvwxyz",
            "glpat-abcdefghij0123456789",
            "xoxp-1234567890-abc",
            "key AKIAIOSFODNN7EXAMPLE",
            "rk_live_abcdefghijklmnop",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789",
        ] {
            let bytes = credential.as_bytes();
            assert!(
                shapes.worded(bytes) && shapes.matched(bytes),
                "{credential}"
            );
        }
        for harmless in [
            "ge-0/0/1 uplink to core",
            "{\"password\": null}",
            "token: null, secret=NULL",
            "https://example.com/path?x=1",
            "the key is under the mat",
            "Bearer short",
        ] {
            assert!(!shapes.matched(harmless.as_bytes()), "{harmless}");
        }
    }

    #[test]
    fn dump_rows_are_scanned_in_any_chunking() {
        let dump = concat!(
            "SET x = 1;\n",
            "COPY public.t (id, note, secret, data, tags) FROM stdin;\n",
            "1\tsee https://u:pw@h.example/\tpassword=covered\t{}\t\\N\n",
            "2\tplain\tpassword=covered\t{\"token\": \"abcdef\"}\t{a,b}\n",
            "3\tAuthorization:\\tBearer abcdefgh123\t\\N\t{\"password\": null}\t{\"Bearer abcdefgh1234\"}\n",
            "4\tkey\t\\N\t{}\t\\N\n",
            "\\.\n",
            "COPY public.other (id, note) FROM stdin;\n",
            "1\tpassword=elsewhere\n",
            "\\.\n",
            "COPY public.t (id, note) FROM stdin;\n",
            "9\tPASSWORD=again\n",
            "\\.\n",
            "SELECT 'password=not data';\n",
        )
        .as_bytes();
        let expected = vec![
            ("public.t.data".to_string(), 1),
            ("public.t.note".to_string(), 3),
            ("public.t.tags".to_string(), 1),
        ];
        for chunk in [1, 2, 3, 7, 64, dump.len()] {
            let scanner = scanner();
            let mut reader = scanner.reader(dump);
            let mut out = Vec::new();
            let mut buf = vec![0; chunk];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, dump, "the dump passes unchanged");
            assert_eq!(found(scanner), expected, "chunks of {chunk}");
        }
    }

    /// A binary `COPY` of `(id int, note text, data jsonb, tags text[])` with these rows.
    fn binary_copy(rows: &[(Option<&str>, Option<&str>, &[&str])]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(4i32.to_be_bytes());
        out.extend(b"ext!");
        let field = |out: &mut Vec<u8>, value: Option<&[u8]>| match value {
            Some(v) => {
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            None => out.extend((-1i32).to_be_bytes()),
        };
        for (n, (note, data, tags)) in rows.iter().enumerate() {
            out.extend(4i16.to_be_bytes());
            field(&mut out, Some(&(n as i32).to_be_bytes()));
            field(&mut out, note.map(str::as_bytes));
            let data = data.map(|d| [&[1u8][..], d.as_bytes()].concat());
            field(&mut out, data.as_deref());
            let mut array = Vec::new();
            for v in [1i32, 0, 25, tags.len() as i32, 1] {
                array.extend(v.to_be_bytes());
            }
            for tag in *tags {
                array.extend((tag.len() as i32).to_be_bytes());
                array.extend(tag.as_bytes());
            }
            field(&mut out, Some(&array));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    #[test]
    fn binary_copies_are_scanned_by_kind_in_any_chunking() {
        let copy = binary_copy(&[
            (Some("https://u:pw@h.example/"), Some("{}"), &["a"]),
            (
                None,
                Some("{\"secret\": \"abcdef\"}"),
                &["b", "token=abcdef1"],
            ),
            (Some("key"), Some("{\"password\": null}"), &[]),
            (Some("Bearer abcdefgh12345"), None, &["c"]),
        ]);
        let columns: Vec<String> = ["id", "note", "data", "tags"].map(String::from).to_vec();
        for chunk in [1, 5, 19, 64, copy.len()] {
            let scanner = scanner();
            let mut scan = scanner.copy("public.t", &columns, true).unwrap();
            for part in copy.chunks(chunk) {
                scan.feed(part);
            }
            scan.finish();
            drop(scan);
            assert_eq!(
                found(scanner),
                vec![
                    ("public.t.data".to_string(), 1),
                    ("public.t.note".to_string(), 2),
                    ("public.t.tags".to_string(), 1),
                ],
                "chunks of {chunk}"
            );
        }
        let scanner = scanner();
        assert!(scanner
            .copy("public.t", &["id".to_string(), "secret".to_string()], true)
            .is_none());
        assert!(scanner.copy("public.other", &columns, true).is_none());
    }
}
