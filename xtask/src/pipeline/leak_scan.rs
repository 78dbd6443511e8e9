//! Leak scan: the text and JSON columns no scrub rule covers, searched for credential-shaped
//! values and e-mail addresses after every load and export. Findings name a column, a kind
//! and a row count, never a value.
//!
//! The shapes exist twice: here as PostgreSQL regular expressions, for a scan of a loaded
//! database, and in `rowscan` for the rows as they stream; the tests below keep the two in
//! step, and `tests/it/leak_scan.rs` checks that both find the same on the same values.

use std::{
    collections::{BTreeSet, HashMap},
    io::Read,
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::remedy::{refuse, Remedy};
use crate::{
    bundle::{self, Leak, LeakKind},
    context::Context,
    pg::{
        sql::{ident, literal},
        Access, DbUrl,
    },
    pipeline::{budget, scrub},
    term,
};

/// Set to `1` to skip the scan: for benchmarks that measure its cost, never for real runs.
pub const SKIP_VAR: &str = "NETPOINT_SKIP_LEAK_SCAN";

/// Credential shapes as PostgreSQL regular expressions (ARE), matched case-insensitively:
/// [`rowscan::CREDENTIALS`] and [`rowscan::PAIR`] in PostgreSQL's dialect, which a test holds
/// them to.
const SHAPES: &[&str] = &[
    // URL user information with a password: scheme://user:pass@host
    r"[a-z][a-z0-9+.-]*://[^/[:space:]:@]*:[^/[:space:]@]+@",
    // Authorization: Basic dXNlcjpwYXNz, "Authorization": "token abc..."
    r#"\mauthorization["']?[[:space:]]*[:=][[:space:]]*["']?([a-z]+[[:space:]]+)?[a-z0-9._~+/=-]{8,}"#,
    r"\mbearer[[:space:]]+[a-z0-9._~+/=-]{8,}",
    // password=..., secret: ..., "api_key": "..." (a JSON null is no secret)
    r#"(passw(or)?d|passphrase|pwd|secret([_-]?key)?|token|api[_-]?key|access[_-]?key|communit(y|ies))["']?[[:space:]]*[:=][[:space:]]*\[?[[:space:]]*["']?(?!null\M)[^][:space:]"',;&}]{3,}"#,
    // network device configuration: enable secret 5 ..., snmp-server community ...
    r"\m(enable[[:space:]]+(secret|password)|username[[:space:]]+[^[:space:]]+([[:space:]]+privilege[[:space:]]+[0-9]+)?[[:space:]]+(secret|password)|snmp-server[[:space:]]+community|tacacs-server[[:space:]]+key|radius-server[[:space:]]+key|key-string)([[:space:]]+[0-9])?[[:space:]]+[^[:space:]]{3,}",
    // incoming-webhook URLs (the path is the credential), shared access signatures, JWTs
    r"hooks\.slack\.com/(services|workflows|triggers)/[a-z0-9/_-]{20,}|discord(app)?\.com/api/webhooks/[0-9]+/[a-z0-9_-]{20,}|\.webhook\.office\.com/webhookb2/[^[:space:]]{20,}",
    r"[?&]sig=[a-z0-9%+/=_-]{16,}",
    r"\meyj[a-z0-9_-]{8,}\.eyj[a-z0-9_-]{8,}\.[a-z0-9_-]{8,}",
    r"-----begin [a-z ]*private key-----",
    // GitHub, GitLab, Slack, AWS, Stripe, Google, npm
    r"\m(gh[pousr]_[a-z0-9]{30,}|github_pat_[a-z0-9_]{20,}|glpat-[a-z0-9_-]{20,}|xox[baprs]-[a-z0-9-]{10,}|akia[0-9a-z]{16}\M|[sr]k_live_[a-z0-9]{16,}|aiza[0-9a-z_-]{35}|npm_[a-z0-9]{36}|sk-(proj|ant)-[a-z0-9_-]{20,})",
];

/// An e-mail address at a domain that names someone: `rowscan::EMAIL` with the reserved
/// domains (`example.com`, `.invalid`, ...) refused right after the `@`, where `rowscan`
/// refuses them in code.
fn email_pattern() -> String {
    const SUFFIX: &str = r"(?:$|[^a-z0-9.:-]|[.:](?:$|[^a-z0-9/]))";
    let (head, rest) = rowscan::EMAIL
        .split_once('@')
        .expect("an e-mail shape has its @");
    assert!(
        rest.ends_with(SUFFIX),
        "rowscan's e-mail shape ends as this one"
    );
    let names: Vec<String> = rowscan::RESERVED_DOMAINS
        .iter()
        .map(|domain| domain.replace('.', r"\."))
        .chain(rowscan::RESERVED_TLDS.iter().map(|tld| tld.to_string()))
        .collect();
    let reserved = format!(r"(?:[a-z0-9-]+\.)*(?:{})", names.join("|"));
    format!("{head}@(?!{reserved}{SUFFIX}){rest}")
}

/// The one pattern every scanned value is matched against for credentials.
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
    "%passphrase%",
    "%pwd%",
    "%communit%",
    "%sig=%",
    "%eyj%",
    "%sk-proj-%",
    "%sk-ant-%",
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
    "%@%",
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
/// `[[table index, rows with credentials then with e-mail addresses, of each column...], ...]`
/// as JSON.
pub fn group_sql(tables: &[Table]) -> String {
    let words: Vec<String> = WORDS.iter().map(|w| literal(w)).collect();
    // The patterns once, not once a column: the query goes to psql as one argument, which
    // the system limits (128 KiB on Linux), and PostgreSQL compiles each pattern once anyway.
    let shapes = format!(
        "with shapes (credential, email, words) as (select {}::text, {}::text, array[{}]::text[])",
        literal(&pattern()),
        literal(&email_pattern()),
        words.join(", ")
    );
    let selects: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(n, table)| {
            let counts: Vec<String> = table
                .columns
                .iter()
                .map(|column| {
                    format!(
                        "count(*) filter (where {0}::text ~* s.credential), count(*) filter (where {0}::text ~* s.email)",
                        ident(column)
                    )
                })
                .collect();
            let text: Vec<String> = table
                .columns
                .iter()
                .map(|column| format!("{}::text collate \"C\"", ident(column)))
                .collect();
            format!(
                "(select json_build_array({n}, {}) as j from {}.{}, shapes s where lower(concat_ws(' ', {})) like any (s.words))",
                counts.join(", "),
                ident(&table.schema),
                ident(&table.name),
                text.join(", ")
            )
        })
        .collect();
    format!(
        "{shapes} select coalesce(json_agg(r.j), '[]') from ({}) r",
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
pub fn scan(cx: &Context, url: &DbUrl, covered: &Covered) -> anyhow::Result<Option<Report>> {
    let (sh, tools) = (&cx.sh, &cx.tools);
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
    let (sessions, _) = budget::fitting_jobs(
        cx,
        cx.jobs,
        &[budget::Sessions {
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
            for (column, counts) in table.columns.iter().zip(counts.chunks(2)) {
                for (kind, &rows) in [LeakKind::Credential, LeakKind::Email].iter().zip(counts) {
                    if rows > 0 {
                        findings.push(Leak {
                            column: format!("{}.{}.{column}", table.schema, table.name),
                            rows,
                            kind: *kind,
                        });
                    }
                }
            }
        }
    }
    findings.sort_by(|a, b| (&a.column, a.kind).cmp(&(&b.column, b.kind)));
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
        return Err(refuse(
            Remedy::ScrubRulesOrNotStrict,
            format!(
                "leak scan (strict): {} that no scrub rule covers; {untouched}",
                listed(&report.findings)
            ),
        ));
    }
    for leak in &report.findings {
        term::warn(format!(
            "leak scan: {}: {} with {} that no scrub rule covers ({})",
            leak.column,
            rows(leak.rows),
            what(leak.kind),
            Remedy::ScrubRule
        ));
    }
    Ok(())
}

/// What a kind of finding is called in messages.
fn what(kind: LeakKind) -> &'static str {
    match kind {
        LeakKind::Credential => "credential-shaped values",
        LeakKind::Email => "e-mail addresses",
    }
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
            "leak scan: {} ({})",
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

/// `credential-shaped values in a (1 row), b (2 rows); e-mail addresses in c (3 rows)`.
fn listed(findings: &[Leak]) -> String {
    [LeakKind::Credential, LeakKind::Email]
        .into_iter()
        .filter_map(|kind| {
            let columns: Vec<String> = findings
                .iter()
                .filter(|leak| leak.kind == kind)
                .map(|leak| format!("{} ({})", leak.column, rows(leak.rows)))
                .collect();
            (!columns.is_empty()).then(|| format!("{} in {}", what(kind), columns.join(", ")))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn rows(n: u64) -> String {
    match n {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
    }
}

/// A leak scan done on the rows as they stream through xtask (dumps and straight copies),
/// so no extra pass over the data is made: [`rowscan::Scanner`] with the columns to scan.
pub struct Scanner {
    rows: rowscan::Scanner,
    columns: usize,
}

impl Scanner {
    /// Reads `url`'s text and JSON columns and keeps those `covered` leaves to scan. `None`
    /// when the scan is turned off for a benchmark.
    pub fn start(cx: &Context, url: &DbUrl, covered: &Covered) -> anyhow::Result<Option<Scanner>> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        if skipped() {
            return Ok(None);
        }
        let answer = tools.query(sh, url, Access::ReadOnly, CATALOG)?;
        let columns: Vec<CatalogColumn> = serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {url} about its text columns"))?;
        Ok(Some(Scanner::of(columns, covered)))
    }

    fn of(columns: Vec<CatalogColumn>, covered: &Covered) -> Scanner {
        let kinds: HashMap<(String, String, String), rowscan::Kind> = columns
            .iter()
            .map(|c| {
                let kind = match c.kind.as_str() {
                    "jsonb" => rowscan::Kind::Jsonb,
                    "array" => rowscan::Kind::Array { jsonb: false },
                    "jsonb[]" => rowscan::Kind::Array { jsonb: true },
                    _ => rowscan::Kind::Text,
                };
                ((c.schema.clone(), c.table.clone(), c.column.clone()), kind)
            })
            .collect();
        let tables = uncovered(columns, covered);
        let columns = tables.iter().map(|t| t.columns.len()).sum();
        let tables = tables.into_iter().map(|table| {
            let kinds = table
                .columns
                .iter()
                .map(|column| {
                    let key = (table.schema.clone(), table.name.clone(), column.clone());
                    (column.clone(), kinds[&key])
                })
                .collect();
            (format!("{}.{}", table.schema, table.name), kinds)
        });
        Scanner {
            rows: rowscan::Scanner::new(tables),
            columns,
        }
    }

    /// Passes a dump through unchanged, scanning its rows.
    pub fn reader<R: Read>(&self, inner: R) -> rowscan::ScanningReader<'_, R> {
        self.rows.reader(inner)
    }

    /// A scan of one table's `COPY ... TO STDOUT` output; `None` when it has nothing to scan.
    pub fn copy(
        &self,
        table: &str,
        columns: &[String],
        binary: bool,
    ) -> Option<rowscan::CopyScan<'_>> {
        self.rows.copy(table, columns, binary)
    }

    /// Scans a whole dump held in memory.
    pub fn scan_bytes(&self, dump: &[u8]) {
        self.rows.scan_bytes(dump)
    }

    /// What the streams found, once they have all finished.
    pub fn report(self) -> Report {
        let findings = self
            .rows
            .findings()
            .into_iter()
            .map(|(column, shape, rows)| Leak {
                column,
                rows,
                kind: match shape {
                    rowscan::Shape::Credential => LeakKind::Credential,
                    rowscan::Shape::Email => LeakKind::Email,
                },
            })
            .collect();
        Report {
            findings,
            columns: self.columns,
            elapsed: None,
        }
    }
}

fn skipped() -> bool {
    let skip = std::env::var_os(SKIP_VAR).is_some_and(|v| v == "1");
    if skip {
        term::warn(format!("leak scan skipped ({SKIP_VAR}=1)"));
    }
    skip
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
        assert!(sql.starts_with("with shapes (credential, email, words) as (select '"));
        assert!(sql.contains(
            "'::text, array['%://%', '%authoriz%', '%bearer%', '%passw%', '%passphrase%', '%pwd%', '%communit%', '%sig=%', '%eyj%', '%sk-proj-%', '%sk-ant-%', '%secret%', '%token%', '%key%', '%gh_\\_%', '%github\\_pat\\_%', '%glpat-%', '%xox%', '%akia%', '%k\\_live\\_%', '%aiza%', '%npm\\_%', '%@%']::text[]) select coalesce(json_agg(r.j), '[]') from ("
        ), "{sql}");
        assert!(
            sql.contains("'::text, '(?:^|[^a-z0-9._%+/:-]|mailto:)"),
            "{sql}"
        );
        assert_eq!(sql.matches(" from \"").count(), 2, "{sql}");
        assert!(sql.contains(
            "(select json_build_array(0, count(*) filter (where \"comments\"::text ~* s.credential), count(*) filter (where \"comments\"::text ~* s.email), "
        ), "{sql}");
        assert!(sql.contains("count(*) filter (where \"we\"\"ird\"::text ~* s.credential)"));
        assert!(sql.contains(
            " from \"public\".\"dcim_site\", shapes s where lower(concat_ws(' ', \"comments\"::text collate \"C\", \"we\"\"ird\"::text collate \"C\")) like any (s.words)) union all (select json_build_array(1, "
        ), "{sql}");
        assert!(sql.ends_with(" from \"Odd Schema\".\"t\", shapes s where lower(concat_ws(' ', \"c\"::text collate \"C\")) like any (s.words))) r"), "{sql}");
        // Two counts a column, credentials then e-mail addresses; each pattern written once.
        assert_eq!(sql.matches("~* s.credential").count(), 3);
        assert_eq!(sql.matches("~* s.email").count(), 3);
        assert_eq!(sql.matches("mailto:").count(), 1);
    }

    #[test]
    fn the_pattern_is_one_quoted_literal() {
        let literal = literal(&pattern());
        let inner = &literal[1..literal.len() - 1];
        assert!(!inner.replace("''", "").contains('\''), "quotes doubled");
        assert_eq!(pattern().matches("|(").count(), SHAPES.len() - 1);
    }

    /// A `like` pattern as the regular expression that matches what it matches.
    fn like(pattern: &str) -> regex::Regex {
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
    }

    /// The stream scan's words and this scan's `like` patterns are one list: each word is
    /// some pattern's, and each pattern some word's (`gh_` standing for `ghp_`, `gho_`, ...).
    #[test]
    fn the_words_are_the_stream_scans() {
        let likes: Vec<regex::Regex> = WORDS.iter().map(|w| like(w)).collect();
        for word in rowscan::WORDS {
            assert!(
                likes.iter().any(|l| l.is_match(word)),
                "rowscan's word {word:?} has no like pattern here"
            );
        }
        for (pattern, l) in WORDS.iter().zip(&likes) {
            assert!(
                rowscan::WORDS.iter().any(|w| l.is_match(w)),
                "the like pattern {pattern:?} is no word of rowscan's"
            );
        }
    }

    /// A shape here in the regex crate's syntax: the same, but for `\m` and `\M` (a word's
    /// start and end, `\b` there) and the lookahead that refuses a JSON `null`, which
    /// rowscan decides in code.
    fn as_rust(shape: &str) -> regex::bytes::Regex {
        let rust = shape
            .replace(r"(?!null\M)", "")
            .replace(r"\m", r"\b")
            .replace(r"\M", r"\b");
        regex::bytes::Regex::new(&format!("(?i-u){rust}")).unwrap()
    }

    /// Each shape of either list has an example that no other shape of its list matches:
    /// the list of every credential shape, by example.
    const EXAMPLES: &[&str] = &[
        "https://admin:hunter2@example.com",
        "Authorization: Basic dXNlcjpwYXNz",
        "Bearer abcdefgh1234",
        "{\"client_secret\": \"abc\"}",
        "enable secret 5 $1$abcd",
        "https://hooks.slack.com/services/T000/B000/abcdefghijklmnopqrstuvwx",
        "https://discord.com/api/webhooks/123456/abcdefghijklmnopqrstuvwxyz",
        "https://contoso.webhook.office.com/webhookb2/abcdefghijklmnopqrstuvwxyz",
        "https://x.example/b?sv=2022&sig=abcdefghijklmnop1234",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
    ];

    /// The credential shapes here (PostgreSQL's regular expressions) and rowscan's (the regex
    /// crate's) are one list in two dialects: every shape of either list has an example of
    /// its own, and the two scans agree on every example and on values near them. A shape
    /// added to one list only fails here once it has its example.
    #[test]
    fn the_credential_shapes_are_the_stream_scans() {
        let theirs: Vec<&str> = rowscan::CREDENTIALS
            .iter()
            .copied()
            .chain([rowscan::PAIR])
            .collect();
        let rust = |shape: &str| regex::bytes::Regex::new(&format!("(?i-u){shape}")).unwrap();
        for (list, shapes) in [
            (
                "the leak scan's",
                SHAPES.iter().map(|s| as_rust(s)).collect::<Vec<_>>(),
            ),
            ("rowscan's", theirs.iter().map(|s| rust(s)).collect()),
        ] {
            for (n, shape) in shapes.iter().enumerate() {
                let own = EXAMPLES.iter().any(|example| {
                    let example = example.as_bytes();
                    shape.is_match(example)
                        && shapes
                            .iter()
                            .enumerate()
                            .all(|(m, other)| m == n || !other.is_match(example))
                });
                assert!(
                    own,
                    "{list} credential shape {shape} has no example of its own: add one to EXAMPLES, and the shape to the other list"
                );
            }
        }
        let ours: Vec<regex::bytes::Regex> = SHAPES.iter().map(|s| as_rust(s)).collect();
        let near = [
            "https://example.com/a:b",
            "Authorization: none",
            "Bearer short",
            "password=ab",
            "enable secret",
            "https://hooks.slack.com/services/short",
            "?sig=short",
            "eyJhbGciOiJIUzI1NiJ9",
            "-----BEGIN PUBLIC KEY-----",
            "ghs_short",
        ];
        for example in EXAMPLES.iter().chain(&near) {
            let here = ours.iter().any(|shape| shape.is_match(example.as_bytes()));
            assert_eq!(
                here,
                rowscan::shapes(example.as_bytes())[0],
                "the two scans disagree on {example:?}"
            );
        }
    }

    /// The e-mail shape is rowscan's with the reserved domains refused in the pattern, as
    /// rowscan refuses them in code.
    #[test]
    fn the_email_shape_is_the_stream_scans() {
        let email = email_pattern();
        let (head, _) = rowscan::EMAIL.split_once('@').unwrap();
        assert!(email.starts_with(&format!("{head}@(?!")), "{email}");
        assert_eq!(
            email.replacen(
                "(?!(?:[a-z0-9-]+\\.)*(?:example\\.com|example\\.net|example\\.org|example|invalid|test|localhost)(?:$|[^a-z0-9.:-]|[.:](?:$|[^a-z0-9/])))",
                "",
                1
            ),
            rowscan::EMAIL,
        );
        for reserved in [
            "ci@example.com",
            "ci@a.example.net",
            "ci@x.example.org",
            "ci@b.example",
            "ci@c.invalid",
            "ci@d.test",
            "ci@e.localhost",
        ] {
            assert!(!rowscan::shapes(reserved.as_bytes())[1], "{reserved}");
        }
    }

    /// The `like` pre-test must let every credential through to the regular expression.
    #[test]
    fn every_shape_holds_a_word() {
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
            "redis://:hunter2@cache:6379/0",
            "passphrase=abc pwd=def",
            "snmp-server community Publ1c RO",
            "https://x.example/b?sv=2022&sig=abcdefghijklmnop1234",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "Contact: NOC@Carrier.net",
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
                    kind: LeakKind::Credential,
                },
                Leak {
                    column: "public.dcim_device.comments".into(),
                    rows: 4,
                    kind: LeakKind::Credential,
                },
                Leak {
                    column: "public.dcim_device.comments".into(),
                    rows: 2,
                    kind: LeakKind::Email,
                },
            ],
            columns: 9,
            elapsed: Some(std::time::Duration::ZERO),
        };
        let err = check(Some(&report), true, "the target is untouched").unwrap_err();
        assert_eq!(
            err.downcast_ref::<crate::remedy::Refusal>()
                .map(|r| r.remedy),
            Some(Remedy::ScrubRulesOrNotStrict)
        );
        let err = err.to_string();
        assert!(
            err.contains("leak scan (strict): credential-shaped values in public.dcim_site.comments (1 row), \
                          public.dcim_device.comments (4 rows); e-mail addresses in public.dcim_device.comments (2 rows) \
                          that no scrub rule covers; the target is untouched")
                && err.ends_with(&format!(": {}", Remedy::ScrubRulesOrNotStrict))
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

    #[test]
    fn the_stream_scan_skips_covered_columns_and_reads_kinds() {
        let columns = vec![
            column("public", "t", "note", 1),
            CatalogColumn {
                kind: "jsonb".into(),
                ..column("public", "t", "data", 1)
            },
            column("public", "t", "secret", 1),
        ];
        let rules = vec![scrub::Rule {
            table: "public.t".into(),
            column: Some("secret".into()),
            action: scrub::Action::Empty,
        }];
        let scanner = Scanner::of(columns, &Covered::by_rules(&rules, &[]));
        let json = |v: &str| [&[1u8][..], v.as_bytes()].concat();
        let mut copy = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        copy.extend(3i16.to_be_bytes());
        for value in [
            "token=abcdef".as_bytes().to_vec(),
            json(r#"{"password": "abcdef"}"#),
            b"password=covered".to_vec(),
        ] {
            copy.extend((value.len() as i32).to_be_bytes());
            copy.extend(value);
        }
        copy.extend((-1i16).to_be_bytes());
        let names = ["note", "data", "secret"].map(String::from);
        let mut scan = scanner.copy("public.t", &names, true).unwrap();
        scan.feed(&copy);
        scan.finish();
        drop(scan);
        assert!(scanner.copy("public.t", &names[2..], true).is_none());
        let report = scanner.report();
        assert_eq!(report.columns, 2);
        let found: Vec<(&str, u64)> = report
            .findings
            .iter()
            .map(|l| (l.column.as_str(), l.rows))
            .collect();
        assert_eq!(found, vec![("public.t.data", 1), ("public.t.note", 1)]);
    }
}
