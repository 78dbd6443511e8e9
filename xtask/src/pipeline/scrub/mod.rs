//! Scrubbing: secrets and personal data rewritten in the dump stream, between `pg_dump` and
//! its destination, so they never reach a file or a dev database.
//!
//! Rules come from a TOML file (`preset.toml` is NetPoint's, built in), read strictly
//! ([`rules`]); they are planned against the source's tables here, applied to the stream by
//! [`rewrite`], and checked against the loaded copy by [`Plan::verify`]. Each rewritten value
//! is derived from the table, column and row key, so the same row always scrubs to the same
//! bytes.

pub mod coverage;
mod redact;
mod rewrite;
mod rules;
mod verify;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io::Read,
    sync::Arc,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;

pub use rewrite::{scrubber, Counts};
pub use rules::{Action, Rule};

use crate::{
    context::Context,
    pg::{sql::ident, Access, DbUrl},
    plain::lines,
    remedy::{refuse, Remedy},
    term,
};
use rewrite::{scrub_field, Row};

/// The preset as planned for a database whose tables are all in `schema`, for tests.
#[cfg(test)]
pub fn preset_in(schema: &str) -> Vec<Rule> {
    rules::load_rules(None)
        .expect("the preset parses")
        .into_iter()
        .map(|rule| Rule {
            table: format!("{schema}.{}", rule.table),
            ..rule
        })
        .collect()
}

/// Wraps a plain dump so that the rows of ruled tables come out scrubbed.
pub fn scrubbing_reader<R: Read>(input: R, rules: &[Rule]) -> (impl Read, Counts) {
    let (scrub, counts) = scrubber(rules);
    (lines::edit_lines(input, scrub), counts)
}

/// How a source is scrubbed, for the commands that read one.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// TOML rules that extend the built-in NetPoint preset.
    pub rules: Option<std::path::PathBuf>,
    /// Copy secrets and personal data verbatim.
    pub no_scrub: bool,
    /// Refuse, changing nothing, when the leak scan finds credential-shaped values in
    /// columns no scrub rule covers, or when columns that can hold text are neither scrubbed
    /// nor kept by the coverage file.
    pub strict: bool,
    /// The project's coverage file, if not the one at [`coverage::PROJECT_FILE`].
    pub coverage: Option<std::path::PathBuf>,
}

/// The rules that apply to one source database, and those skipped because their table or
/// column is not there.
#[derive(Debug, Default)]
pub struct Plan {
    pub applied: Vec<Rule>,
    pub skipped: Vec<String>,
}

/// A column of the source, as the plan needs it.
#[derive(Deserialize)]
struct Column {
    schema: String,
    table: String,
    column: String,
    nullable: bool,
    /// A type that takes text: character types, `citext`, `name`.
    textual: bool,
    /// `json` or `jsonb`.
    #[serde(default)]
    json: bool,
    /// A type the coverage check covers (see [`coverage::in_scope`]).
    #[serde(default)]
    scope: bool,
}

/// What the plan reads of the source: its columns, which tables inherit from (or are
/// partitions of) which, and whether it holds a Django application.
#[derive(Deserialize)]
struct Catalog {
    columns: Vec<Column>,
    /// `[child, parent]`, as `schema.table`.
    children: Vec<(String, String)>,
}

const CATALOG_QUERY: &str = "select json_build_object(\
 'columns', coalesce((select json_agg(json_build_object('schema', table_schema, 'table', table_name, 'column', column_name, \
   'nullable', is_nullable = 'YES', 'textual', data_type in ('text', 'character varying', 'character', 'name') or udt_name = 'citext', \
   'json', data_type in ('json', 'jsonb'), \
   'scope', (data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'inet', 'cidr', 'macaddr', 'macaddr8', 'bytea') \
     or udt_name in ('citext', '_text', '_varchar', '_bpchar', '_json', '_jsonb', '_inet', '_cidr', '_macaddr', '_macaddr8', '_bytea', '_citext')) \
     and (table_schema, table_name) in (select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'))) \
   from information_schema.columns where table_schema not in ('pg_catalog', 'information_schema') and table_schema not like 'pg\\_%'), '[]'), \
 'children', coalesce((select json_agg(json_build_array(cn.nspname || '.' || c.relname, pn.nspname || '.' || p.relname)) \
   from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace cn on cn.oid = c.relnamespace \
   join pg_class p on p.oid = i.inhparent join pg_namespace pn on pn.oid = p.relnamespace), '[]'))";

