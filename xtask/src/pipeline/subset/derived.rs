//! Derived tables (NetBox's cable paths) made consistent with a subset: a derived row is
//! kept only where the included rows reference it and everything it names is in the
//! subset; the references to the rows left out are cleared when the rows are copied.

use std::collections::BTreeSet;

use anyhow::bail;

use super::{
    graph::{Graph, Table},
    keys::{array, Key, BATCH},
    session::Session,
};

/// The rows included so far, per table, and which tables are kept whole.
pub struct Included<'a> {
    pub ids: &'a [&'a BTreeSet<Key>],
    pub whole: &'a [bool],
}

/// A derived table, its nodes column and the columns (table, column) cleared, and where the
/// rules declared it.
pub type DerivedPlan = (usize, Option<String>, Vec<(usize, String)>, String);

/// Every foreign key into a derived table must be one its rules clear, and nullable.
pub fn check_clears(graph: &Graph, derived: &[DerivedPlan]) -> anyhow::Result<()> {
    for (t, _, clear, origin) in derived {
        let name = graph.tables[*t].key();
        for fk in graph
            .fks
            .iter()
            .filter(|fk| fk.parent == *t && fk.child != *t)
        {
            let child = &graph.tables[fk.child];
            let [column] = fk.columns.as_slice() else {
                bail!("subset rules {origin}: `{}` references the derived table `{name}` through several columns, which cannot be cleared", child.key());
            };
            if !clear.contains(&(fk.child, column.clone())) {
                bail!("subset rules {origin}: `{}.{column}` references the derived table `{name}`: add it to that table's `clear`", child.key());
            }
        }
        for (c, column) in clear {
            let child = &graph.tables[*c];
            let refers = graph
                .fks
                .iter()
                .any(|fk| fk.child == *c && fk.parent == *t && fk.columns == [column.clone()]);
            let nullable = child.column(column).is_some_and(|col| col.nullable);
            if !refers || !nullable {
                bail!("subset rules {origin}: `clear` names `{}.{column}`, which is not a nullable reference to `{name}`", child.key());
            }
        }
    }
    Ok(())
}

/// The references from included rows to a derived table's rows, per `table.column`.
pub type References = Vec<(String, Vec<Key>)>;

/// Rows of a derived table counted for the summary; beyond, the planner's estimate: a
/// subset's time does not grow with the source's search cache.
pub const COUNTED: u64 = 100_000;

/// The rows of `table` in the source: exact up to [`COUNTED`], else the planner's estimate
/// (never below what was counted); whether it is the estimate.
pub fn source_rows(session: &mut Session, table: &Table) -> anyhow::Result<(u64, bool)> {
    let (counted, estimate): (u64, i64) = session.json(&format!(
        "select json_build_array((select count(*) from (select from {quoted} limit {limit}) x), \
         (select reltuples::bigint from pg_class where oid = {oid}::regclass));",
        quoted = table.quoted,
        limit = COUNTED + 1,
        oid = crate::pg::sql::literal(&table.quoted),
    ))?;
    Ok(match counted > COUNTED {
        true => (counted.max(estimate.max(0) as u64), true),
        false => (counted, false),
    })
}

/// What the subset did to a derived table, for the closing summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `table` as rules and output name it.
    pub table: String,
    /// The source's rows: counted up to [`COUNTED`], the planner's estimate beyond.
    pub source_rows: u64,
    pub estimated: bool,
    /// The rows kept.
    pub kept: u64,
    /// Rows the included rows reference but that name a row outside the subset: left out.
    pub left_out: u64,
    /// References to those rows cleared, per `table.column`.
    pub cleared: Vec<(String, u64)>,
    pub rebuild: Option<String>,
}

impl Outcome {
    /// The summary's line, or none when the subset holds the table as the source does.
    pub fn line(&self) -> Option<String> {
        let rebuild = match &self.rebuild {
            Some(command) => format!("; rebuild with `{command}`"),
            None => String::new(),
        };
        let cleared: u64 = self.cleared.iter().map(|(_, n)| n).sum();
        if self.kept == 0 && self.left_out == 0 && cleared == 0 {
            return match self.source_rows {
                0 => None,
                n => Some(format!(
                    "derived: `{}` emptied ({}{n} rows in the source){rebuild}",
                    self.table,
                    if self.estimated { "about " } else { "" }
                )),
            };
        }
        if self.left_out == 0 && cleared == 0 {
            return None;
        }
        let columns = self
            .cleared
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(column, n)| format!("{column} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = match columns.is_empty() {
            true => String::new(),
            false => format!(" ({columns})"),
        };
        Some(format!(
            "derived: `{}` {} rows kept, {} left out as they run through rows outside the subset, {cleared} references to them cleared{columns}{rebuild}",
            self.table, self.kept, self.left_out
        ))
    }
}

