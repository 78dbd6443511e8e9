//! A subset loaded into a new database: pg_dump's pre-data, then the subset's rows as `COPY`
//! blocks (leak-scanned and scrubbed as they pass, the tables whose data is left out empty)
//! and every sequence set to the source's value, then pg_dump's post-data, whose foreign keys
//! check the rows as they are created. Everything is read in the subset's one snapshot.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufWriter, Read, Write},
};

use anyhow::Context as _;
use serde::Deserialize;

use super::Subset;
use crate::{
    context::Context,
    pg::{sql::literal, DbUrl},
    pipeline::{leak_scan, load, scrub},
};

use super::template::{run_post, Schema};

/// What the fill of a subset does to the rows on their way, and what it leaves out.
pub struct Fill<'a> {
    /// `schema.table` of each table whose data is left out (the changelog, ...).
    pub left_out: &'a [String],
    pub rules: &'a [scrub::Rule],
    pub scan: Option<&'a leak_scan::Scanner>,
    /// The `SET` lines of pg_dump's output an older target would reject.
    pub drop_settings: Vec<&'static str>,
}

/// What a subset's load wrote.
pub struct Loaded {
    /// The rows written, per table of the graph.
    pub rows: Vec<u64>,
    /// The rows each scrub rule touched.
    pub scrubbed: BTreeMap<String, u64>,
    /// The sequences set.
    pub sequences: usize,
}

/// One sequence of the source: its quoted name and the value `setval` gives it back.
#[derive(Deserialize)]
struct Sequence {
    name: String,
    last: Option<i64>,
    called: Option<bool>,
}

/// A sequence's names: quoted (`schema.name`, as `setval` takes it) and as pg_dump's entry
/// header gives them.
#[derive(Deserialize)]
struct SequenceName {
    quoted: String,
    schema: String,
    name: String,
}

const SEQUENCES: &str = "\
select coalesce(jsonb_agg(jsonb_build_object('quoted', quote_ident(n.nspname) || '.' || quote_ident(c.relname),
  'schema', n.nspname, 'name', c.relname) order by n.nspname, c.relname), '[]')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'S' and n.nspname <> 'information_schema' and n.nspname not like 'pg\\_%'
  and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                  and d.objid = c.oid and d.deptype = 'e');";

impl Subset {
    /// Fills `temp` with the subset; `on_bytes` counts what psql reads. With `templated`,
    /// `temp` is a copy of the schema's template and takes the rows alone (see
    /// [`super::template`]); otherwise it is empty and takes pg_dump's pre-data, the rows,
    /// then the post-data on `cx.jobs` sessions, as a parallel clone's.
    pub fn fill(
        &mut self,
        cx: &Context,
        fill: &Fill,
        schema: &Schema,
        templated: bool,
        temp: &DbUrl,
        on_bytes: &dyn Fn(u64),
    ) -> anyhow::Result<Loaded> {
        if templated {
            return self.load_rows(cx, fill, temp, true, on_bytes);
        }
        let psql = load::spawn_psql_load(cx, temp)?;
        let mut pre = Schema::section(&schema.pre, fill.drop_settings.clone());
        load::feed_psql(temp, psql, &mut pre, on_bytes)
            .context("loading the schema's pre-data section")?;
        let loaded = self.load_rows(cx, fill, temp, false, on_bytes)?;
        let sizes: HashMap<String, u64> = self
            .graph
            .tables
            .iter()
            .zip(&loaded.rows)
            .map(|(table, rows)| (table.quoted.clone(), *rows))
            .collect();
        run_post(cx, temp, &schema.post, &fill.drop_settings, &sizes, true)?;
        Ok(loaded)
    }

    /// The subset as one plain script in pg_dump's layout, as a bundle holds it: pg_dump's
    /// pre-data, the rows and sequences (scanned and scrubbed as they pass), then pg_dump's
    /// post-data and its closing lines.
    pub fn write_script(
        &mut self,
        fill: &Fill,
        schema: &Schema,
        out: &mut dyn Write,
    ) -> anyhow::Result<Loaded> {
        let written = "writing the subset's script";
        let pre = &schema.pre;
        out.write_all(&pre[..trailer_start(pre)]).context(written)?;
        let loaded = self.stream_rows(fill, |input| {
            std::io::copy(input, out).context(written)?;
            Ok(())
        })?;
        let post = &schema.post;
        out.write_all(&post[first_entry(post)..]).context(written)?;
        Ok(loaded)
    }

    /// The rows and the sequences into one loading psql.
    /// With `keyed`, the tables have their keys already: the rows go in one transaction
    /// whose deferrable constraints are checked when it commits.
    fn load_rows(
        &mut self,
        cx: &Context,
        fill: &Fill,
        temp: &DbUrl,
        keyed: bool,
        on_bytes: &dyn Fn(u64),
    ) -> anyhow::Result<Loaded> {
        let psql = load::spawn_psql_load(cx, temp)?;
        self.stream_rows(fill, |input| {
            let (begin, commit): (&[u8], &[u8]) = match keyed {
                true => (b"BEGIN;\nSET CONSTRAINTS ALL DEFERRED;\n", b"COMMIT;\n"),
                false => (b"", b""),
            };
            let mut input = begin.chain(input).chain(commit);
            load::feed_psql(temp, psql, &mut input, on_bytes).map(drop)
        })
    }

