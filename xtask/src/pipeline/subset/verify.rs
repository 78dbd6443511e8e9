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
    pg::{Access, DbUrl},
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
    /// The closing summary's words for the subset.
    pub fn line(&self) -> String {
        let share = |part: f64, whole: f64| match whole > 0.0 {
            true => format!("{:.1}%", 100.0 * part / whole),
            false => "?%".to_string(),
        };
        let dangling: u64 = self.dangling.values().sum();
        let dangling = match dangling {
            0 => String::new(),
            n => format!(", {n} generic references dangling as in the source"),
        };
        let rows = match self.source_rows > 0.0 {
            true => format!(
                "{} rows of about {} ({})",
                self.rows,
                self.source_rows.round() as u64,
                share(self.rows as f64, self.source_rows)
            ),
            false => format!("{} rows (the source has no row estimates yet)", self.rows),
        };
        format!(
            "subset: {rows}, {} of {} ({}){dangling}",
            term::human_bytes(self.bytes),
            term::human_bytes(self.source_bytes),
            share(self.bytes as f64, self.source_bytes as f64),
        )
    }
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
        let query = |sql: &str| cx.tools.query(&cx.sh, temp, Access::ReadWrite, sql);
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
        let dangling = self.check_generics(cx, temp)?;
        let sizes = |answer: String| -> anyhow::Result<BTreeMap<String, (f64, u64)>> {
            serde_json::from_str(&answer)
                .with_context(|| format!("unexpected answer about table sizes: {answer}"))
        };
        let source = sizes(self.session.line(&format!("{SIZES};"))?)?;
        let subset = sizes(query(SIZES)?)?;
        let mut rows = 0;
        for (table, written) in self.graph.tables.iter().zip(&loaded.rows) {
            rows += written;
            if *written > 0 {
                let estimate = source.get(&table.quoted).map_or(0.0, |s| s.0);
                term::detail(format!(
                    "{}: {written} rows of about {}",
                    table.key(),
                    estimate.round() as u64
                ));
            }
        }
        Ok(Verified {
            rows,
            source_rows: source.values().map(|s| s.0).sum(),
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
        temp: &DbUrl,
    ) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut dangling = BTreeMap::new();
        for g in &self.graph.generics {
            let child = &self.graph.tables[g.child];
            let (Some(tc), Some(ic)) = (child.column(&g.type_column), child.column(&g.id_column))
            else {
                continue;
            };
            let (tc, ic) = (&tc.quoted, &ic.quoted);
            let query = |sql: String| -> anyhow::Result<String> {
                cx.tools.query(&cx.sh, temp, Access::ReadWrite, &sql)
            };
            let types: Vec<i64> = serde_json::from_str(&query(format!(
                "select coalesce(jsonb_agg(distinct {tc}), '[]') from {} where {tc} is not null and {ic} is not null",
                child.quoted
            ))?)?;
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
            let missing: Vec<(i64, String)> = serde_json::from_str(&query(format!(
                "select coalesce(jsonb_agg(jsonb_build_array(m.t, m.i)), '[]') from \
                 (select {tc}::bigint as t, {ic}::text as i from {} where {tc} is not null and {ic} is not null{except}) m",
                child.quoted
            ))?)?;
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