impl Options {
    pub fn plan(&self, cx: &Context, source: &DbUrl) -> anyhow::Result<Plan> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        if self.no_scrub {
            return Ok(Plan::default());
        }
        let rules = rules::load_rules(self.rules.as_deref())?;
        let answer = tools.query(sh, source, Access::ReadOnly, CATALOG_QUERY)?;
        let catalog: Catalog = serde_json::from_str(&answer)
            .with_context(|| format!("reading the columns of {source}"))?;
        let mut plan = plan_rules(rules, &catalog)?;
        let file = self.coverage.clone();
        let file = file.unwrap_or_else(|| cx.sh.current_dir().join(coverage::PROJECT_FILE));
        unaccounted_columns(cx, source, &catalog, &plan, &file, self.strict)?;
        if let Some(file) = &self.rules {
            // A preset rule for a table this database lacks is normal; one of the user's
            // is most likely a misspelt table or column, which would scrub nothing.
            let preset: BTreeSet<String> = rules::load_rules(None)?
                .iter()
                .map(Rule::describe)
                .collect();
            for skipped in plan.skipped.iter().filter(|s| !preset.contains(*s)) {
                term::warn(format!(
                    "scrub rule `{skipped}` of {} matches no table or column of {source}: it changes nothing; check its spelling",
                    file.display()
                ));
            }
        }
        // Changelog rules scrub each snapshot by the rules of the model it records.
        let changelog_schemas: BTreeSet<&str> = plan
            .applied
            .iter()
            .filter(|r| {
                matches!(
                    r.action,
                    Action::ChangelogSnapshot(_) | Action::ChangelogRepr(..)
                )
            })
            .filter_map(|r| r.table.split_once('.').map(|(schema, _)| schema))
            .collect();
        let mut models = HashMap::new();
        for schema in changelog_schemas {
            let has_types = catalog
                .columns
                .iter()
                .any(|c| c.schema == schema && c.table == "django_content_type");
            let content_types: Vec<(i64, String, String)> = match has_types {
                false => Vec::new(),
                true => {
                    let answer = tools.query(
                        sh,
                        source,
                        Access::ReadOnly,
                        &format!(
                            "select coalesce(json_agg(json_build_array(id, app_label, model)), '[]') from {}.django_content_type",
                            ident(schema)
                        ),
                    )?;
                    serde_json::from_str(&answer)
                        .with_context(|| format!("reading the content types of {source}"))?
                }
            };
            models.insert(
                schema.to_string(),
                Arc::new(rewrite::models(&plan.applied, schema, &content_types)),
            );
        }
        for rule in &mut plan.applied {
            let schema = rule.table.split_once('.').map_or("", |(s, _)| s);
            match &mut rule.action {
                Action::ChangelogSnapshot(of) | Action::ChangelogRepr(of, _) => {
                    if let Some(found) = models.get(schema) {
                        *of = found.clone();
                    }
                }
                _ => {}
            }
        }
        if plan.applied.is_empty() {
            return Err(refuse(
                Remedy::ScrubRulesOrNoScrub,
                format!("no scrub rule applies to any table of {source}, so secrets and personal data would be copied verbatim"),
            ));
        }
        Ok(plan)
    }
}

