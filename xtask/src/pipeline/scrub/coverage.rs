//! Scrub coverage: every column that can hold text is either scrubbed by a rule or kept on
//! purpose, with a reason, in a coverage file. `coverage.toml` (built in) keeps NetBox's
//! columns; a project keeps its own in `fixtures/scrub-coverage.toml`. A column that is
//! neither is one a migration added that nobody has classified yet.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use super::rules::{line_of, Rule};
use crate::plain::schema_diff::model::Schema;

const BUILT_IN: &str = include_str!("coverage.toml");
const VERSION: u32 = 1;
/// Where a project keeps its coverage file, from the workspace root.
pub const PROJECT_FILE: &str = "fixtures/scrub-coverage.toml";
/// The reason `--write-coverage` gives each new entry, which the check refuses.
pub const TODO: &str = "TODO: why may this be copied?";

/// A coverage file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: toml::Spanned<u32>,
    /// `"table.column"` (or `"schema.table.column"`, `*` for any run of characters) to the
    /// reason it may be copied verbatim.
    #[serde(default)]
    keep: BTreeMap<String, toml::Spanned<String>>,
}

/// A column kept on purpose.
#[derive(Debug, Clone)]
pub struct Entry {
    /// As written: `table.column` or `schema.table.column`.
    pub name: String,
    pub reason: String,
    /// The file and line it is on.
    pub at: String,
    /// From the project's file, not the built-in list: must name a column that exists.
    pub own: bool,
    parts: Vec<String>,
}

impl Entry {
    /// The table it names, unless that is a pattern.
    fn literal_table(&self) -> Option<&str> {
        let table = match &self.parts[..] {
            [table, _] | [_, table, _] => table,
            _ => return None,
        };
        (!table.contains('*')).then_some(table.as_str())
    }

    fn matches(&self, column: &Column) -> bool {
        match &self.parts[..] {
            [table, name] => glob(table, &column.table) && glob(name, &column.name),
            [schema, table, name] => {
                glob(schema, &column.schema)
                    && glob(table, &column.table)
                    && glob(name, &column.name)
            }
            _ => false,
        }
    }

    /// Whether its reason is still to be written.
    pub fn unreasoned(&self) -> bool {
        self.reason.trim().to_lowercase().starts_with("todo")
    }
}

/// The columns kept on purpose: the built-in list, then the project's file.
#[derive(Debug, Default)]
pub struct Coverage {
    pub entries: Vec<Entry>,
}

/// Entries by the table they name (those naming a pattern apart), so that a column is
/// matched against its own table's entries: a schema's thousand columns against the
/// built-in list's hundreds of entries would otherwise be every pair.
struct Index<'a> {
    by_table: HashMap<&'a str, Vec<&'a Entry>>,
    patterns: Vec<&'a Entry>,
}

impl<'a> Index<'a> {
    fn new(entries: impl Iterator<Item = &'a Entry>) -> Index<'a> {
        let mut index = Index {
            by_table: HashMap::new(),
            patterns: Vec::new(),
        };
        for entry in entries {
            match entry.literal_table() {
                Some(table) => index.by_table.entry(table).or_default().push(entry),
                None => index.patterns.push(entry),
            }
        }
        index
    }

    fn matches(&self, column: &Column) -> bool {
        self.by_table
            .get(column.table.as_str())
            .into_iter()
            .flatten()
            .chain(&self.patterns)
            .any(|e| e.matches(column))
    }
}

/// A column of a schema, as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub data_type: String,
    /// Whether its type can hold text (see [`in_scope`]).
    pub in_scope: bool,
}

