//! Subsets of production: root rows (a condition, a named subset, a sample), everything that
//! belongs to them and everything they point at, through foreign keys and Django's generic
//! foreign keys, computed and copied from one read-only snapshot of the source.

pub mod closure;
pub mod copy;
pub mod derived;
pub mod files;
pub mod graph;
pub mod keys;
pub mod load;
pub mod roots;
pub mod rules;
pub mod session;
pub mod template;
pub mod verify;

use std::io::Write;

use anyhow::bail;

use crate::context::Context;
use crate::pg::DbUrl;

pub use closure::Closure;
pub use graph::Graph;
pub use keys::Key;
pub use rules::{Root, Rules};
use session::Session;

/// A subset computed in one snapshot of the source, whose rows are read in that snapshot.
pub struct Subset {
    session: Session,
    pub graph: Graph,
    pub closure: Closure,
    /// pg_dump's schema sections of the snapshot, dumped while the closure was computed.
    schema: Option<template::Dumping>,
    ready: Option<template::Schema>,
    /// A copy of the schema's template, made meanwhile when asked for.
    pub prepared: Option<template::Prepared>,
    /// Why the target server's template may not serve, when it may not.
    template_refused: Option<String>,
}

impl Subset {
    /// Opens a read-only snapshot of `source`, reads its graph and computes the closure of
    /// `roots` (each with `sample` percent of its rows, when given).
    pub fn compute(
        cx: &Context,
        source: &DbUrl,
        rules: &Rules,
        roots: &[Root],
        sample: Option<f64>,
    ) -> anyhow::Result<Subset> {
        let session = Subset::open(cx, source, roots)?;
        Subset::compute_beside(cx, session, rules, roots, sample, None)
    }

    /// Checks the roots' conditions, then opens the subset's session on `source`: on the
    /// thread that stays for the whole run (a tool started on a thread dies with it).
    pub fn open(cx: &Context, source: &DbUrl, roots: &[Root]) -> anyhow::Result<Session> {
        if roots.is_empty() {
            bail!("a subset needs at least one root: a table and a condition (TABLE: CONDITION) or a named subset (NAME=VALUE)");
        }
        // A condition that is not one expression is refused before anything is opened.
        for root in roots {
            roots::check_condition(&root.condition).map_err(|why| {
                anyhow::anyhow!(
                    "root {:?}: {why}; write one SQL condition on the table's columns",
                    root.shown
                )
            })?;
        }
        Session::open(cx, source)
    }

    /// [`Subset::compute`] in the `session` [`Subset::open`] opened, beside other work
    /// (`beside`): the subset's queries stop when it is abandoned, and once the dumps are
    /// done the schema's template is copied on the target's server (if the run sends it),
    /// so that the copy is ready when the load begins.
    pub fn compute_beside(
        cx: &Context,
        mut session: Session,
        rules: &Rules,
        roots: &[Root],
        sample: Option<f64>,
        beside: Option<template::Beside<'_>>,
    ) -> anyhow::Result<Subset> {
        let source = &session.source().clone();
        let snapshot = session.export_snapshot()?;
        let dumping = template::Dumping::start(cx, source, &snapshot)?;
        let walk = |session: &mut Session| -> anyhow::Result<(Graph, Closure)> {
            let graph = Graph::read(session, rules)?;
            let closure = closure::compute(session, &graph, rules, roots, sample)?;
            Ok((graph, closure))
        };
        let Some(beside) = beside else {
            let (graph, closure) = walk(&mut session)?;
            return Ok(Subset {
                session,
                graph,
                closure,
                schema: Some(dumping),
                ready: None,
                prepared: None,
                template_refused: None,
            });
        };
        session.abandon_when(beside.abandon);
        let early = beside.early;
        let (walked, copied) = std::thread::scope(|scope| {
            let copy = scope.spawn(move || {
                let schema = dumping.wait()?;
                match early.recv() {
                    Ok(Some(early)) => early.prepare(schema),
                    _ => Ok((schema, None, None)),
                }
            });
            let walked = walk(&mut session);
            let copied = copy
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (walked, copied)
        });
        let (graph, closure) = match walked {
            Ok(walked) => walked,
            Err(err) => {
                if let Ok((_, Some(prepared), _)) = copied {
                    prepared.discard(cx);
                }
                return Err(err);
            }
        };
        let (schema, prepared, template_refused) = copied?;
        Ok(Subset {
            session,
            graph,
            closure,
            schema: None,
            ready: Some(schema),
            prepared,
            template_refused,
        })
    }

