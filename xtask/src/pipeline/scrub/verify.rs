//! Verification of a scrub: original values the rules change, sampled from the source,
//! must not be found in the loaded copy.

use anyhow::{bail, Context as _};

use std::collections::{BTreeMap, HashMap};

use xshell::Shell;

use super::{scrub_field, Plan, Row, Rule};
use crate::{
    pg::{
        sql::{ident, literal},
        Access, DbUrl, PgTools,
    },
    plain::copy::unescape,
};

impl Plan {
    /// Samples original values from the source that the rules change, and fails if any of
    /// them is found in `target`. Values travel to psql on stdin, never in argv. Three
    /// queries in all, whatever the number of rules.
    pub fn verify(
        &self,
        (sh, tools): (&Shell, &PgTools),
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
        let qualified = |n: usize| format!("{}.{}", ident(names[n].0), ident(names[n].1));
        let values: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(n, (schema, table))| format!("({n}, {}, {})", literal(schema), literal(table)))
            .collect();
        let keys = tools.query(
            sh,
            source,
            Access::ReadOnly,
            &format!(
                "select coalesce(json_object_agg(v.n, coalesce((select column_name from information_schema.columns c where c.table_schema = v.s and c.table_name = v.t and column_name = 'id'), \
                 (select column_name from information_schema.columns c where c.table_schema = v.s and c.table_name = v.t order by ordinal_position limit 1))), '{{}}') \
                 from (values {}) v(n, s, t)",
                values.join(", ")
            ),
        )?;
        let keys: HashMap<usize, Option<String>> = serde_json::from_str(&keys)
            .with_context(|| format!("reading the key columns of {source}"))?;
        let keys: HashMap<usize, String> = keys
            .into_iter()
            .filter_map(|(n, key)| Some((n, key?)))
            .collect();
        let samples: Vec<String> = rules
            .iter()
            .enumerate()
            .filter_map(|(n, rule)| {
                let column = rule.column.as_ref()?;
                let key = keys.get(&n)?;
                Some(format!(
                    "(select {n}, k, v from (select {key}::text k, {col}::text v from {table} where {col} is not null order by {key} limit 20) s{n})",
                    key = ident(key),
                    col = ident(column),
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
                if !value.is_empty()
                    && scrub_field(&rule.table, rule, key, value, &Row::NONE) != value
                {
                    // By row: a fake may be another row's original value (user 3 faked as
                    // `user-3` while user 4 is named so), which is no leak.
                    originals.entry(n).or_default().push(format!(
                        "({}, {})",
                        literal(&unescape(key)),
                        literal(&unescape(value))
                    ));
                }
            }
        }
        let checks: Vec<String> = rules
            .iter()
            .enumerate()
            .filter_map(|(n, rule)| match &rule.column {
                None => Some(format!("select {n}, count(*) from {}", qualified(n))),
                Some(column) => originals.get(&n).zip(keys.get(&n)).map(|(values, key)| {
                    format!(
                        "select {n}, count(*) from {} where ({}::text, {}::text) in ({})",
                        qualified(n),
                        ident(key),
                        ident(column),
                        values.join(", ")
                    )
                }),
            })
            .collect();
        if checks.is_empty() {
            return Ok(());
        }
        let found = tools.query_stdin(
            sh,
            target,
            &format!(
                "select coalesce(json_agg(json_build_array(n, c)), '[]') from ({}) found(n, c);\n",
                checks.join(" union all ")
            ),
        )?;
        let found: Vec<(usize, i64)> = serde_json::from_str(&found)
            .with_context(|| format!("reading the scrub check of {target}"))?;
        for (n, count) in found {
            let Some(rule) = rules.get(n) else {
                continue;
            };
            if count == 0 {
                continue;
            }
            match &rule.column {
                None => bail!(
                    "scrub verification failed: {} still has {} rows in the target",
                    rule.table,
                    count
                ),
                Some(column) => bail!(
                    "scrub verification failed: {} original value(s) of {}.{column} found in the target; the clone was not put in place",
                    count,
                    rule.table
                ),
            }
        }
        Ok(())
    }
}
