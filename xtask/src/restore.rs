//! Replacing a database atomically: load into a fresh temporary database on the target
//! server, and only when that succeeded swap the names and drop the old one.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use crate::process::SpawnTool;
use anyhow::{bail, Context};
use xshell::Shell;

use crate::{
    db_url::DbUrl,
    pg_tools::{self, Access, PgTools, Server, Tool},
    term,
};

pub use crate::process::check_interrupted;

/// What is known about the database a run is about to replace.
pub struct TargetState {
    pub server: Server,
    pub exists: bool,
    /// The target database's OID, when it exists.
    pub oid: Option<String>,
    pub tables: u64,
    pub size: u64,
}

/// Checks the target server before anything is loaded: reachable, allowed to create
/// databases, and allowed to replace the target. Only reads: it changes nothing.
pub fn inspect_target(
    sh: &Shell,
    tools: &PgTools,
    target: &DbUrl,
) -> anyhow::Result<(DbUrl, TargetState)> {
    let (admin, server) = admin_url(sh, tools, target)?;
    #[derive(serde::Deserialize)]
    struct Answer {
        can_create: bool,
        may_replace: bool,
        oid: Option<String>,
        size: i64,
    }
    let answer = tools.query(
        sh,
        &admin,
        Access::ReadWrite,
        &format!(
            "select json_build_object('can_create', r.rolcreatedb or r.rolsuper, \
             'may_replace', coalesce(pg_get_userbyid(d.datdba) = current_user or r.rolsuper, true), \
             'oid', d.oid::text, 'size', coalesce(pg_database_size(d.oid), 0)) \
             from pg_roles r left join pg_database d on d.datname = {} where r.rolname = current_user",
            literal(&target.database)
        ),
    )?;
    let Answer {
        can_create,
        may_replace,
        oid,
        size,
    } = serde_json::from_str(&answer).with_context(|| {
        format!("unexpected answer from {admin} while inspecting the target: {answer}")
    })?;
    let exists = oid.is_some();
    let user = target.user.as_deref().unwrap_or("(default user)");
    if !can_create {
        bail!(
            "user `{user}` may not create databases on {}: grant it with `ALTER ROLE \"{user}\" CREATEDB` or use a user that can",
            target.host_port()
        );
    }
    if exists && !may_replace {
        bail!(
            "user `{user}` does not own database `{}` on {} and cannot replace it: connect as its owner or a superuser",
            target.database,
            target.host_port()
        );
    }
    let mut state = TargetState {
        server,
        exists,
        oid,
        tables: 0,
        size: size.max(0) as u64,
    };
    if state.exists {
        let tables = tools.query(
            sh,
            target,
            Access::ReadWrite,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') \
             and n.nspname not like 'pg_toast%'",
        )?;
        state.tables = tables.trim().parse().unwrap_or(0);
    }
    Ok((admin, state))
}