/// Says how many columns that can hold text would be copied verbatim with neither a rule nor
/// an entry of the coverage file to account for them; refuses them when `strict`.
fn unaccounted_columns(
    cx: &Context,
    source: &DbUrl,
    catalog: &Catalog,
    plan: &Plan,
    file: &std::path::Path,
    strict: bool,
) -> anyhow::Result<()> {
    let kept = coverage::load(file, &term::display_path(&cx.sh, file))?;
    let columns: Vec<coverage::Column> = catalog
        .columns
        .iter()
        .map(|c| coverage::Column {
            schema: c.schema.clone(),
            table: c.table.clone(),
            name: c.column.clone(),
            data_type: String::new(),
            in_scope: c.scope,
        })
        .collect();
    let found = coverage::unaccounted(&columns, &plan.applied, &kept);
    if found.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = found
        .iter()
        .map(|c| format!("{}.{}.{}", c.schema, c.table, c.name))
        .collect();
    if names.len() > 10 {
        let more = names.len() - 10;
        names.truncate(10);
        names.push(format!("and {more} more"));
    }
    let message = format!(
        "{} column(s) of {source} that can hold text would be copied verbatim, and no scrub rule or coverage entry accounts for them: {}",
        found.len(),
        names.join(", ")
    );
    if strict {
        return Err(refuse(
            Remedy::ClassifyColumns,
            format!("{message}; nothing was changed"),
        ));
    }
    term::warn(message);
    Ok(())
}