    /// The rows and the sequences, streamed from the snapshot through the scan and the scrub
    /// into `sink`.
    fn stream_rows(
        &mut self,
        fill: &Fill,
        sink: impl FnOnce(&mut dyn Read) -> anyhow::Result<()>,
    ) -> anyhow::Result<Loaded> {
        let (reader, writer) = std::io::pipe().context("making a pipe for the subset's rows")?;
        let subset = &mut *self;
        std::thread::scope(|scope| {
            let written = scope.spawn(move || subset.write_rows(writer, fill.left_out));
            let (fed, scrubbed) = {
                // Scanned as they come, as a dump is: scrubbed columns are not scanned.
                let input: Box<dyn Read + '_> = match fill.scan {
                    Some(scan) => Box::new(scan.reader(reader)),
                    None => Box::new(reader),
                };
                let (mut input, counts) = scrub::scrubbing_reader(input, fill.rules);
                let fed = sink(&mut input);
                let scrubbed = counts.borrow().clone();
                // Dropping the reader here ends a writer that the sink stopped reading.
                (fed, scrubbed)
            };
            let written = written
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match (fed, written) {
                (Ok(()), Ok((rows, sequences))) => Ok(Loaded {
                    rows,
                    scrubbed,
                    sequences,
                }),
                (Ok(()), Err(err)) => Err(err),
                // The sink stopping breaks the writer's pipe: the sink's error says why.
                (Err(err), Err(written)) if !broken_pipe(&written) => Err(written.context(err)),
                (Err(err), _) => Err(err),
            }
        })
    }

    /// Writes every table's `COPY` block (none for the tables left out) and a `setval` for
    /// every sequence; returns the rows per table and the sequences set.
    fn write_rows(
        &mut self,
        writer: impl Write,
        left_out: &[String],
    ) -> anyhow::Result<(Vec<u64>, usize)> {
        let mut out = BufWriter::with_capacity(1 << 20, writer);
        let mut rows = vec![0; self.graph.tables.len()];
        for t in self.graph.load_order_or_catalog() {
            let table = &self.graph.tables[t];
            if left_out.contains(&format!("{}.{}", table.schema, table.name)) {
                continue;
            }
            rows[t] = self.write_table(t, &mut out)?;
        }
        let names: Vec<SequenceName> = self.session.json(SEQUENCES)?;
        for chunk in names.chunks(200) {
            let selects: Vec<String> = chunk
                .iter()
                .map(|seq| {
                    format!(
                        "select {} as name, last_value as last, is_called as called from {}",
                        literal(&seq.quoted),
                        seq.quoted
                    )
                })
                .collect();
            let sequences: Vec<Sequence> = self.session.json(&format!(
                "select coalesce(jsonb_agg(to_jsonb(s)), '[]') from ({}) s;",
                selects.join(" union all ")
            ))?;
            for seq in &sequences {
                let named = chunk.iter().find(|n| n.quoted == seq.name);
                if let (Some(last), Some(called), Some(named)) = (seq.last, seq.called, named) {
                    writeln!(
                        out,
                        "--\n-- Name: {}; Type: SEQUENCE SET; Schema: {}; Owner: -\n--\n\nSELECT pg_catalog.setval({}, {last}, {called});\n\n",
                        named.name,
                        named.schema,
                        literal(&seq.name)
                    )
                    .context("writing the subset's rows")?;
                }
            }
        }
        out.flush().context("writing the subset's rows")?;
        Ok((rows, names.len()))
    }
}

/// pg_dump's closing lines, which end the script.
const TRAILER: &[u8] = b"--\n-- PostgreSQL database dump complete\n--\n";

/// Where a section's closing lines start (its end, without them).
fn trailer_start(text: &[u8]) -> usize {
    find_last(text, TRAILER).unwrap_or(text.len())
}

/// Where a section's first entry starts, past its header of settings; its closing lines
/// when it has no entry.
fn first_entry(text: &[u8]) -> usize {
    let mut at = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let next = &text[at + line.len()..];
        if line == b"--\n"
            && (next.starts_with(b"-- Name: ") || next.starts_with(b"-- Data for Name: "))
        {
            return at;
        }
        at += line.len();
    }
    trailer_start(text)
}

fn find_last(text: &[u8], needle: &[u8]) -> Option<usize> {
    (0..=text.len().checked_sub(needle.len())?)
        .rev()
        .find(|&i| text[i..].starts_with(needle))
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_joined_at_their_entries() {
        let pre = b"--\n-- PostgreSQL database dump\n--\n\nSET a = 1;\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE t ();\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        let cut = &pre[..trailer_start(pre)];
        assert!(cut.ends_with(b"CREATE TABLE t ();\n\n"));
        let start = first_entry(pre);
        assert!(pre[start..].starts_with(b"--\n-- Name: t;"));
        let empty = b"--\n-- PostgreSQL database dump\n--\n\nSET a = 1;\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        assert!(empty[first_entry(empty)..].starts_with(TRAILER));
    }
}