    /// pg_dump's schema sections of the subset's snapshot, once: the load and the script
    /// take them.
    pub fn schema(&mut self) -> anyhow::Result<template::Schema> {
        if let Some(schema) = self.ready.take() {
            return Ok(schema);
        }
        match self.schema.take() {
            Some(dumping) => dumping.wait(),
            None => bail!("the subset's schema was already taken"),
        }
    }

    /// Why the subset's rows cannot go into a copy of the schema's template, if they cannot
    /// (see [`template`]).
    pub fn unfit_for_template(&self, schema: &template::Schema) -> Option<String> {
        if let Some(why) = &self.template_refused {
            return Some(why.clone());
        }
        let picked: usize = self.closure.rows.iter().map(|r| r.ids.len()).sum();
        if picked > template::MAX_ROWS {
            return Some(format!(
                "{picked} rows load faster before their indexes than into them"
            ));
        }
        if self.graph.load_order().is_none() {
            return Some("foreign keys that cannot be deferred form a cycle".to_string());
        }
        schema.unfit()
    }

    /// Table `t`'s block in pg_dump's `COPY ... FROM stdin` form; returns its rows.
    pub fn write_table(&mut self, t: usize, out: &mut dyn Write) -> anyhow::Result<u64> {
        copy::write_table(&mut self.session, &self.graph, &self.closure, t, out)
    }

    /// Every table's block, parents before children (see [`Graph::load_order`]).
    pub fn write_all(&mut self, out: &mut dyn Write) -> anyhow::Result<u64> {
        let mut total = 0;
        for t in self.graph.load_order_or_catalog() {
            total += self.write_table(t, out)?;
        }
        Ok(total)
    }

    /// The closing summary's lines for the derived tables the subset changed: one a table,
    /// with what was left out or cleared and the command that rebuilds it.
    pub fn derived_lines(&self) -> Vec<String> {
        self.closure
            .derived
            .iter()
            .filter_map(derived::Outcome::line)
            .collect()
    }

    /// The rows per table (tables with none left out), the dangling generic references and
    /// the rebuild commands, as JSON.
    pub fn plan_json(&self) -> serde_json::Value {
        let mut tables = serde_json::Map::new();
        for (table, rows) in self.graph.tables.iter().zip(&self.closure.rows) {
            if rows.ids.is_empty() && !rows.whole {
                continue;
            }
            let ids: Vec<serde_json::Value> = rows
                .ids
                .iter()
                .map(|key| match key {
                    Key::Int(n) => serde_json::Value::from(*n),
                    Key::Text(text) => serde_json::Value::from(text.as_ref()),
                })
                .collect();
            tables.insert(
                table.key(),
                serde_json::json!({
                    "count": ids.len(),
                    "whole": rows.whole,
                    "derived": rows.derived,
                    "ids": ids,
                }),
            );
        }
        serde_json::json!({
            "tables": tables,
            "dangling": self.closure.dangling,
            "rebuild": self.closure.rebuild.iter()
                .map(|(table, command)| serde_json::json!({"table": table, "command": command}))
                .collect::<Vec<_>>(),
            "derived": self.closure.derived.iter()
                .map(|d| serde_json::json!({
                    "table": d.table,
                    "source_rows": d.source_rows,
                    "source_rows_estimated": d.estimated,
                    "kept": d.kept,
                    "left_out": d.left_out,
                    "cleared": d.cleared.iter()
                        .map(|(column, n)| (column.clone(), serde_json::Value::from(*n)))
                        .collect::<serde_json::Map<_, _>>(),
                    "rebuild": d.rebuild,
                }))
                .collect::<Vec<_>>(),
        })
    }
}
