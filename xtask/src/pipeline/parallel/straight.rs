//! Relations to copy, and the straight copy of a large table from a source session into
//! a target session.

use std::{
    io::{Read, Write},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{
    context::Context,
    pg::{
        self,
        sql::{literal, qualified},
        Access, DbUrl, Tool,
    },
    pipeline::{leak_scan, load},
    plain::copy,
    process::{self, SpawnTool},
};

use super::schedule::Failure;

/// One relation whose data is copied.
#[derive(Debug, Clone)]
pub struct Relation {
    /// `"schema"."name"`, a pg_dump pattern matching exactly this relation.
    pub pattern: String,
    /// As the dump writes it: `public.dcim_site`.
    pub dumped_as: String,
    /// `schema.name` unquoted, as scrub rules name tables.
    pub name: String,
    pub bytes: u64,
    /// Whether a COPY block is expected (sequences and excluded tables have none).
    pub has_data: bool,
    /// The columns `COPY` reads and writes, quoted; generated columns are left out.
    pub columns: String,
    /// Every column's type has a binary form another server of the same major version
    /// reads back as the same value: a built-in type with send and receive functions,
    /// not one of the `reg*` types, which carry object ids.
    pub binary: bool,
}

/// Tables at least this large are copied straight from a source session into a target
/// session ([`Straight`]). Smaller ones share a `pg_dump`: two sessions for each of them
/// would cost more than the copy saves.
pub const STRAIGHT_MIN: u64 = 4 << 20;

/// Splits relations into `n` groups of about equal size, largest first.
pub fn balance(mut relations: Vec<Relation>, n: usize) -> Vec<Vec<Relation>> {
    relations.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    let mut groups: Vec<(u64, Vec<Relation>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for relation in relations {
        let lightest = groups.iter_mut().min_by_key(|(bytes, _)| *bytes).unwrap();
        lightest.0 += relation.bytes;
        lightest.1.push(relation);
    }
    groups
        .into_iter()
        .map(|(_, group)| group)
        .filter(|g| !g.is_empty())
        .collect()
}

/// What a parallel clone of the source needs to know, or why it must run as one stream.
pub fn relations_to_copy(
    cx: &Context,
    source: &DbUrl,
    excluded: &[(String, i64)],
) -> anyhow::Result<Result<Vec<Relation>, &'static str>> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    // Generated columns (PostgreSQL 12 and later) are computed again on the target.
    let generated = match tools.server_major(source) {
        Some(major) if major < 12 => "",
        _ => " and a.attgenerated = ''",
    };
    let portable = |t: &str| {
        format!(
            "{t}.oid < 16384 and {t}.typname !~ '^_?reg' and {t}.typsend::oid <> 0 and {t}.typreceive::oid <> 0"
        )
    };
    let rows = tools.query(
        sh,
        source,
        Access::ReadOnly,
        &format!(
            "select json_build_array(n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
             case when c.relkind = 'r' then pg_table_size(c.oid) else 0 end, c.relkind, \
             coalesce(string_agg(quote_ident(a.attname), ', ' order by a.attnum), ''), \
             coalesce(bool_and({} and (t.typelem = 0 or ({}))), false), \
             exists (select 1 from pg_largeobject_metadata), \
             exists (select 1 from pg_extension where extconfig is not null))::text \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped{generated} \
             left join pg_type t on t.oid = a.atttypid left join pg_type e on e.oid = t.typelem \
             where c.relkind in ('r', 'S') and n.nspname <> 'information_schema' and n.nspname !~ '^pg_' \
             group by n.nspname, c.relname, c.oid, c.relkind order by 1",
            portable("t"),
            portable("e"),
        ),
    )?;
    let mut relations = Vec::new();
    for row in rows.lines().filter(|r| !r.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(row).context("reading the list of tables")?;
        let (
            Some(schema),
            Some(name),
            Some(dumped_as),
            Some(bytes),
            Some(kind),
            Some(columns),
            Some(binary),
            Some(large_objects),
            Some(extension_tables),
        ) = (
            value[0].as_str(),
            value[1].as_str(),
            value[2].as_str(),
            value[3].as_u64(),
            value[4].as_str(),
            value[5].as_str(),
            value[6].as_bool(),
            value[7].as_bool(),
            value[8].as_bool(),
        )
        else {
            bail!("unexpected table list row from {source}: {row}");
        };
        if large_objects {
            return Ok(Err("the source has large objects"));
        }
        if extension_tables {
            return Ok(Err("an extension keeps configuration tables"));
        }
        // Tables whose data is left out stay in the list: pg_dump's --exclude-table-data
        // then leaves out their rows but still sets their identity sequences.
        let data_excluded = excluded
            .iter()
            .any(|(n, _)| n == &format!("{schema}.{name}"));
        relations.push(Relation {
            pattern: qualified(schema, name),
            dumped_as: dumped_as.to_string(),
            name: format!("{schema}.{name}"),
            bytes: if data_excluded { 0 } else { bytes },
            has_data: !data_excluded && kind == "r",
            columns: columns.to_string(),
            binary,
        });
    }
    if relations.is_empty() {
        return Ok(Err("the source has no tables"));
    }
    Ok(Ok(relations))
}

