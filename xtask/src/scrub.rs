//! Scrubbing: secrets and personal data rewritten in the dump stream, between `pg_dump` and
//! its destination, so they never reach a file or a dev database.
//!
//! Rules come from a TOML file (`scrub_preset.toml` is NetPoint's, built in). Each rewritten
//! value is derived from the table, column and row key, so the same row always scrubs to the
//! same bytes.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    io::Read,
    path::Path,
    rc::Rc,
};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::{
    db_url::DbUrl,
    dump::Next,
    media::hex,
    pg_tools::{Access, PgTools},
    restore, term,
};

const PRESET: &str = include_str!("scrub_preset.toml");

#[derive(Debug, Clone)]
pub enum Action {
    Null,
    Empty,
    Value(String),
    UnusablePassword,
    FakeEmail,
    DeleteRows,
    JsonbRemoveKeys(Vec<String>),
    RegexReplace(regex::Regex, String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// `schema.table`; `public` when the file names no schema.
    pub table: String,
    /// None for whole-row actions.
    pub column: Option<String>,
    pub action: Action,
}

impl Rule {
    pub fn describe(&self) -> String {
        let action = match &self.action {
            Action::Null => "null",
            Action::Empty => "empty",
            Action::Value(_) => "value",
            Action::UnusablePassword => "unusable-password",
            Action::FakeEmail => "fake-email",
            Action::DeleteRows => "delete-rows",
            Action::JsonbRemoveKeys(_) => "jsonb-remove-keys",
            Action::RegexReplace(..) => "regex-replace",
        };
        match &self.column {
            Some(column) => format!("{}.{column}: {action}", self.table),
            None => format!("{}: {action}", self.table),
        }
    }
}

/// The rules in force: the preset, extended (or replaced per column) by a file.
pub fn load_rules(file: Option<&Path>) -> anyhow::Result<Vec<Rule>> {
    let mut rules = parse(PRESET, "the built-in NetPoint preset")?;
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read scrub rules {}", file.display()))?;
        let (preset, extra) = parse_with_settings(&text, &file.display().to_string())?;
        if !preset {
            rules.clear();
        }
        for rule in extra {
            rules.retain(|r| !(r.table == rule.table && r.column == rule.column));
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn parse(text: &str, what: &str) -> anyhow::Result<Vec<Rule>> {
    Ok(parse_with_settings(text, what)?.1)
}

/// Parses a rules file; returns whether the preset stays in force (`preset = false` drops it).
fn parse_with_settings(text: &str, what: &str) -> anyhow::Result<(bool, Vec<Rule>)> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        anyhow::anyhow!("scrub rules {what} are not valid TOML: {}", err.message())
    })?;
    let preset = match table.get("preset") {
        None => true,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => bail!("scrub rules {what}: `preset` must be true or false"),
    };
    let mut rules = Vec::new();
    let items = match table.get("rule") {
        None => return Ok((preset, rules)),
        Some(toml::Value::Array(items)) => items,
        Some(_) => bail!("scrub rules {what}: write each rule as a [[rule]] table"),
    };
    for (n, item) in items.iter().enumerate() {
        let at = format!("scrub rules {what}, rule {}", n + 1);
        let get = |key: &str| item.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let table_name = get("table").with_context(|| format!("{at}: missing `table`"))?;
        let table_name = if table_name.contains('.') {
            table_name
        } else {
            format!("public.{table_name}")
        };
        let column = get("column");
        let action_name = get("action").with_context(|| format!("{at}: missing `action`"))?;
        let action = match action_name.as_str() {
            "null" => Action::Null,
            "empty" => Action::Empty,
            "value" => Action::Value(get("value").with_context(|| format!("{at}: `value` action needs `value = \"...\"`"))?),
            "unusable-password" => Action::UnusablePassword,
            "fake-email" => Action::FakeEmail,
            "delete-rows" => Action::DeleteRows,
            "jsonb-remove-keys" => {
                let keys = item
                    .get("keys")
                    .and_then(|v| v.as_array())
                    .with_context(|| format!("{at}: `jsonb-remove-keys` needs `keys = [\"...\"]`"))?
                    .iter()
                    .map(|k| k.as_str().map(str::to_lowercase).with_context(|| format!("{at}: keys must be strings")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Action::JsonbRemoveKeys(keys)
            }
            "regex-replace" => {
                let pattern = get("pattern").with_context(|| format!("{at}: `regex-replace` needs `pattern`"))?;
                let regex = regex::Regex::new(&pattern).with_context(|| format!("{at}: invalid pattern"))?;
                Action::RegexReplace(regex, get("replacement").unwrap_or_default())
            }
            other => bail!(
                "{at}: unknown action `{other}` (use null, empty, value, unusable-password, fake-email, \
                 delete-rows, jsonb-remove-keys or regex-replace)"
            ),
        };
        if column.is_none() && !matches!(action, Action::DeleteRows) {
            bail!("{at}: `{action_name}` needs a `column`");
        }
        rules.push(Rule {
            table: table_name,
            column,
            action,
        });
    }
    Ok((preset, rules))
}

/// Rows each rule changed (or deleted), by rule description.
pub type Counts = Rc<RefCell<BTreeMap<String, u64>>>;

/// Wraps a plain dump so that the rows of ruled tables come out scrubbed.
pub fn scrubbing_reader<R: Read>(input: R, rules: &[Rule]) -> (impl Read, Counts) {
    let (scrub, counts) = scrubber(rules);
    (crate::dump::edit_lines(input, scrub), counts)
}

/// The line editor behind [`scrubbing_reader`], to combine with others in one pass.
pub fn scrubber(rules: &[Rule]) -> (impl FnMut(&mut Vec<u8>) -> Next, Counts) {
    let counts: Counts = Rc::default();
    let mut scrubber = Scrubber {
        rules: rules.to_vec(),
        active: None,
        counts: counts.clone(),
    };
    (move |line: &mut Vec<u8>| scrubber.process(line), counts)
}

/// The rules that apply to the COPY block being read, by column position.
struct Active {
    table: String,
    key_index: usize,
    columns: Vec<(usize, Rule)>,
    delete: Option<Rule>,
}

struct Scrubber {
    rules: Vec<Rule>,
    active: Option<Active>,
    counts: Counts,
}

impl Scrubber {
    /// Rewrites `line` in place; an empty line means "drop it". The rows of tables no rule
    /// touches are skipped.
    fn process(&mut self, line: &mut Vec<u8>) -> Next {
        if let Some(active) = &self.active {
            if line.as_slice() == b"\\.\n" {
                self.active = None;
                return Next::Line;
            }
            let row = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let fields: Vec<&str> = row.split('\t').collect();
            let key = fields.get(active.key_index).copied().unwrap_or("");
            if let Some(rule) = &active.delete {
                *self.counts.borrow_mut().entry(rule.describe()).or_default() += 1;
                line.clear();
                return Next::Line;
            }
            let mut out: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            for (index, rule) in &active.columns {
                if let Some(field) = out.get_mut(*index) {
                    let scrubbed = scrub_field(&active.table, rule, key, field);
                    if scrubbed != *field {
                        *self.counts.borrow_mut().entry(rule.describe()).or_default() += 1;
                        *field = scrubbed;
                    }
                }
            }
            *line = out.join("\t").into_bytes();
            line.push(b'\n');
            return Next::Line;
        }
        if let Some((table, columns)) = copy_header(line) {
            let rules: Vec<&Rule> = self.rules.iter().filter(|r| r.table == table).collect();
            if rules.is_empty() {
                return Next::SkipRows;
            }
            let key_index = columns.iter().position(|c| c == "id").unwrap_or(0);
            let delete = rules
                .iter()
                .find(|r| matches!(r.action, Action::DeleteRows))
                .map(|r| (*r).clone());
            let columns = rules
                .iter()
                .filter_map(|r| {
                    let index = columns.iter().position(|c| Some(c) == r.column.as_ref())?;
                    Some((index, (*r).clone()))
                })
                .collect();
            self.active = Some(Active {
                table,
                key_index,
                columns,
                delete,
            });
        }
        Next::Line
    }
}

/// `COPY public.t (a, "b") FROM stdin;` → `("public.t", ["a", "b"])`.
fn copy_header(line: &[u8]) -> Option<(String, Vec<String>)> {
    let line = std::str::from_utf8(line)
        .ok()?
        .strip_suffix(" FROM stdin;\n")?
        .strip_prefix("COPY ")?;
    let (table, columns) = line.split_once(" (")?;
    let columns = columns.strip_suffix(')')?;
    let unquote = |name: &str| {
        let name = name.trim();
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => name.to_string(),
        }
    };
    let table = table.split('.').map(unquote).collect::<Vec<_>>().join(".");
    Some((table, columns.split(", ").map(unquote).collect()))
}

/// The scrubbed form of one COPY-escaped field.
pub fn scrub_field(table: &str, rule: &Rule, key: &str, field: &str) -> String {
    let column = rule.column.as_deref().unwrap_or("");
    let hash = || {
        hex(&Sha256::digest(
            format!("netpoint-scrub:{table}.{column}:{key}").as_bytes(),
        ))
    };
    match &rule.action {
        Action::Null => "\\N".to_string(),
        Action::Empty if field == "\\N" => field.to_string(),
        Action::Empty => String::new(),
        Action::Value(template) => {
            let hash = hash();
            escape(
                &template
                    .replace("{pk}", &unescape(key))
                    .replace("{hash40}", &hash[..40])
                    .replace("{hash}", &hash),
            )
        }
        Action::UnusablePassword if field == "\\N" => field.to_string(),
        Action::UnusablePassword => format!("!{}", &hash()[..40]),
        Action::FakeEmail if field == "\\N" => field.to_string(),
        Action::FakeEmail => escape(&format!("user-{}@example.invalid", unescape(key))),
        Action::DeleteRows => field.to_string(),
        Action::JsonbRemoveKeys(keys) => {
            if field == "\\N" {
                return field.to_string();
            }
            match serde_json::from_str::<serde_json::Value>(&unescape(field)) {
                Ok(mut value) => {
                    if remove_keys(&mut value, keys) {
                        escape(&jsonb_text(&value))
                    } else {
                        field.to_string()
                    }
                }
                Err(_) => field.to_string(),
            }
        }
        Action::RegexReplace(regex, replacement) => {
            if field == "\\N" {
                return field.to_string();
            }
            let text = unescape(field);
            match regex.replace_all(&text, replacement.as_str()) {
                std::borrow::Cow::Borrowed(_) => field.to_string(),
                std::borrow::Cow::Owned(new) => escape(&new),
            }
        }
    }
}

/// Removes, at any depth, object keys that contain one of `keys` (case-insensitive).
fn remove_keys(value: &mut serde_json::Value, keys: &[String]) -> bool {
    let mut changed = false;
    match value {
        serde_json::Value::Object(map) => {
            let before = map.len();
            map.retain(|k, _| {
                let k = k.to_lowercase();
                !keys.iter().any(|key| k.contains(key.as_str()))
            });
            changed |= map.len() != before;
            for v in map.values_mut() {
                changed |= remove_keys(v, keys);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                changed |= remove_keys(v, keys);
            }
        }
        _ => {}
    }
    changed
}

/// `--scrub-rules` and `--no-scrub`, shared by the commands that read a source.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrubFlags {
    /// TOML rules that extend the built-in NetPoint preset (see README.md, "Scrubbing").
    #[arg(long, value_name = "FILE")]
    pub scrub_rules: Option<std::path::PathBuf>,
    /// Copy secrets and personal data verbatim (not recommended).
    #[arg(long, conflicts_with = "scrub_rules")]
    pub no_scrub: bool,
    /// Fail, changing nothing, when the leak scan finds credential-shaped values in columns
    /// no scrub rule covers (with --no-scrub no column is covered).
    #[arg(long)]
    pub strict: bool,
}