impl Column {
    /// `table.column`, or `schema.table.column` outside `public`: as an entry names it.
    pub fn entry_name(&self) -> String {
        match self.schema.as_str() {
            "public" => format!("{}.{}", self.table, self.name),
            schema => format!("{schema}.{}.{}", self.table, self.name),
        }
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// In-scope columns no rule and no entry accounts for.
    pub uncovered: Vec<Column>,
    /// Entries of the project's file that name no column of the schema.
    pub stale: Vec<Entry>,
    /// Entries whose reason is still a `TODO`.
    pub unreasoned: Vec<Entry>,
}

#[cfg(test)]
impl Report {
    pub fn passes(&self) -> bool {
        self.uncovered.is_empty() && self.stale.is_empty() && self.unreasoned.is_empty()
    }
}

/// The scrub rules in force: the preset, extended by `file` (as the copying commands read them).
pub fn rules(file: Option<&Path>) -> anyhow::Result<Vec<Rule>> {
    super::rules::load_rules(file)
}

/// The built-in list and, when it exists, the project's file `path` (shown as `shown`).
pub fn load(path: &Path, shown: &str) -> anyhow::Result<Coverage> {
    let mut coverage = Coverage::default();
    parse(BUILT_IN, "the built-in coverage list", false, &mut coverage)?;
    match std::fs::read_to_string(path) {
        Ok(text) => parse(
            &text,
            &format!("coverage file {shown}"),
            true,
            &mut coverage,
        )?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading coverage file {shown}")),
    }
    Ok(coverage)
}

fn parse(text: &str, what: &str, own: bool, coverage: &mut Coverage) -> anyhow::Result<()> {
    let file: File = toml::from_str(text).map_err(|err| {
        let message = err.message().replace('\n', " ");
        let at = err
            .span()
            .map(|span| format!(", line {}", line_of(text, span.start)))
            .unwrap_or_default();
        anyhow::anyhow!(
            "{what}{at}: {message}; see README.md, \"Scrub coverage\", for its keys (`version`, `[keep]`)"
        )
    })?;
    if *file.version.get_ref() != VERSION {
        bail!(
            "{what}, line {}: version {} is not one this tool reads: write `version = {VERSION}`",
            line_of(text, file.version.span().start),
            file.version.get_ref()
        );
    }
    for (name, reason) in file.keep {
        let at = format!("{what}, line {}", line_of(text, reason.span().start));
        let parts: Vec<String> = name.split('.').map(str::to_string).collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(String::is_empty) {
            bail!("{at}: `{name}` is not `table.column` or `schema.table.column`: name the column it keeps, such as \"dcim_site.description\"");
        }
        let reason = reason.into_inner();
        if reason.trim().is_empty() {
            bail!("{at}: `{name}` has no reason: say in one line why its values may be copied verbatim");
        }
        coverage.entries.push(Entry {
            name,
            reason,
            at,
            own,
            parts,
        });
    }
    Ok(())
}

/// Whether a column of this type (as a schema dump writes it) can hold text: character
/// types, `citext`, JSON, network addresses, `bytea`, arrays of them and domains over them.
pub fn in_scope(data_type: &str, domains: &BTreeMap<String, String>) -> bool {
    let mut data_type = data_type.trim();
    for _ in 0..16 {
        while let Some(element) = data_type.strip_suffix("[]") {
            data_type = element.trim_end();
        }
        match domains.get(data_type) {
            Some(base) => data_type = base.trim(),
            None => break,
        }
    }
    let base = data_type.split('(').next().unwrap_or_default().trim();
    let base = base.strip_prefix("pg_catalog.").unwrap_or(base);
    let base = base.rsplit_once('.').map_or(base, |(_, name)| name);
    matches!(
        base,
        "text"
            | "character varying"
            | "varchar"
            | "character"
            | "char"
            | "bpchar"
            | "citext"
            | "json"
            | "jsonb"
            | "inet"
            | "cidr"
            | "macaddr"
            | "macaddr8"
            | "bytea"
    )
}

/// Every column of every table of a schema dump.
pub fn columns(dump: &str) -> Vec<Column> {
    let schema = Schema::read(dump);
    let mut columns = Vec::new();
    for (table, def) in &schema.tables {
        for column in &def.columns {
            columns.push(Column {
                schema: table.schema.clone(),
                table: table.name.clone(),
                name: column.name.clone(),
                data_type: column.data_type.clone(),
                in_scope: in_scope(&column.data_type, &schema.domains),
            });
        }
    }
    columns
}

/// Whether a rule scrubs the column: its table (named with or without its schema) and its
/// column, or the whole table.
fn ruled(rules: &[Rule], column: &Column) -> bool {
    rules.iter().any(|rule| {
        let table = match rule.table.split_once('.') {
            Some((schema, table)) => schema == column.schema && table == column.table,
            None => rule.table == column.table,
        };
        table && rule.column.as_ref().is_none_or(|name| *name == column.name)
    })
}

/// The check: each in-scope column is scrubbed by one of `rules` or kept by an entry with a
/// reason, and each entry of the project's file names a column of `columns`.
pub fn check(columns: &[Column], rules: &[Rule], coverage: &Coverage) -> Report {
    let mut report = Report::default();
    let index = Index::new(coverage.entries.iter());
    for column in columns.iter().filter(|c| c.in_scope) {
        if ruled(rules, column) {
            continue;
        }
        // A column kept by a `TODO` entry is reported with the entry.
        if !index.matches(column) {
            report.uncovered.push(column.clone());
        }
    }
    for entry in &coverage.entries {
        if entry.unreasoned() {
            report.unreasoned.push(entry.clone());
        }
        if entry.own && !columns.iter().any(|c| entry.matches(c)) {
            report.stale.push(entry.clone());
        }
    }
    report
}

/// The in-scope columns that no rule and no entry with a reason accounts for: what a copy
/// would carry verbatim unreviewed.
pub fn unaccounted(columns: &[Column], rules: &[Rule], coverage: &Coverage) -> Vec<Column> {
    let index = Index::new(coverage.entries.iter().filter(|e| !e.unreasoned()));
    columns
        .iter()
        .filter(|c| c.in_scope && !ruled(rules, c) && !index.matches(c))
        .cloned()
        .collect()
}

/// The project's file with an entry added for each of `columns`, reason [`TODO`]; `current`
/// is the file's text, if it exists.
pub fn with_entries(current: Option<&str>, columns: &[Column]) -> anyhow::Result<String> {
    let mut text = match current {
        Some(text) => text.to_string(),
        None => format!("# Columns that may be copied verbatim into dev copies, each with the reason.\n# README.md, \"Scrub coverage\", says how to fill it in.\nversion = {VERSION}\n"),
    };
    let has_table = text.lines().any(|line| line.trim() == "[keep]");
    if !has_table {
        if text
            .lines()
            .any(|line| line.trim_start().starts_with("keep"))
        {
            bail!("the coverage file writes `keep` inline: make it a `[keep]` table at the end of the file, so that entries can be added to it");
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("\n[keep]\n");
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    for column in columns {
        text.push_str(&format!("{:?} = {TODO:?}\n", column.entry_name()));
    }
    let mut check = Coverage::default();
    parse(
        &text,
        "the coverage file as it would be written",
        true,
        &mut check,
    )?;
    Ok(text)
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else {
                return false;
            };
            (0..=text.len())
                .filter(|at| text.is_char_boundary(*at))
                .any(|at| glob(rest, &text[at..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- Name: email; Type: DOMAIN; Schema: public; Owner: -\n--\n\nCREATE DOMAIN public.email AS character varying(254)\n\tCONSTRAINT email_check CHECK (true);\n\n--\n-- Name: person; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.person (\n    id bigint NOT NULL,\n    name text NOT NULL,\n    mail public.email,\n    mails public.email[],\n    seen inet,\n    \"position\" character varying(30),\n    data jsonb DEFAULT '{}'::jsonb NOT NULL,\n    born date\n);\n";

    fn coverage_of(own: &str) -> Coverage {
        let mut coverage = Coverage::default();
        parse(own, "scrub-coverage.toml", true, &mut coverage).unwrap();
        coverage
    }

    fn error_of(own: &str) -> String {
        let mut coverage = Coverage::default();
        format!(
            "{:#}",
            parse(own, "scrub-coverage.toml", true, &mut coverage).expect_err(own)
        )
    }

    fn names(columns: &[Column]) -> Vec<String> {
        columns.iter().map(Column::entry_name).collect()
    }

    #[test]
    fn types_that_hold_text_are_in_scope() {
        let columns = columns(DUMP);
        let scoped: Vec<String> = columns
            .iter()
            .filter(|c| c.in_scope)
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            scoped,
            ["name", "mail", "mails", "seen", "position", "data"],
            "{columns:?}"
        );
        let none = BTreeMap::new();
        for yes in [
            "text[]",
            "bytea",
            "macaddr8",
            "public.citext",
            "character(2)",
            "cidr[]",
        ] {
            assert!(in_scope(yes, &none), "{yes}");
        }
        for no in [
            "integer",
            "uuid",
            "timestamp with time zone",
            "public.posint",
            "tsvector",
        ] {
            assert!(!in_scope(no, &none), "{no}");
        }
    }

    #[test]
    fn each_column_is_ruled_or_kept_and_entries_name_columns() {
        let columns = columns(DUMP);
        let rules = vec![Rule {
            table: "person".into(),
            column: Some("mail".into()),
            action: super::super::Action::Null,
        }];
        let coverage = coverage_of("version = 1\n[keep]\n\"person.name\" = \"a role, not a person\"\n\"*.data\" = \"settings\"\n");
        let report = check(&columns, &rules, &coverage);
        assert_eq!(
            names(&report.uncovered),
            ["person.mails", "person.seen", "person.position"]
        );
        assert!(report.stale.is_empty() && report.unreasoned.is_empty());
        let whole_table = vec![Rule {
            table: "public.person".into(),
            column: None,
            action: super::super::Action::DeleteRows,
        }];
        assert!(check(&columns, &whole_table, &Coverage::default()).passes());

        let stale = coverage_of(
            "version = 1\n[keep]\n\"person.gone\" = \"was here\"\n\"other.*\" = \"x\"\n",
        );
        let report = check(&columns, &whole_table, &stale);
        let stale: Vec<&str> = report.stale.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(stale, ["other.*", "person.gone"]);
        assert!(
            report.stale[1].at.ends_with("line 3"),
            "{}",
            report.stale[1].at
        );

        let todo = with_entries(None, &report_columns(&columns, &["seen"])).unwrap();
        assert!(
            todo.contains("\"person.seen\" = \"TODO: why may this be copied?\""),
            "{todo}"
        );
        let report = check(&columns, &whole_table, &coverage_of(&todo));
        assert_eq!(report.unreasoned.len(), 1);
        assert!(!report.passes());
        assert_eq!(unaccounted(&columns, &[], &coverage_of(&todo)).len(), 6);
    }

    fn report_columns(columns: &[Column], which: &[&str]) -> Vec<Column> {
        columns
            .iter()
            .filter(|c| which.contains(&c.name.as_str()))
            .cloned()
            .collect()
    }

    #[test]
    fn files_are_strict() {
        assert!(error_of("[keep]\n\"a.b\" = \"x\"\n").contains("version"));
        let version = error_of("\nversion = 2\n");
        assert!(
            version.contains("line 2") && version.contains("version = 1"),
            "{version}"
        );
        let key = error_of("version = 1\nkeeps = {}\n");
        assert!(key.contains("line 2") && key.contains("keeps"), "{key}");
        let name = error_of("version = 1\n[keep]\n\"a.b\" = \"x\"\n\"site\" = \"x\"\n");
        assert!(name.contains("line 4") && name.contains("`site`"), "{name}");
        let empty = error_of("version = 1\n[keep]\n\"a.b\" = \" \"\n");
        assert!(
            empty.contains("line 3") && empty.contains("no reason"),
            "{empty}"
        );
        let appended = with_entries(Some("version = 1\n"), &columns(DUMP)[1..2]).unwrap();
        assert_eq!(
            appended,
            "version = 1\n\n[keep]\n\"person.name\" = \"TODO: why may this be copied?\"\n"
        );
    }

    #[test]
    fn the_built_in_list_parses_and_globs_match() {
        let mut coverage = Coverage::default();
        parse(BUILT_IN, "built-in", false, &mut coverage).unwrap();
        assert!(coverage.entries.iter().all(|e| !e.unreasoned()));
        assert!(glob("*.custom_field_data", "x.custom_field_data"));
        assert!(glob("dcim_*", "dcim_site") && !glob("dcim_*", "ipam_vlan"));
        assert!(glob("*", "") && !glob("a*b", "ac"));
    }
}
