//! The closure: from the root rows, every row that belongs to them (followed downward, only
//! from rows that belong to a root) and every row an included row points at (followed
//! upward from every included row), through foreign keys and generic foreign keys, to a
//! fixpoint. The ids found so far stay here and travel to the source as array literals.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};

use anyhow::bail;

mod edges;

use super::{
    derived,
    graph::Graph,
    keys::{Key, BATCH},
    roots::{check_condition, sampled},
    rules::{Root, Rules},
    session::Session,
};

/// What a table contributes to the subset.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub ids: BTreeSet<Key>,
    /// Kept whole: every row, tracked or not (a table without a single-column key).
    pub whole: bool,
    /// A derived table: `ids` are the rows kept.
    pub derived: bool,
}

/// The subset's rows, table by table (by index into the graph's tables).
pub struct Closure {
    pub rows: Vec<Rows>,
    /// Generic references from included rows to rows that do not exist (history keeps
    /// deleted objects), per table and column.
    pub dangling: BTreeMap<String, u64>,
    /// The commands that rebuild derived tables, with the table.
    pub rebuild: Vec<(String, String)>,
    /// What the subset did to each derived table the source has.
    pub derived: Vec<derived::Outcome>,
}

/// An edge of the graph the closure follows.
#[derive(Clone, Copy, Debug)]
enum Edge {
    Fk(usize),
    Generic(usize),
}

struct Walk<'a> {
    session: &'a mut Session,
    graph: &'a Graph,
    /// The rows included, each marked when it belongs to a root (followed downward): one
    /// map, not two sets, as a subset of a million rows must stay small.
    included: Vec<BTreeMap<Key, bool>>,
    /// Rows newly owned, to follow downward; rows newly included, to follow upward.
    down: Vec<Vec<Key>>,
    up: Vec<Vec<Key>>,
    whole: Vec<bool>,
    derived: Vec<bool>,
    cut: BTreeSet<(usize, String)>,
    follow_down: BTreeSet<(usize, String)>,
    dangling: BTreeMap<String, u64>,
    /// Queries for keys, each with the table of the keys it returns, sent together.
    batch: Vec<(usize, String)>,
}

/// Finds the tables and columns the rules name in the graph: preset entries a database lacks
/// are passed over, a file's must exist.
pub(super) fn resolve(
    graph: &Graph,
    name: &str,
    origin: &str,
    column: bool,
) -> anyhow::Result<Option<(usize, String)>> {
    let preset = origin.starts_with("the built-in preset");
    let (table, col) = match column {
        true => name.rsplit_once('.').map_or((name, ""), |(t, c)| (t, c)),
        false => (name, ""),
    };
    let Some(t) = graph.find(table) else {
        return match preset {
            true => Ok(None),
            false => bail!(
                "subset rules {origin}: unknown table `{table}`; check its name in the source"
            ),
        };
    };
    if column && graph.tables[t].column(col).is_none() {
        return match preset {
            true => Ok(None),
            false => bail!("subset rules {origin}: the table `{table}` has no column `{col}`"),
        };
    }
    Ok(Some((t, col.to_string())))
}