/// The rules that apply to one source database, and those skipped because their table or
/// column is not there.
#[derive(Debug, Default)]
pub struct Plan {
    pub applied: Vec<Rule>,
    pub skipped: Vec<String>,
}

impl ScrubFlags {
    pub fn plan(
        &self,
        sh: &xshell::Shell,
        tools: &PgTools,
        source: &DbUrl,
    ) -> anyhow::Result<Plan> {
        if self.no_scrub {
            term::warn("--no-scrub: secrets and personal data are copied verbatim");
            return Ok(Plan::default());
        }
        let rules = load_rules(self.scrub_rules.as_deref())?;
        let columns = tools.query(
            sh,
            source,
            Access::ReadOnly,
            "select table_schema || '.' || table_name || '|' || column_name || '|' || is_nullable \
             from information_schema.columns where table_schema not in ('pg_catalog', 'information_schema')",
        )?;
        let mut existing = std::collections::HashSet::new();
        let mut not_null = std::collections::HashSet::new();
        for line in columns.lines() {
            if let Some((column, nullable)) = line.rsplit_once('|') {
                existing.insert(column);
                if nullable == "NO" {
                    not_null.insert(column);
                }
            }
        }
        let tables: std::collections::HashSet<&str> = existing
            .iter()
            .filter_map(|l| l.split_once('|'))
            .map(|(t, _)| t)
            .collect();
        let mut plan = Plan::default();
        for rule in rules {
            let present = match &rule.column {
                Some(column) => existing.contains(format!("{}|{column}", rule.table).as_str()),
                None => tables.contains(rule.table.as_str()),
            };
            if let (true, Action::Null, Some(column)) = (present, &rule.action, &rule.column) {
                if not_null.contains(format!("{}|{column}", rule.table).as_str()) {
                    bail!(
                        "scrub rule `{}` would set a NOT NULL column to NULL, which no database can load: \
                         use action \"empty\" or \"value\" for it; nothing was changed",
                        rule.describe()
                    );
                }
            }
            if present {
                plan.applied.push(rule);
            } else {
                plan.skipped.push(rule.describe());
            }
        }
        Ok(plan)
    }
}

