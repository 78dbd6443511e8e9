//! The walk's edges as queries: the rows that reference a table's rows, and the rows its
//! rows reference, through a foreign key or a generic foreign key.

use std::collections::BTreeMap;

use super::{Edge, Walk};
use crate::pipeline::subset::{
    graph::Table,
    keys::{array, Key},
};

impl Walk<'_> {
    /// Queues the query for rows of other tables that reference the rows `keys` of table
    /// `t` through `edge`.
    pub(super) fn downward(&mut self, edge: Edge, t: usize, keys: &[Key]) -> anyhow::Result<()> {
        let graph = self.graph;
        match edge {
            Edge::Fk(i) => {
                let fk = &graph.fks[i];
                if fk.parent != t || self.whole[fk.child] {
                    return Ok(());
                }
                let (parent, child) = (&graph.tables[t], &graph.tables[fk.child]);
                let (Some(pid), Some(cid)) = (parent.id(), child.id()) else {
                    return Ok(());
                };
                let sql = match fk.refs == [pid.name.clone()] {
                    true => format!(
                        "select coalesce(jsonb_agg(c.{cid}::text), '[]') from {child} c where c.{col} = any({ids});",
                        cid = cid.quoted,
                        child = child.quoted,
                        col = quoted(child, &fk.columns[0]),
                        ids = array(keys, &pid.sql_type),
                    ),
                    false => format!(
                        "select coalesce(jsonb_agg(c.{cid}::text), '[]') from {child} c where ({cols}) in (select {refs} from {parent} p where p.{pid} = any({ids}));",
                        cid = cid.quoted,
                        child = child.quoted,
                        cols = columns(child, "c", &fk.columns),
                        refs = columns(parent, "p", &fk.refs),
                        parent = parent.quoted,
                        pid = pid.quoted,
                        ids = array(keys, &pid.sql_type),
                    ),
                };
                self.later(fk.child, sql);
                Ok(())
            }
            Edge::Generic(i) => {
                let g = &graph.generics[i];
                let types = graph.types_of(t);
                if types.is_empty() || self.whole[g.child] {
                    return Ok(());
                }
                let child = &graph.tables[g.child];
                let (Some(cid), Some(id_column)) = (child.id(), child.column(&g.id_column)) else {
                    return Ok(());
                };
                // Text ids are compared as text; integer ids only with integer keys.
                let ids: Vec<Key> = match g.text_ids {
                    true => keys.iter().map(|k| Key::Text(k.text().into())).collect(),
                    false => keys
                        .iter()
                        .filter(|k| matches!(k, Key::Int(_)))
                        .cloned()
                        .collect(),
                };
                if ids.is_empty() {
                    return Ok(());
                }
                let types: Vec<String> = types.iter().map(i64::to_string).collect();
                let sql = format!(
                    "select coalesce(jsonb_agg(c.{cid}::text), '[]') from {child} c where c.{tc} = any('{{{types}}}') and c.{ic} = any({ids});",
                    cid = cid.quoted,
                    child = child.quoted,
                    tc = quoted(child, &g.type_column),
                    types = types.join(","),
                    ic = id_column.quoted,
                    ids = array(&ids, &id_column.sql_type),
                );
                self.later(g.child, sql);
                Ok(())
            }
        }
    }

    /// Rows that the rows `keys` of table `t` reference through `edge`: found now through a
    /// generic key, queued through a foreign key.
    pub(super) fn upward(
        &mut self,
        edge: Edge,
        t: usize,
        keys: &[Key],
    ) -> anyhow::Result<Vec<(usize, Key)>> {
        let graph = self.graph;
        match edge {
            Edge::Fk(i) => {
                let fk = &graph.fks[i];
                if fk.child != t || self.whole[fk.parent] {
                    return Ok(Vec::new());
                }
                let (parent, child) = (&graph.tables[fk.parent], &graph.tables[t]);
                let (Some(pid), Some(cid)) = (parent.id(), child.id()) else {
                    return Ok(Vec::new());
                };
                let sql = match fk.refs == [pid.name.clone()] {
                    true => format!(
                        "select coalesce(jsonb_agg(distinct c.{col}::text), '[]') from {child} c where c.{cid} = any({ids}) and c.{col} is not null;",
                        col = quoted(child, &fk.columns[0]),
                        child = child.quoted,
                        cid = cid.quoted,
                        ids = array(keys, &cid.sql_type),
                    ),
                    false => format!(
                        "select coalesce(jsonb_agg(p.{pid}::text), '[]') from {parent} p where ({refs}) in (select {cols} from {child} c where c.{cid} = any({ids}));",
                        pid = pid.quoted,
                        parent = parent.quoted,
                        refs = columns(parent, "p", &fk.refs),
                        cols = columns(child, "c", &fk.columns),
                        child = child.quoted,
                        cid = cid.quoted,
                        ids = array(keys, &cid.sql_type),
                    ),
                };
                self.later(fk.parent, sql);
                Ok(Vec::new())
            }
            Edge::Generic(i) => {
                let g = &graph.generics[i];
                if g.child != t {
                    return Ok(Vec::new());
                }
                let child = &graph.tables[t];
                let Some(cid) = child.id() else {
                    return Ok(Vec::new());
                };
                let sql = format!(
                    "select coalesce(jsonb_agg(distinct jsonb_build_array(c.{tc}, c.{ic}::text)), '[]') from {child} c where c.{cid} = any({ids}) and c.{tc} is not null and c.{ic} is not null;",
                    tc = quoted(child, &g.type_column),
                    ic = quoted(child, &g.id_column),
                    child = child.quoted,
                    cid = cid.quoted,
                    ids = array(keys, &cid.sql_type),
                );
                let pairs: Vec<(i64, String)> = self.session.json(&sql)?;
                let mut by_table: BTreeMap<usize, Vec<Key>> = BTreeMap::new();
                let mut unnamed = 0;
                for (content_type, id) in pairs {
                    let Some(&p) = graph.content_types.get(&content_type) else {
                        unnamed += 1;
                        continue;
                    };
                    match Key::parse(&graph.tables[p], &id) {
                        Some(key) => by_table.entry(p).or_default().push(key),
                        None => unnamed += 1,
                    }
                }
                let mut found = Vec::new();
                let mut missing = unnamed;
                for (p, wanted) in by_table {
                    let parent = &graph.tables[p];
                    let Some(pid) = parent.id() else {
                        continue;
                    };
                    let existing = self.keys_of(
                        p,
                        &format!(
                            "select coalesce(jsonb_agg({pk}::text), '[]') from {parent} where {pk} = any({ids});",
                            pk = pid.quoted,
                            parent = parent.quoted,
                            ids = array(&wanted, &pid.sql_type),
                        ),
                    )?;
                    missing += (wanted.len() - existing.len()) as u64;
                    found.extend(existing);
                }
                if missing > 0 {
                    let name = format!("{}.{}", child.key(), g.id_column);
                    *self.dangling.entry(name).or_default() += missing;
                }
                Ok(found)
            }
        }
    }
}

fn quoted(table: &Table, column: &str) -> String {
    table
        .column(column)
        .map_or_else(|| crate::pg::sql::ident(column), |c| c.quoted.clone())
}

fn columns(table: &Table, alias: &str, names: &[String]) -> String {
    names
        .iter()
        .map(|c| format!("{alias}.{}", quoted(table, c)))
        .collect::<Vec<_>>()
        .join(", ")
}
