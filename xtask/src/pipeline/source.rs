//! What is read of the source before a dump: its server, its encoding, and the tables whose
//! data is left out, resolved by pg_dump's own pattern rules.

use anyhow::{bail, Context as _};

use crate::{
    context::Context,
    pg::{
        sql::{literal, qualified},
        Access, DbUrl, Server,
    },
    term,
};

/// Changelog tables whose data is left out unless --with-changelog is given.
pub const CHANGELOG_TABLES: &[&str] = &["extras_objectchange", "core_objectchange"];

/// Tables whose data the dump leaves out, resolved once on the source by pg_dump's own
/// pattern rules, so that every path, the manifest and the summary use the same list.
#[derive(Debug, Default)]
pub struct Exclusions {
    /// `schema.table` and the planner's estimate of its rows (`None`: never analysed).
    pub tables: Vec<(String, Option<i64>)>,
    /// The same tables as exact, quoted `--exclude-table-data` patterns.
    pub patterns: Vec<String>,
}

/// Resolves the patterns of tables whose data is left out; `given` are the user's own,
/// which are warned about when they match nothing.
pub fn excluded_tables(
    cx: &Context,
    source: &DbUrl,
    patterns: &[String],
    given: &[String],
) -> anyhow::Result<Exclusions> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    if patterns.is_empty() {
        return Ok(Exclusions::default());
    }
    let mut selects = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let parts =
            pattern_regexes(pattern).with_context(|| format!("table pattern `{pattern}`"))?;
        let condition = match &parts[..] {
            [name] => format!(
                "c.relname ~ {} and pg_catalog.pg_table_is_visible(c.oid)",
                literal(name)
            ),
            [schema, name] => format!(
                "n.nspname ~ {} and c.relname ~ {}",
                literal(schema),
                literal(name)
            ),
            _ => unreachable!("pattern_regexes refuses more than two parts"),
        };
        selects.push(format!(
            "select {i} as i, n.nspname as s, c.relname as t, \
             case when c.reltuples >= 0 then c.reltuples::bigint end as r from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm', 'f') and {condition}"
        ));
    }
    // One query for all patterns: every psql call is a connection.
    let answer = tools.query(
        sh,
        source,
        Access::ReadOnly,
        &format!(
            "select coalesce(json_agg(json_build_array(i, s, t, r) order by s, t), '[]') from ({}) x",
            selects.join(" union all ")
        ),
    )?;
    let rows: Vec<(usize, String, String, Option<i64>)> = serde_json::from_str(&answer)
        .with_context(|| {
            format!("unexpected answer from {source} about excluded tables: {answer}")
        })?;
    for (i, pattern) in patterns.iter().enumerate() {
        if given.contains(pattern) && !rows.iter().any(|(j, ..)| *j == i) {
            term::warn(format!(
                "table pattern `{pattern}` (data left out) matches no table of {source}"
            ));
        }
    }
    let mut exclusions = Exclusions::default();
    for (_, schema, table, estimate) in rows {
        let name = format!("{schema}.{table}");
        if !exclusions.tables.iter().any(|(n, _)| *n == name) {
            exclusions.tables.push((name, estimate));
            exclusions.patterns.push(qualified(&schema, &table));
        }
    }
    Ok(exclusions)
}

/// The anchored regular expressions, one per dotted part, that pg_dump makes of a name
/// pattern: unquoted letters fold to lower case, `*` and `?` are wildcards, `.` separates
/// schema from table, double quotes keep everything literal.
pub fn pattern_regexes(pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut in_quotes = false;
    let mut chars = pattern.trim().chars().peekable();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().expect("one part at least");
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => in_quotes = !in_quotes,
            '*' if !in_quotes => part.push_str(".*"),
            '?' if !in_quotes => part.push('.'),
            '.' if !in_quotes => parts.push(String::new()),
            '$' => part.push_str("\\$"),
            c if !in_quotes => part.extend(c.to_lowercase()),
            c => {
                if "|*+?()[]{}.^\\".contains(c) {
                    part.push('\\');
                }
                part.push(c);
            }
        }
    }
    if in_quotes {
        bail!("unterminated quoted name");
    }
    if parts.len() > 2 {
        bail!("a pattern is `table` or `schema.table`");
    }
    Ok(parts.into_iter().map(|p| format!("^({p})$")).collect())
}

pub fn source_server(cx: &Context, source: &DbUrl) -> anyhow::Result<Server> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let server = tools.server(sh, source, Access::ReadOnly)?;
    tools.check_dump_compatible(sh, &server)?;
    Ok(server)
}

pub fn database_encoding(cx: &Context, url: &DbUrl) -> anyhow::Result<String> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    tools.query(
        sh,
        url,
        Access::ReadOnly,
        "select pg_encoding_to_char(encoding) from pg_database where datname = current_database()",
    )
}