impl Plan {
    /// One line for the user: what was scrubbed, how many rows, what was skipped.
    pub fn report(&self, counts: &BTreeMap<String, u64>) -> String {
        let applied: Vec<String> = self
            .applied
            .iter()
            .map(|r| {
                format!(
                    "{} ({} rows)",
                    r.describe(),
                    counts.get(&r.describe()).copied().unwrap_or(0)
                )
            })
            .collect();
        let mut line = format!("scrubbed {}", applied.join(", "));
        if !self.skipped.is_empty() {
            line.push_str(&format!(
                "; skipped (not in this database): {}",
                self.skipped.join(", ")
            ));
        }
        line
    }

    /// What a manifest records: the rules, with the rows each changed when `counts` are
    /// given (fixtures leave them out, since they depend on whether their source was
    /// scrubbed before), and the rules skipped.
    pub fn manifest(&self, counts: Option<&BTreeMap<String, u64>>) -> crate::bundle::ScrubRecord {
        crate::bundle::ScrubRecord {
            rules: self
                .applied
                .iter()
                .map(|r| match counts {
                    Some(counts) => crate::bundle::ScrubbedRule::Counted {
                        rule: r.describe(),
                        rows: counts.get(&r.describe()).copied().unwrap_or(0),
                    },
                    None => crate::bundle::ScrubbedRule::Named(r.describe()),
                })
                .collect(),
            skipped: self.skipped.clone(),
        }
    }