/// The rows of derived table `t` to keep: those the included rows reference through the
/// cleared columns whose every node (`<content type>:<id>`) is in the subset; and the
/// references to the others, per cleared column.
pub fn kept(
    session: &mut Session,
    graph: &Graph,
    rows: &Included,
    t: usize,
    nodes: Option<&str>,
    clear: &[(usize, String)],
) -> anyhow::Result<(BTreeSet<Key>, References)> {
    let table = &graph.tables[t];
    let Some(id) = table.id() else {
        return Ok((BTreeSet::new(), Vec::new()));
    };
    let mut candidates = BTreeSet::new();
    let mut references = Vec::new();
    for (c, column) in clear {
        let child = &graph.tables[*c];
        let (Some(cid), Some(col)) = (child.id(), child.column(column)) else {
            continue;
        };
        let ids: Vec<Key> = rows.ids[*c].iter().cloned().collect();
        let mut pointed = Vec::new();
        for chunk in ids.chunks(BATCH) {
            let texts: Vec<String> = session.json(&format!(
                "select coalesce(jsonb_agg({col}::text), '[]') from {child} where {cid} = any({ids}) and {col} is not null;",
                col = col.quoted,
                child = child.quoted,
                cid = cid.quoted,
                ids = array(chunk, &cid.sql_type),
            ))?;
            pointed.extend(texts.iter().filter_map(|text| Key::parse(table, text)));
        }
        candidates.extend(pointed.iter().cloned());
        references.push((format!("{}.{column}", child.key()), pointed));
    }
    let Some(nodes) = nodes.and_then(|n| table.column(n)) else {
        return Ok((candidates, references));
    };
    let candidates: Vec<Key> = candidates.into_iter().collect();
    let mut kept = BTreeSet::new();
    for chunk in candidates.chunks(BATCH) {
        let found: Vec<(String, Vec<String>)> = session.json(&format!(
            "select coalesce(jsonb_agg(jsonb_build_array({pk}::text, {nodes})), '[]') from {table} where {pk} = any({ids});",
            pk = id.quoted,
            nodes = nodes.quoted,
            table = table.quoted,
            ids = array(chunk, &id.sql_type),
        ))?;
        for (pk, path) in found {
            let inside = path.iter().all(|node| {
                node.split_once(':').is_some_and(|(ct, object)| {
                    ct.parse::<i64>()
                        .ok()
                        .and_then(|ct| graph.content_types.get(&ct))
                        .is_some_and(|&p| {
                            rows.whole[p]
                                || Key::parse(&graph.tables[p], object)
                                    .is_some_and(|key| rows.ids[p].contains(&key))
                        })
                })
            });
            if let (true, Some(key)) = (inside, Key::parse(table, &pk)) {
                kept.insert(key);
            }
        }
    }
    Ok((kept, references))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_what_was_left_out_and_the_rebuild() {
        let paths = Outcome {
            table: "dcim_cablepath".into(),
            source_rows: 5,
            estimated: false,
            kept: 2,
            left_out: 1,
            cleared: vec![
                ("dcim_interface._path_id".into(), 1),
                ("dcim_powerport._path_id".into(), 0),
            ],
            rebuild: Some("manage.py trace_paths".into()),
        };
        assert_eq!(
            paths.line().unwrap(),
            "derived: `dcim_cablepath` 2 rows kept, 1 left out as they run through rows outside the subset, 1 references to them cleared (dcim_interface._path_id 1); rebuild with `manage.py trace_paths`"
        );
        let whole = Outcome {
            left_out: 0,
            cleared: vec![("dcim_interface._path_id".into(), 0)],
            ..paths.clone()
        };
        assert_eq!(whole.line(), None, "nothing to rebuild");
        let cache = Outcome {
            table: "extras_cachedvalue".into(),
            source_rows: 40,
            rebuild: Some("manage.py reindex".into()),
            ..Outcome::default()
        };
        assert_eq!(
            cache.line().unwrap(),
            "derived: `extras_cachedvalue` emptied (40 rows in the source); rebuild with `manage.py reindex`"
        );
        let large = Outcome {
            source_rows: 1_500_000,
            estimated: true,
            ..cache.clone()
        };
        assert_eq!(
            large.line().unwrap(),
            "derived: `extras_cachedvalue` emptied (about 1500000 rows in the source); rebuild with `manage.py reindex`"
        );
        assert_eq!(
            Outcome {
                source_rows: 0,
                ..cache
            }
            .line(),
            None
        );
    }
}