/// A connection to the target server that is not the target database itself, and the
/// server's version, learnt on the way.
fn admin_url(sh: &Shell, tools: &PgTools, target: &DbUrl) -> anyhow::Result<(DbUrl, Server)> {
    let candidates: &[&str] = if target.database == "postgres" {
        &["template1"]
    } else {
        &["postgres", "template1"]
    };
    // No decision on the error's text, which comes in the server's language: when the first
    // fails for any reason, the second is tried, and the first error stands if both fail.
    let mut first = None;
    for name in candidates {
        let url = target.with_database(name);
        match tools.server(sh, &url, Access::ReadWrite) {
            Ok(server) => return Ok((url, server)),
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    Err(first.expect("one candidate at least"))
}

fn base_name(database: &str) -> String {
    let mut end = database.len().min(40);
    while !database.is_char_boundary(end) {
        end -= 1;
    }
    database[..end].to_string()
}

fn temp_name(database: &str, kind: &str) -> String {
    format!("{}__np{kind}_{}", base_name(database), std::process::id())
}

/// The name the target's previous database has during this run's swap.
pub fn aside_name(database: &str) -> String {
    temp_name(database, "old")
}

/// Undoes a swap that a killed run left half done: `aside` (the previous database) goes back
/// in place of the target, and the database the run had put there is dropped.
pub fn put_back(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    target: &DbUrl,
    aside: &str,
) -> anyhow::Result<()> {
    let unwanted = temp_name(&target.database, "load");
    crate::process::critical(|| {
        swap(sh, tools, admin, target, aside, &unwanted, false)?;
        drop_database(sh, tools, admin, &unwanted)
    })
}

/// Whether a database of this name exists on the server `admin` connects to.
pub fn exists(sh: &Shell, tools: &PgTools, admin: &DbUrl, name: &str) -> anyhow::Result<bool> {
    let answer = tools.query(
        sh,
        admin,
        Access::ReadWrite,
        &format!(
            "select exists (select 1 from pg_database where datname = {})",
            literal(name)
        ),
    )?;
    Ok(answer == "t")
}

/// The temporary databases an interrupted run left beside `database` that nobody uses, as
/// a JSON array (see [`temp_name`]).
pub fn stale_query(database: &str) -> String {
    let base = base_name(database)
        .replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%");
    format!(
        "coalesce((select json_agg(datname) from pg_database where (datname like {0} or datname like {1}) \
         and not exists (select 1 from pg_stat_activity a where a.datname = pg_database.datname)), '[]')",
        literal(&format!("{base}\\_\\_npload\\_%")),
        literal(&format!("{base}\\_\\_npold\\_%")),
    )
}

/// Removes the `<target>__npload_*` and `<target>__npold_*` databases [`stale_query`] found.
pub fn drop_stale(sh: &Shell, tools: &PgTools, admin: &DbUrl, names: &[String]) {
    for name in names {
        term::step(format!(
            "removing {name}, left behind by an interrupted run"
        ));
        if let Err(err) = tools.query(
            sh,
            admin,
            Access::ReadWrite,
            &format!("drop database if exists {}", ident(name)),
        ) {
            term::warn(format!("could not remove {name}: {err}"));
        }
    }
}

/// Loads into a temporary database with `load`, then swaps it in place of the target and
/// runs `then` (the media swap). The previous database is dropped only when `then` succeeded;
/// if it fails, the previous database is put back. On any failure or interruption the target
/// is as it was and the temporary database is gone.
pub fn replace(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    target: &DbUrl,
    encoding: Option<&str>,
    load: impl FnOnce(&DbUrl) -> anyhow::Result<()>,
    then: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let temp = target.with_database(&temp_name(&target.database, "load"));
    create_temp(sh, tools, admin, &temp, encoding)?;
    let drop_temp = || {
        let _ = drop_database(sh, tools, admin, &temp.database);
    };
    if let Err(err) = load(&temp).and_then(|()| check_interrupted()) {
        let err = explain_load_failure(err);
        // A server that stopped (a full disk for its WAL stops it) is given time to come back.
        let started = std::time::Instant::now();
        while drop_database(sh, tools, admin, &temp.database).is_err() {
            if started.elapsed() > Duration::from_secs(30) || crate::process::interrupted() {
                return Err(anyhow::anyhow!(
                    "{err:#}; the temporary database {} is still there, the next run removes it",
                    temp.database
                ));
            }
            thread::sleep(Duration::from_secs(1));
        }
        return Err(err);
    }
    // From here the run finishes what it started, even when a signal arrives meanwhile.
    crate::process::critical(|| {
        let old = temp_name(&target.database, "old");
        let replaced = match swap(sh, tools, admin, target, &temp.database, &old, true) {
            Ok(replaced) => replaced,
            Err(err) => {
                drop_temp();
                return Err(err);
            }
        };
        if let Err(err) = then() {
            if !replaced {
                let _ = drop_database(sh, tools, admin, &target.database);
                return Err(err.context(format!("{} was removed again", target.masked())));
            }
            return match swap(sh, tools, admin, target, &old, &temp.database, false) {
                Ok(_) => {
                    drop_temp();
                    Err(err.context(format!("{} was put back as it was", target.masked())))
                }
                Err(back) => Err(err.context(format!(
                    "the previous database could not be put back ({back:#}): it is kept as `{old}` on {}; \
                     rename it to `{}` once its sessions are gone",
                    target.host_port(),
                    target.database
                ))),
            };
        }
        if let Err(err) = drop_database(sh, tools, admin, &old) {
            term::warn(format!(
                "the new database is in place, but the previous one ({old}) could not be dropped: {err}"
            ));
        }
        Ok(())
    })
}

/// Says in plain words what a load's SQLSTATE means when the fix lies outside the data.
fn explain_load_failure(err: anyhow::Error) -> anyhow::Error {
    let text = format!("{err:#}");
    let code = |code: &str| text.contains(&format!(":  {code}: "));
    if code("53100") {
        err.context("the target server ran out of disk space while loading: free space where its data directory lives, then run again; the target is untouched")
    } else if code("53200") {
        err.context("the target server ran out of memory while loading: lower --jobs or give it more memory; the target is untouched")
    } else if code("57P01")
        || code("57P02")
        || code("57P03")
        || text.contains("server closed the connection unexpectedly")
        || text.contains("connection to server was lost")
    {
        err.context("the target server stopped or restarted while loading (a full disk for its write-ahead log stops it): check its log, then run again; the target is untouched")
    } else {
        err
    }
}

/// `CREATE DATABASE` for a load. A source encoding that the server's locale cannot hold
/// (LATIN1 on a UTF-8 locale) gets the server's default encoding instead, as `createdb`
/// and `psql < netpoint.sql` would: the rows are converted on the way in.
fn create_temp(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    temp: &DbUrl,
    encoding: Option<&str>,
) -> anyhow::Result<()> {
    let create = |encoding: Option<&str>| {
        let encoding = encoding
            .map(|e| format!(" encoding {}", literal(e)))
            .unwrap_or_default();
        tools.query_state(
            sh,
            admin,
            &format!(
                "create database {} template template0{encoding}",
                ident(&temp.database)
            ),
        )
    };
    match create(encoding)? {
        Ok(_) => Ok(()),
        // invalid_parameter_value: the encoding does not match the locale.
        Err(failure) if failure.state == "22023" && encoding.is_some() => {
            create(None)?.map_err(|failure| failure.into_error(admin))?;
            let got = tools.query(
                sh,
                temp,
                Access::ReadWrite,
                "select pg_encoding_to_char(encoding) || ' (locale ' || datctype || ')' from pg_database where datname = current_database()",
            )?;
            term::warn(format!(
                "the source's encoding {} does not fit the locale of {}: the copy is {got}, as createdb would make it",
                encoding.unwrap_or_default(),
                admin.host_port()
            ));
            Ok(())
        }
        Err(failure) => Err(failure.into_error(admin)),
    }
}

fn drop_database(sh: &Shell, tools: &PgTools, admin: &DbUrl, name: &str) -> anyhow::Result<()> {
    tools
        .query(
            sh,
            admin,
            Access::ReadWrite,
            &format!("drop database if exists {} with (force)", ident(name)),
        )
        .or_else(|_| {
            tools.query(
                sh,
                admin,
                Access::ReadWrite,
                &format!("drop database if exists {}", ident(name)),
            )
        })
        .map(|_| ())
}

/// Puts database `new` in place of `target`'s database, which becomes `aside`; both renames
/// commit together, so the target name always names a whole database. Sessions on the target
/// that we may end are ended; others (autovacuum, which yields, or other roles' sessions) are
/// waited for briefly and then named; an interrupt ends that wait when `stoppable` (the swap
/// forward, before anything changed; never the swap back). Returns whether there was a
/// database to put aside.
fn swap(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    target: &DbUrl,
    new: &str,
    aside: &str,
    stoppable: bool,
) -> anyhow::Result<bool> {
    #[derive(serde::Deserialize)]
    struct Sessions {
        exists: bool,
        ended: u64,
        others: Vec<String>,
    }
    let name = literal(&target.database);
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = tools.query(
            sh,
            admin,
            Access::ReadWrite,
            &format!(
                "with mine as (select count(pg_terminate_backend(pid)) as n from pg_stat_activity a \
                 where datname = {name} and pid <> pg_backend_pid() and backend_type = 'client backend' \
                 and (pg_has_role(usesysid, 'member') or pg_has_role('pg_signal_backend', 'member')) \
                 and (not (select rolsuper from pg_roles where oid = a.usesysid) \
                      or (select rolsuper from pg_roles where rolname = current_user))) \
                 select json_build_object('exists', exists (select 1 from pg_database where datname = {name}), \
                 'ended', (select n from mine), \
                 'others', coalesce((select json_agg(format('pid %s (%s%s)', pid, \
                     coalesce('user ' || usename || ', ', ''), coalesce(nullif(application_name, ''), backend_type))) \
                   from pg_stat_activity where datname = {name} and pid <> pg_backend_pid() \
                   and (select n from mine) is not null \
                   and not (backend_type = 'client backend' and (pg_has_role(usesysid, 'member') or pg_has_role('pg_signal_backend', 'member')) \
                            and (not (select rolsuper from pg_roles r where r.oid = usesysid) or (select rolsuper from pg_roles where rolname = current_user))) \
                 ), '[]'))"
            ),
        )?;
        let sessions: Sessions = serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {admin} while swapping: {answer}"))?;
        if sessions.ended > 0 {
            term::step(format!(
                "ended {} other session(s) on {}",
                sessions.ended,
                target.masked()
            ));
        }
        let sql = if sessions.exists {
            format!(
                "begin; alter database {0} rename to {1}; alter database {2} rename to {0}; commit;",
                ident(&target.database),
                ident(aside),
                ident(new)
            )
        } else {
            format!(
                "alter database {} rename to {}",
                ident(new),
                ident(&target.database)
            )
        };
        match tools.query_state(sh, admin, &sql)? {
            Ok(_) => return Ok(sessions.exists),
            // object_in_use: a session we may not end, or one that just arrived.
            Err(failure) if failure.state == "55006" => {
                if stoppable && crate::process::interrupted() {
                    bail!(
                        "interrupted while waiting for other sessions to leave {}",
                        target.masked()
                    );
                }
                if started.elapsed() > Duration::from_secs(15) {
                    let who = if sessions.others.is_empty() {
                        "sessions keep arriving".to_string()
                    } else {
                        sessions.others.join(", ")
                    };
                    bail!(
                        "cannot replace {}: other sessions use it and may not be ended by user `{}` ({who}); \
                         disconnect them or end them as a superuser, then run again",
                        target.masked(),
                        target.user.as_deref().unwrap_or("(default user)")
                    );
                }
                thread::sleep(Duration::from_millis((100 * attempt).min(1000)));
            }
            Err(failure) => {
                return Err(failure.into_error(admin)).context(format!(
                    "swapping the new database into {}",
                    target.masked()
                ))
            }
        }
    }
}

/// Counts the rows of every table in `expected` (names as `COPY` lines write them) in the
/// loaded database and fails, naming the first table that differs, unless all match: the
/// proof that a load left nothing out.
pub fn check_row_counts(
    sh: &Shell,
    tools: &PgTools,
    url: &DbUrl,
    expected: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<()> {
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

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A tool's command, shown in `--verbose` mode, whose child dies with us, so a killed run
/// leaves no tool behind still writing.
pub fn tool_command(cmd: xshell::Cmd<'_>, url: &DbUrl) -> Command {
    pg_tools::log(&cmd, url);
    Command::from(cmd)
}

/// `psql` reading SQL from its stdin into `url`, stopping at the first error.
pub fn spawn_psql_load(sh: &Shell, tools: &PgTools, url: &DbUrl) -> anyhow::Result<Child> {
    tools.check_restricts(sh, url)?;
    // Verbose errors carry their SQLSTATE, which says what went wrong in any language.
    let cmd = tools.cmd(sh, Tool::Psql, url, Access::Load)?.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
        "-f",
        "-",
    ]);
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
fn restrict_key() -> anyhow::Result<&'static str> {
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
        if crate::process::interrupted() {
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
        bail!(
            "restore into {url} failed: {}",
            pg_tools::scrub(url, &message)
        );
    }
    Ok(total)
}

/// Reads a child's stderr on a thread, keeping the last 64 KiB.
pub fn collect_stderr(stderr: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    collect_stderr_with(stderr, |_| false)
}

/// [`collect_stderr`], except for the lines `take` takes.
fn collect_stderr_with(
    stderr: impl Read + Send + 'static,
    mut take: impl FnMut(&str) -> bool + Send + 'static,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut kept = String::new();
        let mut reader = BufReader::new(stderr);
        let mut raw = Vec::new();
        // Read to the end whatever the bytes: a child blocks once the pipe is full.
        while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&raw);
            let line = line.strip_suffix('\n').unwrap_or(&line);
            if !take(line) {
                kept.push_str(line);
                kept.push('\n');
                if kept.len() > 64 * 1024 {
                    keep_last_lines(&mut kept, 32 * 1024);
                }
            }
            raw.clear();
        }
        kept
    })
}