/// The rules resolved against a source's tables: a table named without a schema is found
/// in whichever schemas hold it, a rule on a parent table covers its partitions and
/// inheritance children, and a rule that could not load is refused.
fn plan_rules(rules: Vec<Rule>, catalog: &Catalog) -> anyhow::Result<Plan> {
    let mut tables: BTreeMap<String, Vec<&Column>> = BTreeMap::new();
    let mut by_name: HashMap<&str, Vec<String>> = HashMap::new();
    for column in &catalog.columns {
        let table = format!("{}.{}", column.schema, column.table);
        let columns = tables.entry(table.clone()).or_default();
        if columns.is_empty() {
            by_name
                .entry(column.table.as_str())
                .or_default()
                .push(table);
        }
        columns.push(column);
    }
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (child, parent) in &catalog.children {
        children
            .entry(parent.as_str())
            .or_default()
            .push(child.as_str());
    }
    let descendants = |table: &str| -> Vec<String> {
        let mut found = Vec::new();
        let mut queue = vec![table.to_string()];
        let mut seen = HashSet::new();
        while let Some(next) = queue.pop() {
            for child in children.get(next.as_str()).into_iter().flatten() {
                if seen.insert(child.to_string()) {
                    found.push(child.to_string());
                    queue.push(child.to_string());
                }
            }
        }
        found
    };
    let mut plan = Plan::default();
    let mut applied: BTreeMap<(String, Option<String>), Rule> = BTreeMap::new();
    for rule in rules {
        let targets: Vec<String> = match rule.table.split_once('.') {
            Some(_) => tables
                .contains_key(&rule.table)
                .then(|| rule.table.clone())
                .into_iter()
                .collect(),
            None => by_name
                .get(rule.table.as_str())
                .cloned()
                .unwrap_or_default(),
        };
        let targets: Vec<String> = targets
            .into_iter()
            .flat_map(|table| {
                let below = descendants(&table);
                std::iter::once(table).chain(below)
            })
            .collect();
        let mut present = false;
        for table in targets {
            let column = match &rule.column {
                None => None,
                Some(name) => match tables[&table].iter().find(|c| &c.column == name) {
                    Some(column) => Some(*column),
                    None => continue,
                },
            };
            if let Some(column) = column {
                let at = format!("{table}.{}", column.column);
                if matches!(rule.action, Action::Null) && !column.nullable {
                    bail!(
                        "scrub rule `{}` would set the NOT NULL column {at} to NULL, which no database can load: \
                         use action \"empty\" or \"value\" for it; nothing was changed",
                        rule.describe()
                    );
                }
                if matches!(rule.action, Action::EmptyObject) && !(column.textual || column.json) {
                    bail!(
                        "scrub rule `{}` would write {{}} into {at}, which is neither a JSON nor a text column and could not load: \
                         use action \"null\" or a rule of its own for it; nothing was changed",
                        rule.describe()
                    );
                }
                if rule.writes_text() && !column.textual {
                    bail!(
                        "scrub rule `{}` would write text into {at}, which is not a text column and could not load: \
                         use action \"null\" or a rule of its own for it; nothing was changed",
                        rule.describe()
                    );
                }
            }
            present = true;
            let planned = Rule {
                table: table.clone(),
                ..rule.clone()
            };
            // A rule naming its schema wins over one that does not, whatever their order.
            let key = (table, rule.column.clone());
            if rule.table.contains('.') || !applied.contains_key(&key) {
                applied.insert(key, planned);
            }
        }
        if !present {
            plan.skipped.push(rule.describe());
        }
    }
    plan.applied = applied.into_values().collect();
    Ok(plan)
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
        match (self.skipped.len(), term::verbose()) {
            (0, _) => {}
            (_, true) => line.push_str(&format!(
                "; skipped (not in this database): {}",
                self.skipped.join(", ")
            )),
            (n, false) => line.push_str(&format!(
                "; {n} rules skipped (not in this database; -v lists them)"
            )),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(columns: &[(&str, &str, &str, bool, bool)], children: &[(&str, &str)]) -> Catalog {
        Catalog {
            columns: columns
                .iter()
                .map(|&(schema, table, column, nullable, textual)| Column {
                    scope: textual,
                    schema: schema.into(),
                    table: table.into(),
                    column: column.into(),
                    nullable,
                    textual,
                    json: !textual,
                })
                .collect(),
            children: children
                .iter()
                .map(|&(c, p)| (c.to_string(), p.to_string()))
                .collect(),
        }
    }

    fn rule(table: &str, column: Option<&str>, action: Action) -> Rule {
        Rule {
            table: table.into(),
            column: column.map(str::to_string),
            action,
        }
    }

    #[test]
    fn rules_find_tables_in_any_schema_and_cover_children() {
        let catalog = catalog(
            &[
                ("netbox", "users_user", "email", true, true),
                ("netbox", "events", "payload", true, true),
                ("netbox", "events_2024", "payload", true, true),
                ("netbox", "events_2024_q1", "payload", true, true),
                ("netbox", "events_archive", "payload", true, true),
            ],
            &[
                ("netbox.events_2024", "netbox.events"),
                ("netbox.events_2024_q1", "netbox.events_2024"),
                ("netbox.events_archive", "netbox.events"),
            ],
        );
        let plan = plan_rules(
            vec![
                rule("users_user", Some("email"), Action::FakeEmail),
                rule("users_token", None, Action::DeleteRows),
                rule("events", Some("payload"), Action::RedactSecrets),
                rule("netbox.events_archive", Some("payload"), Action::Empty),
            ],
            &catalog,
        )
        .unwrap();
        let applied: Vec<String> = plan.applied.iter().map(Rule::describe).collect();
        assert_eq!(
            applied,
            [
                "netbox.events.payload: redact-secrets",
                "netbox.events_2024.payload: redact-secrets",
                "netbox.events_2024_q1.payload: redact-secrets",
                "netbox.events_archive.payload: empty",
                "netbox.users_user.email: fake-email",
            ]
        );
        assert_eq!(plan.skipped, ["users_token: delete-rows"]);
    }

    #[test]
    fn rules_that_could_not_load_are_refused() {
        let catalog = catalog(
            &[
                ("public", "t", "required", false, true),
                ("public", "t", "count", true, false),
            ],
            &[],
        );
        let null = plan_rules(vec![rule("t", Some("required"), Action::Null)], &catalog);
        assert!(format!("{:#}", null.unwrap_err()).contains("NOT NULL column public.t.required"));
        let text = plan_rules(vec![rule("t", Some("count"), Action::Empty)], &catalog);
        assert!(format!("{:#}", text.unwrap_err()).contains("not a text column"));
    }
}
