//! A loaded subset checked before it replaces anything: every foreign key re-created and
//! valid, no generic reference to a row the subset left out (references that already
//! pointed at nothing in the source are counted), and its size beside the source's.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

use super::{
    keys::{array, Key, BATCH},
    load::Loaded,
    Subset,
};
use crate::{
    context::Context,
    pg::{DbUrl, QuerySession},
    term,
};

/// The foreign keys of the user's schemas: all of them, and the valid ones.
const FOREIGN_KEYS: &str = "\
select json_build_array(count(*), count(*) filter (where con.convalidated))
from pg_constraint con join pg_namespace n on n.oid = con.connamespace
where con.contype = 'f' and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%'";

/// Rows (the planner's estimate) and bytes of each table of the user's schemas.
const SIZES: &str = "\
select coalesce(json_object_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                                json_build_array(greatest(c.reltuples, 0)::float8, pg_total_relation_size(c.oid))), '{}')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%'";

/// What the checks found: the subset's size beside the source's.
pub struct Verified {
    pub rows: u64,
    /// The source's rows, as its planner estimates them.
    pub source_rows: f64,
    pub bytes: u64,
    pub source_bytes: u64,
    /// Generic references that already pointed at nothing in the source, per column.
    pub dangling: BTreeMap<String, u64>,
}

impl Verified {
    /// The closing summary's words for the subset; a share never above 100%.
    pub fn line(&self) -> String {
        let share = |part: f64, whole: f64| match whole > 0.0 {
            true => format!("{:.1}%", (100.0 * part / whole).min(100.0)),
            false => "?%".to_string(),
        };
        let dangling: u64 = self.dangling.values().sum();
        let dangling = match dangling {
            0 => String::new(),
            n => format!(", {n} generic references dangling as in the source"),
        };
        let rows = match self.source_rows >= self.rows as f64 && self.source_rows > 0.0 {
            true => format!(
                "{} rows of about {} ({})",
                self.rows,
                self.source_rows.round() as u64,
                share(self.rows as f64, self.source_rows)
            ),
            false => format!(
                "{} rows (source estimate unknown: run ANALYZE on the source)",
                self.rows
            ),
        };
        format!(
            "subset: {rows}, {} of {} ({}){dangling}",
            term::human_bytes(self.bytes),
            term::human_bytes(self.source_bytes),
            share(self.bytes as f64, self.source_bytes as f64),
        )
    }
}

/// A table's rows beside the planner's estimate of the source's (`reltuples`, -1 or 0 where
/// the table was never analysed): unknown where it is none or smaller than the rows written.
fn table_line(table: &str, written: u64, estimate: f64) -> String {
    match estimate > 0.0 && estimate.round() >= written as f64 {
        true => format!(
            "{table}: {written} rows of about {}",
            estimate.round() as u64
        ),
        false => format!("{table}: {written} rows (estimate unknown)"),
    }
}

/// The source's rows for the closing line: each table's estimate, or the rows written where
/// that is unknown or smaller, so that the share stays a share; 0 when no table has one.
fn estimated_total(tables: &[(u64, f64)]) -> f64 {
    if tables.iter().all(|&(_, estimate)| estimate <= 0.0) {
        return 0.0;
    }
    tables
        .iter()
        .map(|&(written, estimate)| estimate.max(written as f64))
        .sum()
}

impl Subset {
    /// Checks the subset loaded into `temp`; a failure says what is wrong and leaves the
    /// replacement undone.
    pub fn verify(
        &mut self,
        cx: &Context,
        temp: &DbUrl,
        loaded: &Loaded,
    ) -> anyhow::Result<Verified> {
        // One session for every query on the new database; it ends before the swap.
        let session = QuerySession::new(temp);
        let query = |sql: &str| session.query(&cx.sh, &cx.tools, sql);
        let parse = |answer: String| -> anyhow::Result<(u64, u64)> {
            serde_json::from_str(&answer)
                .with_context(|| format!("unexpected answer about foreign keys: {answer}"))
        };
        let (total, valid) = parse(query(FOREIGN_KEYS)?)?;
        let (source_total, source_valid) = parse(self.session.line(&format!("{FOREIGN_KEYS};"))?)?;
        if total != source_total || valid != source_valid {
            bail!(
                "the subset's foreign keys do not match the source's: {valid} of {total} valid where the source has {source_valid} of {source_total}"
            );
        }
        let dangling = self.check_generics(cx, &session)?;
        let sizes = |answer: String| -> anyhow::Result<BTreeMap<String, (f64, u64)>> {
            serde_json::from_str(&answer)
                .with_context(|| format!("unexpected answer about table sizes: {answer}"))
        };
        let source = sizes(self.session.line(&format!("{SIZES};"))?)?;
        let subset = sizes(query(SIZES)?)?;
        let mut rows = 0;
        let mut counted = Vec::new();
        for (table, written) in self.graph.tables.iter().zip(&loaded.rows) {
            rows += written;
            let estimate = source.get(&table.quoted).map_or(0.0, |s| s.0);
            counted.push((*written, estimate));
            if *written > 0 {
                term::detail(table_line(&table.key(), *written, estimate));
            }
        }
        // Tables outside the graph (none today) count with their estimate.
        let known: std::collections::BTreeSet<&str> = self
            .graph
            .tables
            .iter()
            .map(|t| t.quoted.as_str())
            .collect();
        counted.extend(
            source
                .iter()
                .filter(|(name, _)| !known.contains(name.as_str()))
                .map(|(_, s)| (0, s.0)),
        );
        Ok(Verified {
            rows,
            source_rows: estimated_total(&counted),
            bytes: subset.values().map(|s| s.1).sum(),
            source_bytes: source.values().map(|s| s.1).sum(),
            dangling,
        })
    }

