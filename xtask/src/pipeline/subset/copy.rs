//! The subset's rows in the form pg_dump writes them (`COPY t (cols) FROM stdin;`, the
//! rows, `\.`), read in the closure's snapshot, with references to derived rows left out
//! cleared.

use std::io::Write;

use anyhow::Context;

use super::{
    closure::Closure,
    graph::{Graph, Table},
    keys::{array, Key, BATCH},
    session::Session,
};

/// The `COPY` header pg_dump writes for `table`, and the select list of its rows, with the
/// references to derived rows left out cleared.
fn select_list(graph: &Graph, closure: &Closure, t: usize) -> (String, String) {
    let table = &graph.tables[t];
    let columns: Vec<_> = table.columns.iter().filter(|c| !c.generated).collect();
    let header = format!(
        "COPY {} ({}) FROM stdin;\n",
        table.quoted,
        columns
            .iter()
            .map(|c| c.quoted.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let exprs = columns
        .iter()
        .map(|c| {
            let target = graph.fks.iter().find(|fk| {
                fk.child == t && fk.columns == [c.name.clone()] && closure.rows[fk.parent].derived
            });
            match target.and_then(|fk| graph.tables[fk.parent].id().map(|id| (fk.parent, id))) {
                Some((p, id)) => {
                    let kept: Vec<Key> = closure.rows[p].ids.iter().cloned().collect();
                    format!(
                        "case when {col} = any({kept}) then {col} end as {col}",
                        col = c.quoted,
                        kept = array(&kept, &id.sql_type)
                    )
                }
                None => c.quoted.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    (header, exprs)
}

/// Writes table `t`'s rows of the subset as a pg_dump `COPY` block; returns the rows written.
pub fn write_table(
    session: &mut Session,
    graph: &Graph,
    closure: &Closure,
    t: usize,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let table: &Table = &graph.tables[t];
    let (header, exprs) = select_list(graph, closure, t);
    // pg_dump's entry header, which a bundle's table of contents reads.
    write!(
        out,
        "--\n-- Data for Name: {}; Type: TABLE DATA; Schema: {}; Owner: -\n--\n\n{header}",
        table.name, table.schema
    )?;
    let rows = &closure.rows[t];
    let mut written = 0;
    match (rows.whole && !rows.derived, table.id()) {
        (true, id) => {
            let order = id.map_or(String::new(), |id| format!(" order by {}", id.quoted));
            written += session
                .copy_out(&format!("select {exprs} from {}{order}", table.quoted), out)
                .with_context(|| format!("copying `{}` from the source", table.key()))?;
        }
        (false, Some(id)) => {
            let ids: Vec<Key> = rows.ids.iter().cloned().collect();
            for chunk in ids.chunks(BATCH) {
                let query = format!(
                    "select {exprs} from {table} where {pk} = any({ids}) order by {pk}",
                    table = table.quoted,
                    pk = id.quoted,
                    ids = array(chunk, &id.sql_type),
                );
                written += session
                    .copy_out(&query, out)
                    .with_context(|| format!("copying `{}` from the source", table.key()))?;
            }
        }
        (false, None) => {}
    }
    out.write_all(b"\\.\n\n")?;
    Ok(written)
}