/// The closure of `roots` under `rules`, with `sample` (a percentage) of each root's rows.
pub fn compute(
    session: &mut Session,
    graph: &Graph,
    rules: &Rules,
    roots: &[Root],
    sample: Option<f64>,
) -> anyhow::Result<Closure> {
    let n = graph.tables.len();
    let mut walk = Walk {
        session,
        graph,
        included: vec![BTreeMap::new(); n],
        down: vec![Vec::new(); n],
        up: vec![Vec::new(); n],
        whole: vec![false; n],
        derived: vec![false; n],
        cut: BTreeSet::new(),
        follow_down: BTreeSet::new(),
        dangling: BTreeMap::new(),
        batch: Vec::new(),
    };
    for entry in &rules.cut {
        walk.cut
            .extend(resolve(graph, &entry.name, &entry.origin, true)?);
    }
    for entry in &rules.follow_down {
        walk.follow_down
            .extend(resolve(graph, &entry.name, &entry.origin, true)?);
    }
    let mut rebuild = Vec::new();
    let mut derived = Vec::new();
    let mut commands = BTreeMap::new();
    for d in &rules.derived {
        let Some((t, _)) = resolve(graph, &d.table.name, &d.table.origin, false)? else {
            continue;
        };
        walk.derived[t] = true;
        let mut clear = Vec::new();
        for entry in &d.clear {
            if let Some(found) = resolve(graph, &entry.name, &entry.origin, true)? {
                clear.push(found);
            }
        }
        if let Some(nodes) = &d.nodes {
            if graph.tables[t].column(nodes).is_none() {
                bail!(
                    "subset rules {}: the derived table `{}` has no column `{nodes}`",
                    d.table.origin,
                    d.table.name
                );
            }
        }
        if let Some(command) = &d.rebuild {
            rebuild.push((graph.tables[t].key(), command.clone()));
        }
        commands.insert(t, d.rebuild.clone());
        derived.push((t, d.nodes.clone(), clear, d.table.origin.clone()));
    }
    derived::check_clears(graph, &derived)?;
    for entry in &rules.whole {
        if let Some((t, _)) = resolve(graph, &entry.name, &entry.origin, false)? {
            walk.whole[t] = !walk.derived[t];
        }
    }

    for root in roots {
        walk.root(root, sample)?;
    }
    for t in 0..n {
        if walk.whole[t] && graph.tables[t].id().is_some() {
            let table = &graph.tables[t];
            let pk = &table.id().unwrap().quoted;
            let ids: Vec<String> = walk.session.json(&format!(
                "select coalesce(jsonb_agg({pk}::text), '[]') from {};",
                table.quoted
            ))?;
            for id in ids {
                if let Some(key) = Key::parse(table, &id) {
                    walk.include(t, key);
                }
            }
        }
    }
    walk.fixpoint()?;

    let mut rows: Vec<Rows> = (0..n)
        .map(|t| Rows {
            ids: std::mem::take(&mut walk.included[t]).into_keys().collect(),
            whole: walk.whole[t],
            derived: walk.derived[t],
        })
        .collect();
    let whole: Vec<bool> = rows.iter().map(|r| r.whole).collect();
    let included: Vec<&BTreeSet<Key>> = rows.iter().map(|r| &r.ids).collect();
    let mut kept = Vec::new();
    let mut outcomes = Vec::new();
    for (t, nodes, clear, _) in &derived {
        let rows = derived::Included {
            ids: &included,
            whole: &whole,
        };
        let (ids, references) =
            derived::kept(walk.session, graph, &rows, *t, nodes.as_deref(), clear)?;
        let table = &graph.tables[*t];
        let (source_rows, estimated) = derived::source_rows(walk.session, table)?;
        let pointed: BTreeSet<&Key> = references.iter().flat_map(|(_, keys)| keys).collect();
        outcomes.push(derived::Outcome {
            table: table.key(),
            source_rows,
            estimated,
            kept: ids.len() as u64,
            left_out: pointed.iter().filter(|k| !ids.contains(k)).count() as u64,
            cleared: references
                .iter()
                .map(|(column, keys)| {
                    let n = keys.iter().filter(|k| !ids.contains(k)).count();
                    (column.clone(), n as u64)
                })
                .collect(),
            rebuild: commands.get(t).cloned().flatten(),
        });
        kept.push((*t, ids));
    }
    for (t, ids) in kept {
        rows[t].ids = ids;
    }
    Ok(Closure {
        rows,
        dangling: walk.dangling,
        rebuild,
        derived: outcomes,
    })
}