    /// The generic references in `temp` that point at no row: refused when the row exists
    /// in the source (the subset left it out), counted when it does not.
    fn check_generics(
        &mut self,
        cx: &Context,
        temp: &QuerySession,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut dangling = BTreeMap::new();
        // The pairs whose columns the table has, each `(pair, child, type, id)`.
        let pairs: Vec<_> = self
            .graph
            .generics
            .iter()
            .filter_map(|g| {
                let child = &self.graph.tables[g.child];
                let tc = &child.column(&g.type_column)?.quoted;
                let ic = &child.column(&g.id_column)?.quoted;
                Some((g, child, tc, ic))
            })
            .collect();
        if pairs.is_empty() {
            return Ok(dangling);
        }
        // Two round trips for every pair together: the content types each names, then the
        // references each holds to no row of the subset.
        // A function takes at most 100 arguments: a schema with more pairs takes more trips.
        let query = |parts: Vec<String>| -> anyhow::Result<String> {
            let arrays = parts
                .chunks(100)
                .map(|chunk| format!("jsonb_build_array({})", chunk.join(", ")))
                .collect::<Vec<_>>()
                .join(" || ");
            temp.query(&cx.sh, &cx.tools, &format!("select {arrays}"))
        };
        let types: Vec<Vec<i64>> = serde_json::from_str(&query(
            pairs
                .iter()
                .map(|(_, child, tc, ic)| {
                    format!(
                        "(select coalesce(jsonb_agg(distinct {tc}), '[]') from {} where {tc} is not null and {ic} is not null)",
                        child.quoted
                    )
                })
                .collect(),
        )?)?;
        let missing: Vec<Vec<(i64, String)>> = serde_json::from_str(&query(
            pairs
                .iter()
                .zip(&types)
                .map(|((_, child, tc, ic), types)| {
                    // Every (type, id) the rows hold, less those whose row is in the subset.
                    let present: Vec<String> = types
                        .iter()
                        .filter_map(|ct| {
                            let p = *self.graph.content_types.get(ct)?;
                            let parent = &self.graph.tables[p];
                            let pk = parent.id()?;
                            Some(format!(
                                "select {ct}::bigint, {}::text from {}",
                                pk.quoted, parent.quoted
                            ))
                        })
                        .collect();
                    let except = match present.is_empty() {
                        true => String::new(),
                        false => format!(" except ({})", present.join(" union all ")),
                    };
                    format!(
                        "(select coalesce(jsonb_agg(jsonb_build_array(m.t, m.i)), '[]') from \
                         (select {tc}::bigint as t, {ic}::text as i from {} where {tc} is not null and {ic} is not null{except}) m)",
                        child.quoted
                    )
                })
                .collect(),
        )?)?;
        for ((g, child, _, _), missing) in pairs.iter().zip(missing) {
            if missing.is_empty() {
                continue;
            }
            // Those that exist in the source were left out; the others dangled there too.
            let mut by_table: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
            for (ct, id) in &missing {
                let Some(&p) = self.graph.content_types.get(ct) else {
                    continue;
                };
                if let Some(key) = Key::parse(&self.graph.tables[p], id) {
                    by_table.entry(p).or_default().push(key);
                }
            }
            for (p, keys) in by_table {
                let parent = &self.graph.tables[p];
                let Some(pk) = parent.id() else { continue };
                for chunk in keys.chunks(BATCH) {
                    let found = self.session.line(&format!(
                        "select count(*) from {} where {} = any({});",
                        parent.quoted,
                        pk.quoted,
                        array(chunk, &pk.sql_type)
                    ))?;
                    if found != "0" {
                        let rows = match found.as_str() {
                            "1" => "1 row".to_string(),
                            n => format!("{n} rows"),
                        };
                        bail!(
                            "the subset is not whole: `{}.{}` names {rows} of `{}` that exist in the source but were left out",
                            child.key(),
                            g.id_column,
                            parent.key()
                        );
                    }
                }
            }
            dangling.insert(
                format!("{}.{}", child.key(), g.id_column),
                missing.len() as u64,
            );
        }
        Ok(dangling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(rows: u64, source_rows: f64) -> Verified {
        Verified {
            rows,
            source_rows,
            bytes: 2048,
            source_bytes: 1024,
            dangling: BTreeMap::new(),
        }
    }

    #[test]
    fn stale_estimates_give_no_share_over_100_percent() {
        let line = verified(43, 68.0).line();
        assert!(
            line.starts_with("subset: 43 rows of about 68 (63.2%), ") && line.ends_with("(100.0%)"),
            "{line}"
        );
        for stale in [0.0, 12.0] {
            let line = verified(43, stale).line();
            assert!(
                line.starts_with("subset: 43 rows (source estimate unknown"),
                "{line}"
            );
        }
        assert_eq!(table_line("t", 5, -1.0), "t: 5 rows (estimate unknown)");
        assert_eq!(table_line("t", 5, 0.0), "t: 5 rows (estimate unknown)");
        assert_eq!(table_line("t", 5, 3.0), "t: 5 rows (estimate unknown)");
        assert_eq!(table_line("t", 5, 9.2), "t: 5 rows of about 9");
        // A table never analysed counts with its rows written; none analysed: unknown.
        assert_eq!(estimated_total(&[(5, 0.0), (3, 10.0), (0, 7.0)]), 22.0);
        assert_eq!(estimated_total(&[(5, 3.0), (0, 7.0)]), 12.0);
        assert_eq!(estimated_total(&[(5, 0.0), (2, -1.0)]), 0.0);
    }
}