/// A table copied by `COPY ... TO STDOUT` in a source session piped straight into
/// `COPY ... FROM STDIN WITH (FREEZE)` in a target session: no `pg_dump` and no pass
/// through xtask, and in binary form when both servers have the same major version, which
/// the target reads with less work than text.
pub struct Straight {
    pub table: String,
    pub bytes: u64,
    pub copy_out: Command,
    pub copy_in: Command,
    /// The table as the leak scan names it, its columns in the copy's order, and whether
    /// the copy is binary.
    pub scanned: (String, Vec<String>, bool),
}

impl Straight {
    pub fn new(
        cx: &Context,
        source: &DbUrl,
        encoding: &str,
        temp: &DbUrl,
        snapshot: &str,
        relation: &Relation,
    ) -> anyhow::Result<Straight> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let binary = relation.binary
            && tools.server_major(source).is_some()
            && tools.server_major(source) == tools.server_major(temp);
        let (format, freeze) = match binary {
            true => (" with (format binary)", "format binary, freeze"),
            false => ("", "freeze"),
        };
        let table = format!("{} ({})", relation.pattern, relation.columns);
        let mut out = vec![
            "begin transaction isolation level repeatable read read only".to_string(),
            format!("set transaction snapshot {}", literal(snapshot)),
        ];
        let mut into = vec!["begin".to_string()];
        for statements in [&mut out, &mut into] {
            // As pg_dump does: no timeout a role's defaults set cuts a long copy short, and
            // fail rather than copy rows a policy filters.
            statements.extend(
                [
                    "set statement_timeout = 0",
                    "set lock_timeout = 0",
                    "set idle_in_transaction_session_timeout = 0",
                    "set row_security = off",
                ]
                .map(String::from),
            );
            // Binary text fields are converted to and from the client encoding too: both
            // sides speak the source's, whatever encoding the target database has.
            let encoding = literal(encoding);
            statements.push(format!("set client_encoding = {encoding}"));
        }
        if !binary {
            // Text any server reads back as the same values, as pg_dump writes it.
            out.extend(
                [
                    "set datestyle = iso",
                    "set intervalstyle = postgres",
                    "set extra_float_digits = 3",
                ]
                .map(String::from),
            );
        }
        out.push(format!("copy {table} to stdout{format}"));
        out.push("commit".to_string());
        into.push(format!("truncate only {}", relation.pattern));
        into.push(format!("copy {table} from stdin with ({freeze})"));
        into.push("commit".to_string());
        let session = |url: &DbUrl, access, statements: Vec<String>| -> anyhow::Result<Command> {
            let mut cmd = tools
                .cmd(sh, Tool::Psql, url, access)?
                .args(load::SESSION_ARGS);
            for statement in statements {
                cmd = cmd.arg("-c").arg(statement);
            }
            Ok(pg::tool_command(cmd, url))
        };
        let columns = copy::CopyHeader::parse(
            format!("COPY t ({}) FROM stdin;", relation.columns).as_bytes(),
        )
        .map(|header| header.columns)
        .unwrap_or_default();
        Ok(Straight {
            table: relation.dumped_as.clone(),
            bytes: relation.bytes,
            copy_out: session(source, Access::ReadOnly, out)?,
            copy_in: session(temp, Access::Load, into)?,
            scanned: (relation.name.clone(), columns, binary),
        })
    }

    pub fn run(
        &mut self,
        source: &DbUrl,
        temp: &DbUrl,
        failure: &Failure,
        scan: Option<&leak_scan::Scanner>,
    ) -> anyhow::Result<()> {
        let (name, columns, binary) = &self.scanned;
        let mut scan = scan.and_then(|scan| scan.copy(name, columns, *binary));
        let mut out = self
            .copy_out
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_tool()
            .with_context(|| format!("starting psql for {source}"))?;
        let out_stderr = process::collect_stderr(out.stderr.take().unwrap());
        let rows = out.stdout.take().unwrap();
        // Rows to scan pass through xtask; the others go from one psql to the other.
        let (stdin, mut rows) = match scan.is_some() {
            true => (Stdio::piped(), Some(rows)),
            false => (Stdio::from(rows), None),
        };
        let into = self
            .copy_in
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_tool();
        let mut into = match into {
            Ok(into) => into,
            Err(err) => {
                let _ = out.kill();
                let _ = out.wait();
                return Err(err).with_context(|| format!("starting psql for {temp}"));
            }
        };
        let into_stderr = process::collect_stderr(into.stderr.take().unwrap());
        let statuses = std::thread::scope(|threads| {
            if let (Some(mut rows), Some(mut stdin), Some(scan)) =
                (rows.take(), into.stdin.take(), scan.as_mut())
            {
                threads.spawn(move || {
                    let mut buf = vec![0; 1 << 18];
                    loop {
                        let n = match rows.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        scan.feed(&buf[..n]);
                        if stdin.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    scan.finish();
                });
            }
            wait_both(&mut out, &mut into, failure)
        });
        let out_stderr = out_stderr.join().unwrap_or_default();
        let into_stderr = into_stderr.join().unwrap_or_default();
        let (out_status, into_status) = statuses?;
        // A source session that only lost its reader (the target failed first) is not the
        // cause; one that failed on its own is, even when the target failed too.
        let reader_gone = out_status.code().is_none() || out_stderr.contains("Broken pipe");
        match (out_status.success(), into_status.success()) {
            (true, true) => Ok(()),
            (false, into_ok) if into_ok || !reader_gone => {
                Err(pg::explain_failure(source, &out_stderr))
                    .context(format!("copying {} from {source} failed", self.table))
            }
            _ => {
                let message = pg::first_error(&into_stderr)
                    .unwrap_or_else(|| format!("psql exited with {into_status}"));
                bail!("restore into {temp} failed: {}", pg::scrub(temp, &message))
            }
        }
    }
}

