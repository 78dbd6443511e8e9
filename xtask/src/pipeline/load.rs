//! The single-stream load: `psql` reading SQL from its stdin in restricted mode, fed
//! from a dump stream; and the row count check that proves a load left nothing out.

use std::{
    io::{Read, Write},
    process::{Child, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{
    context::Context,
    pg::{self, first_error, sql::literal, tool_command, Access, DbUrl, Tool},
    plain::{
        copy::{copy_target, is_copy_start},
        lines::Next,
    },
    process::{self, check_interrupted, collect_stderr_with, SpawnTool},
};

/// Counts the rows of every table in `expected` (names as `COPY` lines write them) in the
/// loaded database and fails, naming the first table that differs, unless all match: the
/// proof that a load left nothing out.
pub fn check_row_counts(
    cx: &Context,
    url: &DbUrl,
    expected: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    if expected.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = expected
        .keys()
        .map(|table| format!("({}, (select count(*) from only {table}))", literal(table)))
        .collect();
    let answer = tools.query(
        sh,
        url,
        Access::ReadWrite,
        &format!(
            "select json_object_agg(t, n) from (values {}) v(t, n)",
            values.join(", ")
        ),
    )?;
    let loaded: std::collections::BTreeMap<String, u64> = serde_json::from_str(&answer)
        .with_context(|| format!("unexpected answer from {url} while counting rows: {answer}"))?;
    if let Some((table, rows)) = expected.iter().find(|(t, n)| loaded.get(*t) != Some(n)) {
        bail!(
            "the load into {url} is incomplete: {table} has {} rows where the dump holds {rows}; the target was left untouched",
            loaded.get(table).copied().unwrap_or(0)
        );
    }
    Ok(())
}

/// How a loading session runs psql: no startup file, quiet, stopping at the first error, and
/// with verbose errors, whose SQLSTATE says what went wrong in any language.
pub const SESSION_ARGS: &[&str] = &[
    "-X",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-v",
    "VERBOSITY=verbose",
];

/// `psql` reading SQL from its stdin into `url`, stopping at the first error.
pub fn spawn_psql_load(cx: &Context, url: &DbUrl) -> anyhow::Result<Child> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    tools.check_restricts(sh, url)?;
    // Verbose errors carry their SQLSTATE, which says what went wrong in any language.
    let cmd = tools
        .cmd(sh, Tool::Psql, url, Access::Load)?
        .args(SESSION_ARGS)
        .args(["-f", "-"]);
    let mut psql = tool_command(cmd, url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_tool()
        .with_context(|| format!("starting psql for {url}"))?;
    // SQL is data, never commands: in restricted mode psql refuses every backslash command
    // (`\!`, `\o`, `\copy`, ...) a dump may hide, and only this key, which no dump can
    // know, would lift it. A refused command fails the load like any error.
    let restrict = format!("\\restrict {}\n", restrict_key()?);
    if let Some(stdin) = psql.stdin.as_mut() {
        // A write error means psql has already gone; its stderr says why.
        let _ = stdin.write_all(restrict.as_bytes());
    }
    Ok(psql)
}

/// The key of this run's `\restrict`: 32 hex digits from the system's random source, the
/// same for every session, so that the tool's own psql commands can be let through.
pub fn restrict_key() -> anyhow::Result<&'static str> {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom for a psql restrict key")?;
    Ok(KEY.get_or_init(|| bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

/// The lines that run one psql command of the tool's own (`\warn ...`) in a restricted
/// loading session, and restrict it again.
pub fn own_command(command: &str) -> String {
    match restrict_key() {
        Ok(key) => format!("\\unrestrict {key}\n{command}\n\\restrict {key}\n"),
        // Without a key no session was started restricted.
        Err(_) => format!("{command}\n"),
    }
}

/// Feeds `input` into a loading `psql`, counting bytes; fails with psql's first error.
pub fn feed_psql(
    url: &DbUrl,
    psql: Child,
    input: &mut dyn Read,
    on_bytes: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    feed_psql_with(url, psql, input, on_bytes, |_| false)
}

/// [`feed_psql`], handing each line psql prints on stderr to `on_line` first; lines it
/// takes (returns `true` for) are not errors.
pub fn feed_psql_with(
    url: &DbUrl,
    mut psql: Child,
    input: &mut dyn Read,
    on_bytes: &dyn Fn(u64),
    on_line: impl FnMut(&str) -> bool + Send + 'static,
) -> anyhow::Result<u64> {
    let stderr = collect_stderr_with(psql.stderr.take().unwrap(), on_line);
    let mut stdin = psql.stdin.take().unwrap();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    let mut broken = None;
    loop {
        if process::interrupted() {
            let _ = psql.kill();
            break;
        }
        let n = input.read(&mut buf).context("reading the dump")?;
        if n == 0 {
            break;
        }
        if let Err(err) = stdin.write_all(&buf[..n]) {
            broken = Some(err);
            break;
        }
        total += n as u64;
        on_bytes(n as u64);
    }
    drop(stdin);
    let status = psql.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    check_interrupted()?;
    if !status.success() || broken.is_some() {
        let message = first_error(&stderr).unwrap_or_else(|| format!("psql exited with {status}"));
        bail!("restore into {url} failed: {}", pg::scrub(url, &message));
    }
    Ok(total)
}

/// What a data session prints on stderr when a table's data is in.
pub const LOADED: &str = "np:loaded ";

/// Rewrites the data of a parallel load, table by table; see [`loaded_marker`].
#[cfg(test)]
pub fn mark_loaded<R: Read>(input: R) -> impl Read {
    crate::plain::lines::edit_lines(input, loaded_marker())
}

/// The line editor for a data session. Each table's `COPY` becomes
/// `BEGIN; TRUNCATE ONLY t; COPY t ... WITH (FREEZE); COMMIT;`: the table was created empty
/// moments ago, so this changes no data, but the rows arrive frozen and the index builds and
/// key checks that read them next do not rewrite every page to set hint bits. After each
/// table, a line makes psql report it loaded.
pub fn loaded_marker() -> impl FnMut(&mut Vec<u8>) -> Next {
    let mut table: Option<String> = None;
    move |line| {
        if let Some(name) = &table {
            if line == b"\\.\n" {
                let loaded = own_command(&format!("\\warn {LOADED}{name}"));
                line.extend_from_slice(format!("COMMIT;\n{loaded}").as_bytes());
                table = None;
            }
        } else if is_copy_start(line) {
            let text = String::from_utf8_lossy(line);
            table = copy_target(line);
            if let (Some(name), Some(copy)) = (&table, text.strip_suffix(" FROM stdin;\n")) {
                *line =
                    format!("BEGIN;\nTRUNCATE ONLY {name};\n{copy} FROM stdin WITH (FREEZE);\n")
                        .into_bytes();
            }
            return Next::SkipRows;
        }
        Next::Line
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn loaded_markers_follow_each_copy_block() {
        let mut out = String::new();
        mark_loaded(crate::plain::toc::tests::DUMP.as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.matches("\\warn np:loaded public.t\n").count(), 1);
        assert!(
            out.contains("BEGIN;\nTRUNCATE ONLY public.t;\nCOPY public.t (id) FROM stdin WITH (FREEZE);\n--\n"),
            "{out}"
        );
        let loaded = own_command("\\warn np:loaded public.t");
        assert!(out.contains(&format!("\\.\nCOMMIT;\n{loaded}")), "{out}");
        let undone = out
            .replace(&format!("COMMIT;\n{loaded}"), "")
            .replace("BEGIN;\nTRUNCATE ONLY public.t;\n", "")
            .replace(" WITH (FREEZE)", "");
        assert_eq!(undone, crate::plain::toc::tests::DUMP);
    }
}