impl Walk<'_> {
    fn include(&mut self, t: usize, key: Key) {
        if let Entry::Vacant(entry) = self.included[t].entry(key.clone()) {
            entry.insert(false);
            self.up[t].push(key);
        }
    }

    fn own(&mut self, t: usize, key: Key) {
        match self.included[t].entry(key.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(true);
                self.down[t].push(key.clone());
                self.up[t].push(key);
            }
            Entry::Occupied(mut entry) => {
                if !entry.insert(true) {
                    self.down[t].push(key);
                }
            }
        }
    }

    fn root(&mut self, root: &Root, sample: Option<f64>) -> anyhow::Result<()> {
        let shown = &root.shown;
        let Some(t) = self.graph.find(&root.table) else {
            bail!(
                "root {shown:?}: unknown table `{}`; check its name in the source",
                root.table
            );
        };
        let table = &self.graph.tables[t];
        let Some(id) = table.id() else {
            bail!("root {shown:?}: `{}` has no single-column primary key, so its rows cannot be followed; start from a table that has one", root.table);
        };
        if self.derived[t] {
            bail!("root {shown:?}: `{}` is a derived table, rebuilt after loading; start from the objects it is derived from", root.table);
        }
        check_condition(&root.condition).map_err(|why| {
            anyhow::anyhow!("root {shown:?}: {why}; write one SQL condition on the table's columns")
        })?;
        let ids: Vec<String> = self
            .session
            .json(&format!(
                "select coalesce(jsonb_agg({pk}::text), '[]') from {table} where ({condition}\n);",
                pk = id.quoted,
                table = table.quoted,
                condition = root.condition
            ))
            .map_err(|err| anyhow::anyhow!("root {shown:?}: {err}; fix the condition"))?;
        if ids.is_empty() {
            bail!(
                "root {shown:?} matches no row of `{}`: check the condition against the source",
                root.table
            );
        }
        let total = ids.len();
        let mut kept = 0;
        for text in ids {
            if sample.is_some_and(|pct| !sampled(&text, pct)) {
                continue;
            }
            if let Some(key) = Key::parse(table, &text) {
                self.own(t, key);
                kept += 1;
            }
        }
        if kept == 0 {
            bail!("root {shown:?}: the sample keeps none of its {total} rows; raise the sample's share");
        }
        Ok(())
    }

    /// Edges out of the table's rows' reach: cut, or into or out of a derived table.
    fn skipped(&self, edge: Edge) -> bool {
        match edge {
            Edge::Fk(i) => {
                let fk = &self.graph.fks[i];
                self.derived[fk.child]
                    || self.derived[fk.parent]
                    || fk
                        .columns
                        .iter()
                        .any(|c| self.cut.contains(&(fk.child, c.clone())))
            }
            Edge::Generic(i) => {
                let g = &self.graph.generics[i];
                self.derived[g.child]
                    || self.cut.contains(&(g.child, g.id_column.clone()))
                    || self.cut.contains(&(g.child, g.type_column.clone()))
            }
        }
    }

    fn fixpoint(&mut self) -> anyhow::Result<()> {
        let edges: Vec<Edge> = (0..self.graph.fks.len())
            .map(Edge::Fk)
            .chain((0..self.graph.generics.len()).map(Edge::Generic))
            .filter(|&e| !self.skipped(e))
            .collect();
        // Every table's pending keys go out together, in statements of about BATCH keys: a
        // round trip per step of the walk, not per table and step.
        loop {
            let down = take_pending(&mut self.down);
            if !down.is_empty() {
                let mut queued = 0;
                for (t, keys) in &down {
                    for chunk in keys.chunks(BATCH) {
                        for &edge in &edges {
                            self.downward(edge, *t, chunk)?;
                        }
                        queued += chunk.len();
                        if queued >= BATCH {
                            queued = 0;
                            for (child, key) in self.send_batch()? {
                                self.own(child, key);
                            }
                        }
                    }
                }
                for (child, key) in self.send_batch()? {
                    self.own(child, key);
                }
                continue;
            }
            let up = take_pending(&mut self.up);
            if up.is_empty() {
                return Ok(());
            }
            let mut queued = 0;
            for (t, keys) in &up {
                for chunk in keys.chunks(BATCH) {
                    for &edge in &edges {
                        for (parent, key) in self.upward(edge, *t, chunk)? {
                            self.include(parent, key);
                        }
                        if self.always_down(edge) {
                            self.downward(edge, *t, chunk)?;
                        }
                    }
                    queued += chunk.len();
                    if queued >= BATCH {
                        queued = 0;
                        for (table, key) in self.send_batch()? {
                            self.include(table, key);
                        }
                    }
                }
            }
            for (table, key) in self.send_batch()? {
                self.include(table, key);
            }
        }
    }

    fn always_down(&self, edge: Edge) -> bool {
        match edge {
            Edge::Fk(i) => {
                let fk = &self.graph.fks[i];
                fk.columns
                    .iter()
                    .any(|c| self.follow_down.contains(&(fk.child, c.clone())))
            }
            Edge::Generic(i) => {
                let g = &self.graph.generics[i];
                self.follow_down.contains(&(g.child, g.id_column.clone()))
            }
        }
    }

    /// Queues a query for keys of table `t` (one JSON array of text), sent by
    /// [`Walk::send_batch`] with the others in one round trip.
    fn later(&mut self, t: usize, sql: String) {
        self.batch.push((t, sql));
    }

    /// Runs the queued queries as one statement; the keys they found.
    fn send_batch(&mut self) -> anyhow::Result<Vec<(usize, Key)>> {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let queries: Vec<&str> = batch.iter().map(|(_, sql)| sql.as_str()).collect();
        let answers: Vec<Vec<String>> = self.session.json(&batch_sql(&queries))?;
        let mut keys = Vec::new();
        for ((t, _), texts) in batch.iter().zip(answers) {
            let table = &self.graph.tables[*t];
            keys.extend(
                texts
                    .iter()
                    .filter_map(|text| Some((*t, Key::parse(table, text)?))),
            );
        }
        Ok(keys)
    }

    fn keys_of(&mut self, t: usize, sql: &str) -> anyhow::Result<Vec<(usize, Key)>> {
        let texts: Vec<String> = self.session.json(sql)?;
        let table = &self.graph.tables[t];
        Ok(texts
            .iter()
            .filter_map(|text| Some((t, Key::parse(table, text)?)))
            .collect())
    }
}