    /// Samples original values from the source that the rules change, and fails if any of
    /// them is found in `target`. Values travel to psql on stdin, never in argv. Three
    /// queries in all, whatever the number of rules.
    pub fn verify(
        &self,
        sh: &xshell::Shell,
        tools: &PgTools,
        source: &DbUrl,
        target: &DbUrl,
        data_excluded: &[String],
    ) -> anyhow::Result<()> {
        // Tables whose data was left out have nothing to check.
        let rules: Vec<&Rule> = self
            .applied
            .iter()
            .filter(|rule| !data_excluded.contains(&rule.table))
            .collect();
        if rules.is_empty() {
            return Ok(());
        }
        let names: Vec<(&str, &str)> = rules
            .iter()
            .map(|rule| {
                rule.table
                    .split_once('.')
                    .unwrap_or(("public", &rule.table))
            })
            .collect();
        let qualified = |n: usize| {
            format!(
                "{}.{}",
                restore::ident(names[n].0),
                restore::ident(names[n].1)
            )
        };
        let values: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(n, (schema, table))| {
                format!(
                    "({n}, {}, {})",
                    restore::literal(schema),
                    restore::literal(table)
                )
            })
            .collect();
        let keys = tools.query(
            sh,
            source,
            Access::ReadOnly,
            &format!(
                "select v.n, coalesce((select column_name from information_schema.columns c where c.table_schema = v.s and c.table_name = v.t and column_name = 'id'), \
                 (select column_name from information_schema.columns c where c.table_schema = v.s and c.table_name = v.t order by ordinal_position limit 1)) \
                 from (values {}) v(n, s, t) order by 1",
                values.join(", ")
            ),
        )?;
        let keys: HashMap<usize, String> = keys
            .lines()
            .filter_map(|row| row.split_once('|'))
            .filter_map(|(n, key)| Some((n.parse().ok()?, key.to_string())))
            .collect();
        let samples: Vec<String> = rules
            .iter()
            .enumerate()
            .filter_map(|(n, rule)| {
                let column = rule.column.as_ref()?;
                let key = keys.get(&n)?;
                Some(format!(
                    "(select {n}, k, v from (select {key}::text k, {col}::text v from {table} where {col} is not null order by {key} limit 20) s{n})",
                    key = restore::ident(key),
                    col = restore::ident(column),
                    table = qualified(n)
                ))
            })
            .collect();
        let mut originals: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        if !samples.is_empty() {
            let sample = tools.query(
                sh,
                source,
                Access::ReadOnly,
                &format!("copy ({}) to stdout", samples.join(" union all ")),
            )?;
            for line in sample.lines() {
                let mut fields = line.splitn(3, '\t');
                let (Some(n), Some(key), Some(value)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let Some(n) = n.parse::<usize>().ok().filter(|&n| n < rules.len()) else {
                    continue;
                };
                let rule = rules[n];
                if !value.is_empty() && scrub_field(&rule.table, rule, key, value) != value {
                    originals
                        .entry(n)
                        .or_default()
                        .push(restore::literal(&unescape(value)));
                }
            }
        }
        let checks: Vec<String> = rules
            .iter()
            .enumerate()
            .filter_map(|(n, rule)| match &rule.column {
                None => Some(format!("select {n}, count(*) from {}", qualified(n))),
                Some(column) => originals.get(&n).map(|values| {
                    format!(
                        "select {n}, count(*) from {} where {}::text in ({})",
                        qualified(n),
                        restore::ident(column),
                        values.join(", ")
                    )
                }),
            })
            .collect();
        if checks.is_empty() {
            return Ok(());
        }
        let found = tools.query_stdin(sh, target, &format!("{};\n", checks.join(" union all ")))?;
        for (n, count) in found.lines().filter_map(|row| row.split_once('|')) {
            let Some(rule) = n.parse::<usize>().ok().and_then(|n| rules.get(n)) else {
                continue;
            };
            if count.trim() == "0" {
                continue;
            }
            match &rule.column {
                None => bail!(
                    "scrub verification failed: {} still has {} rows in the target",
                    rule.table,
                    count.trim()
                ),
                Some(column) => bail!(
                    "scrub verification failed: {} original value(s) of {}.{column} found in the target; the clone was not put in place",
                    count.trim(),
                    rule.table
                ),
            }
        }
        Ok(())
    }
}