/// Drops the start of `text` so that about `bytes` remain, cutting after a newline (or at a
/// character boundary when no newline is near), never inside a character.
fn keep_last_lines(text: &mut String, bytes: usize) {
    let mut cut = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(newline) = text[cut..].find('\n') {
        if newline + 1 < text.len() - cut {
            cut += newline + 1;
        }
    }
    text.drain(..cut);
}

/// The first `ERROR:`/`FATAL:` line a tool printed, with its location.
pub fn first_error(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| line.contains("ERROR:") || line.contains("FATAL:") || line.contains("error:"))
        .map(|line| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_whole_characters_and_reads_past_bad_bytes() {
        // 3-byte characters, so that the 32 KiB cut lands inside one unless it is moved.
        let line = "ошибка: 日本語のメッセージ".repeat(40);
        let mut input = Vec::new();
        for n in 0..200 {
            input.extend_from_slice(format!("{n} {line}\n").as_bytes());
        }
        input.extend_from_slice(b"bad \xff\xfe bytes\n");
        input.extend_from_slice("ERROR:  last line\n".as_bytes());
        let kept = collect_stderr(std::io::Cursor::new(input)).join().unwrap();
        assert!(kept.len() <= 64 * 1024, "{}", kept.len());
        assert!(kept.ends_with("ERROR:  last line\n"), "{kept}");
        assert!(kept.contains("bad \u{fffd}\u{fffd} bytes"));
        let first = kept.lines().next().unwrap();
        assert!(first.ends_with(&line), "{first}");

        let mut text = "é".repeat(10);
        keep_last_lines(&mut text, 5);
        assert_eq!(text, "éé");
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("o'neil"), "'o''neil'");
        assert!(temp_name(&"x".repeat(80), "load").len() < 63);
        assert_eq!(base_name("ü".repeat(30).as_str()).len(), 40);
    }
}