/// Waits for two sessions; kills both when another session fails or the run is stopped.
pub fn wait_both(
    a: &mut Child,
    b: &mut Child,
    failure: &Failure,
) -> anyhow::Result<(ExitStatus, ExitStatus)> {
    let (mut done_a, mut done_b) = (None, None);
    loop {
        if done_a.is_none() {
            done_a = a.try_wait()?;
        }
        if done_b.is_none() {
            done_b = b.try_wait()?;
        }
        if let (Some(a), Some(b)) = (done_a, done_b) {
            return Ok((a, b));
        }
        if failure.failed.load(Ordering::SeqCst) || process::interrupted() {
            for child in [a, b] {
                let _ = child.kill();
                let _ = child.wait();
            }
            process::check_interrupted()?;
            bail!("stopped: another session failed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_balanced_largest_first() {
        let relation = |name: &str, bytes| Relation {
            pattern: qualified("public", name),
            dumped_as: format!("public.{name}"),
            name: format!("public.{name}"),
            bytes,
            has_data: bytes > 0,
            columns: "id".to_string(),
            binary: true,
        };
        let groups = balance(
            vec![
                relation("a", 10),
                relation("b", 70),
                relation("c", 30),
                relation("d", 40),
                relation("s", 0),
            ],
            2,
        );
        let totals: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.bytes).sum())
            .collect();
        assert_eq!(totals, [80, 70]);
        assert_eq!(groups[0][0].pattern, "\"public\".\"b\"");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 5);
        assert_eq!(
            balance(vec![relation("a", 1)], 4).len(),
            1,
            "no empty groups"
        );
    }
}