/// A JSON value as PostgreSQL prints a jsonb: object keys ordered by length then bytes,
/// `", "` and `": "` separators. Dumps of the loaded value then read the same.
pub fn jsonb_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_jsonb(value, &mut out);
    out
}

fn write_jsonb(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_jsonb(&map[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// COPY text format → the value.
pub fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(d @ '0'..='7') => {
                let mut n = d.to_digit(8).unwrap();
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(v) => {
                            n = n * 8 + v;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(n).unwrap_or('?'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The value → COPY text format.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "COPY public.users_user (id, password, email, \"time\") FROM stdin;\n\
        7\tpbkdf2_sha256$600000$salt$hash\talice@corp.example\t2024\n\
        8\t!already\t\\N\t2024\n\
        \\.\n\
        COPY public.django_session (session_key, session_data, expire_date) FROM stdin;\n\
        abc\tdata\t2030\n\
        \\.\n\
        COPY public.core_datasource (id, source_url, parameters) FROM stdin;\n\
        1\thttps://bot:glpat-SECRET@git.example.com/x.git\t{\"aws_secret_access_key\": \"S3\", \"nested\": [{\"Token\": \"t\", \"ok\": 1}]}\n\
        \\.\n";

    fn scrub(text: &str, rules: &[Rule]) -> (String, BTreeMap<String, u64>) {
        let (mut reader, counts) = scrubbing_reader(text.as_bytes(), rules);
        let mut out = String::new();
        reader.read_to_string(&mut out).unwrap();
        let counts = counts.borrow().clone();
        (out, counts)
    }

    #[test]
    fn preset_scrubs_deterministically() {
        let rules = load_rules(None).unwrap();
        let (out, counts) = scrub(DUMP, &rules);
        assert!(
            !out.contains("pbkdf2")
                && !out.contains("alice@")
                && !out.contains("glpat")
                && !out.contains("S3"),
            "{out}"
        );
        assert!(
            out.contains("7\t!") && out.contains("user-7@example.invalid"),
            "{out}"
        );
        assert!(
            out.contains("8\t!") && out.contains("\t\\N\t2024"),
            "NULL email stays NULL: {out}"
        );
        assert!(!out.contains("abc\tdata"), "sessions deleted");
        assert!(out.contains("https://git.example.com/x.git"), "{out}");
        assert!(
            out.contains("[{\"ok\": 1}]") && !out.contains("Token"),
            "{out}"
        );
        assert_eq!(counts["public.django_session: delete-rows"], 1);
        assert_eq!(counts["public.users_user.email: fake-email"], 1);
        assert_eq!(scrub(DUMP, &rules).0, out, "same input, same bytes");
    }

    #[test]
    fn files_extend_or_replace_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(&file, "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"name\"\naction = \"value\"\nvalue = \"site-{pk}\"\n").unwrap();
        let rules = load_rules(Some(&file)).unwrap();
        assert!(rules.len() > 10 && rules.iter().any(|r| r.table == "public.dcim_site"));
        std::fs::write(
            &file,
            "preset = false\n[[rule]]\ntable = \"x\"\naction = \"delete-rows\"\n",
        )
        .unwrap();
        assert_eq!(load_rules(Some(&file)).unwrap().len(), 1);
        for bad in [
            "[[rule]]\ntable = \"x\"\naction = \"shred\"\n",
            "[[rule]]\ntable = \"x\"\naction = \"null\"\n",
            "not toml [",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(load_rules(Some(&file)).is_err(), "{bad}");
        }
    }

    #[test]
    fn jsonb_text_matches_postgres() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"bb": [1, 2.50], "a": {"ccc": null, "d": "x\"y"}}"#).unwrap();
        assert_eq!(
            jsonb_text(&value),
            r#"{"a": {"d": "x\"y", "ccc": null}, "bb": [1, 2.50]}"#
        );
    }

    #[test]
    fn copy_escaping_round_trips() {
        for value in ["plain", "tab\there", "line\nbreak", "back\\slash", "ünï"] {
            assert_eq!(unescape(&escape(value)), value);
        }
        assert_eq!(unescape("\\101\\x"), "Ax");
    }
}