/// One statement answering `queries` (each one JSON array) as an array of their answers, in
/// order. A function takes at most 100 arguments: the arrays of a hundred are concatenated.
fn batch_sql(queries: &[&str]) -> String {
    let arrays: Vec<String> = queries
        .chunks(100)
        .map(|chunk| {
            let parts: Vec<String> = chunk
                .iter()
                .map(|sql| format!("({})", sql.trim_end_matches(';')))
                .collect();
            format!("jsonb_build_array({})", parts.join(",\n"))
        })
        .collect();
    format!("select {};", arrays.join("\n|| "))
}

/// The keys waiting in each table's queue, taken out of it.
fn take_pending(queues: &mut [Vec<Key>]) -> Vec<(usize, Vec<Key>)> {
    queues
        .iter_mut()
        .enumerate()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(t, keys)| (t, std::mem::take(keys)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_passes_no_function_over_100_arguments() {
        assert_eq!(
            batch_sql(&["select '[]';", "select '[1]'"]),
            "select jsonb_build_array((select '[]'),\n(select '[1]'));"
        );
        let queries = vec!["select '[]'"; 250];
        let sql = batch_sql(&queries);
        let calls: Vec<&str> = sql.split("jsonb_build_array(").skip(1).collect();
        assert_eq!(calls.len(), 3);
        for call in calls {
            assert!(call.matches("(select '[]')").count() <= 100, "{call}");
        }
        assert_eq!(sql.matches("(select '[]')").count(), 250);
        assert_eq!(sql.matches("\n|| ").count(), 2);
    }
}
