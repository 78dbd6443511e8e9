//! Derived tables (NetBox's cable paths) made consistent with a subset: a derived row is
//! kept only where the included rows reference it and everything it names is in the
//! subset; the references to the rows left out are cleared when the rows are copied.

use std::collections::BTreeSet;

use anyhow::bail;

use super::{
    graph::Graph,
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

/// The rows of derived table `t` to keep: those the included rows reference through the
/// cleared columns whose every node (`<content type>:<id>`) is in the subset.
pub fn kept(
    session: &mut Session,
    graph: &Graph,
    rows: &Included,
    t: usize,
    nodes: Option<&str>,
    clear: &[(usize, String)],
) -> anyhow::Result<BTreeSet<Key>> {
    let table = &graph.tables[t];
    let Some(id) = table.id() else {
        return Ok(BTreeSet::new());
    };
    let mut candidates = BTreeSet::new();
    for (c, column) in clear {
        let child = &graph.tables[*c];
        let (Some(cid), Some(col)) = (child.id(), child.column(column)) else {
            continue;
        };
        let ids: Vec<Key> = rows.ids[*c].iter().cloned().collect();
        for chunk in ids.chunks(BATCH) {
            let texts: Vec<String> = session.json(&format!(
                "select coalesce(jsonb_agg(distinct {col}::text), '[]') from {child} where {cid} = any({ids}) and {col} is not null;",
                col = col.quoted,
                child = child.quoted,
                cid = cid.quoted,
                ids = array(chunk, &cid.sql_type),
            ))?;
            candidates.extend(texts.iter().filter_map(|text| Key::parse(table, text)));
        }
    }
    let Some(nodes) = nodes.and_then(|n| table.column(n)) else {
        return Ok(candidates);
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
    Ok(kept)
}
