//! Loading on several sessions at once: `--jobs` (default: the number of cores), and the
//! scheduler that builds indexes and constraints side by side.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Mutex, OnceLock,
    },
    time::Duration,
};

use crate::process::SpawnTool;
use anyhow::{bail, Context};
use indicatif::ProgressBar;
use xshell::Shell;

use crate::{
    clone_prod,
    db_url::DbUrl,
    dump::{self, Next},
    leak_scan,
    pg_tools::{self, Access, PgTools, Tool},
    restore, scrub, term, toc,
};

static JOBS: OnceLock<usize> = OnceLock::new();

/// Sets the job count for the whole run (and sizes rayon's pool to match).
pub fn set_jobs(jobs: Option<usize>) {
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let _ = JOBS.set(jobs);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build_global();
}

pub fn jobs() -> usize {
    *JOBS.get().unwrap_or(&1)
}

/// The sessions a load keeps open at once on one database: `per_job` for each job, and
/// `fixed` more whatever the job count (the snapshot holder, the checkpoint session).
pub struct Sessions<'a> {
    pub url: &'a DbUrl,
    pub per_job: usize,
    pub fixed: usize,
}

/// How many more sessions a server, a role and a database accept, as the server reports it.
struct Room {
    /// The server's own identity, so that two URLs naming one server count together.
    server: String,
    role: String,
    /// `max_connections` less the reserved slots and the sessions in use (ours excluded).
    server_free: i64,
    server_detail: String,
    /// For roles and databases with a `CONNECTION LIMIT` that applies (not to superusers).
    role_free: Option<(i64, String)>,
    database_free: Option<(i64, String)>,
}

const ROOM_QUERY: &str = "\
with clients as (select usesysid, datid from pg_stat_activity where backend_type = 'client backend') \
select json_build_object('server', (select system_identifier from pg_control_system())::text, 'role', session_user, \
 'max', current_setting('max_connections')::int, \
 'reserved', current_setting('superuser_reserved_connections')::int \
  + coalesce(current_setting('reserved_connections', true)::int, 0), \
 'used', (select count(*) from clients) - 1, \
 'superuser', r.rolsuper, 'role_limit', r.rolconnlimit, 'role_used', (select count(*) from clients where usesysid = r.oid) - 1, \
 'db_limit', d.datconnlimit, 'db_used', (select count(*) from clients where datid = d.oid) - 1) \
from pg_roles r, pg_database d where r.rolname = session_user and d.datname = current_database()";

/// The answer to [`ROOM_QUERY`].
#[derive(serde::Deserialize)]
struct RoomAnswer {
    server: String,
    role: String,
    max: i64,
    reserved: i64,
    used: i64,
    superuser: bool,
    role_limit: i64,
    role_used: i64,
    db_limit: i64,
    db_used: i64,
}

fn room(sh: &Shell, tools: &PgTools, url: &DbUrl) -> anyhow::Result<Room> {
    let answer = tools.query(sh, url, Access::ReadOnly, ROOM_QUERY)?;
    let RoomAnswer {
        server,
        role,
        max,
        reserved,
        used,
        superuser,
        role_limit,
        role_used,
        db_limit,
        db_used,
    } = serde_json::from_str(&answer).with_context(|| {
        format!("unexpected answer about connection limits from {url}: {answer}")
    })?;
    let at = url.host_port();
    // Superusers are held to neither limit; -1 is no limit.
    let limited = |limit: i64, used: i64, what: String| -> Option<(i64, String)> {
        (!superuser && limit >= 0).then(|| {
            (
                limit - used,
                format!("{what} on {at} has CONNECTION LIMIT {limit} and {used} sessions in use"),
            )
        })
    };
    let role_free = limited(role_limit, role_used, format!("role `{role}`"));
    Ok(Room {
        server,
        role,
        server_free: max - reserved - used,
        server_detail: format!(
            "{at} allows max_connections {max}, {reserved} of them reserved, {used} in use"
        ),
        role_free,
        database_free: limited(db_limit, db_used, format!("database `{}`", url.database)),
    })
}

/// The most jobs, up to `wanted`, whose sessions fit in every room, and what limited them.
/// Demands on one server count together against it, and against a role they share there.
fn fit(wanted: usize, demands: &[Sessions<'_>], rooms: &[Room]) -> (usize, Option<String>) {
    // Each limit: the sessions it still accepts, and the demands that count against it.
    let mut limits: Vec<(i64, Vec<usize>, &str)> = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let same_server = |k: &usize| rooms[*k].server == room.server;
        if !(0..i).any(|k| same_server(&k)) {
            let together = (0..rooms.len()).filter(same_server).collect();
            limits.push((room.server_free, together, &room.server_detail));
        }
        let same_role = |k: &usize| same_server(k) && rooms[*k].role == room.role;
        if let Some((free, detail)) = &room.role_free {
            if !(0..i).any(|k| same_role(&k)) {
                limits.push((*free, (0..rooms.len()).filter(same_role).collect(), detail));
            }
        }
        if let Some((free, detail)) = &room.database_free {
            limits.push((*free, vec![i], detail));
        }
    }
    let mut allowed = wanted;
    let mut reason = None;
    for (free, together, detail) in limits {
        let per_job: usize = together.iter().map(|&k| demands[k].per_job).sum();
        let fixed: usize = together.iter().map(|&k| demands[k].fixed).sum();
        let fits = usize::try_from(free).unwrap_or(0).saturating_sub(fixed) / per_job.max(1);
        if fits < allowed {
            allowed = fits;
            reason = Some(format!(
                "{detail}, and a load opens {per_job} sessions there per job plus {fixed}"
            ));
        }
    }
    (allowed, reason)
}

/// `jobs()`, lowered so that the sessions of a load on that many jobs fit in what the
/// servers, the roles and the databases still accept; a step line says when and why. Below
/// 2, the load goes in one stream. Where the limits cannot be read, `jobs()`.
pub fn jobs_within_limits(sh: &Shell, tools: &PgTools, demands: &[Sessions<'_>]) -> usize {
    let wanted = jobs();
    let (allowed, reason) = fitting_jobs(sh, tools, demands);
    if let Some(reason) = reason {
        match allowed {
            0 | 1 => term::step(format!(
                "loading in one stream instead of on {wanted} jobs: {reason}"
            )),
            _ => term::step(format!(
                "loading on {allowed} jobs instead of {wanted}: {reason}"
            )),
        }
    }
    allowed
}

/// `jobs()`, lowered so that `demands` fit in what the servers, roles and databases still
/// accept, and what lowered it; `jobs()` where the limits cannot be read.
pub fn fitting_jobs(
    sh: &Shell,
    tools: &PgTools,
    demands: &[Sessions<'_>],
) -> (usize, Option<String>) {
    let wanted = jobs();
    if wanted < 2 {
        return (wanted, None);
    }
    let rooms = std::thread::scope(|scope| {
        let asked: Vec<_> = demands
            .iter()
            .map(|demand| {
                let sh = sh.clone();
                scope.spawn(move || room(&sh, tools, demand.url))
            })
            .collect();
        asked
            .into_iter()
            .map(|a| a.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<anyhow::Result<Vec<Room>>>()
    });
    let rooms = match rooms {
        Ok(rooms) => rooms,
        Err(err) => {
            term::detail(format!("connection limits not checked: {err:#}"));
            return (wanted, None);
        }
    };
    fit(wanted, demands, &rooms)
}

/// A post-data statement (index, constraint, trigger...) and what it locks.
#[derive(Debug)]
pub struct PostJob {
    sql: String,
    /// Jobs run stage by stage: 0 indexes and keys, 1 partition index attachments,
    /// 2 foreign keys, 3 everything else in dump order.
    stage: u8,
    /// Tables the statement locks; `None` when unknown, so it runs alone.
    tables: Option<Vec<String>>,
    /// Whether it locks its tables against every other statement (ALTER TABLE does,
    /// CREATE INDEX does not).
    exclusive: bool,
    /// Bytes of data behind it: the largest indexes start first.
    weight: u64,
}

impl PostJob {
    fn conflicts(&self, other: &PostJob) -> bool {
        let (Some(mine), Some(theirs)) = (&self.tables, &other.tables) else {
            return true;
        };
        (self.exclusive || other.exclusive) && mine.iter().any(|t| theirs.contains(t))
    }
}

/// Splits the post-data part of a plain dump into jobs. `script` is a header followed by
/// entries; `sizes` gives data bytes by table name as the dump writes it (`public.t`).
pub fn post_jobs(script: &str, sizes: &HashMap<String, u64>) -> (String, Vec<PostJob>) {
    let toc = toc::scan(script.as_bytes()).expect("reading memory");
    let header = script[..toc.header_end as usize].to_string();
    let jobs = toc
        .entries
        .iter()
        .map(|entry| {
            let text = &script[entry.start as usize..entry.end as usize];
            let statement = statement_of(text);
            let (stage, tables, exclusive) = match entry.kind.as_str() {
                "INDEX" => (0, after_keyword(statement, " ON ").map(|t| vec![t]), false),
                "CONSTRAINT" => (
                    0,
                    after_keyword(statement, "ALTER TABLE ").map(|t| vec![t]),
                    true,
                ),
                "INDEX ATTACH" => (1, None, true),
                "FK CONSTRAINT" => {
                    let tables = after_keyword(statement, "ALTER TABLE ")
                        .zip(after_keyword(statement, " REFERENCES "))
                        .map(|(a, b)| vec![a, b]);
                    (2, tables, true)
                }
                _ => (3, None, true),
            };
            let weight = tables
                .as_ref()
                .map(|t| t.iter().filter_map(|t| sizes.get(t)).sum())
                .unwrap_or(0);
            let mut sql: String = entry.settings.concat();
            sql.push_str(text);
            PostJob {
                sql,
                stage,
                tables,
                exclusive,
                weight,
            }
        })
        .collect();
    (header, jobs)
}

/// The entry without its comment lines.
fn statement_of(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with("--") || rest.starts_with('\n') {
        rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
    }
    rest
}

/// The (possibly schema-qualified, possibly quoted) name after `keyword`, skipping `ONLY`.
fn after_keyword(statement: &str, keyword: &str) -> Option<String> {
    let rest = &statement[statement.find(keyword)? + keyword.len()..];
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let mut name = String::new();
    let mut chars = rest.chars().peekable();
    loop {
        match chars.next()? {
            '"' => {
                name.push('"');
                loop {
                    let c = chars.next()?;
                    name.push(c);
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            name.push(chars.next()?);
                        } else {
                            break;
                        }
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                name.push(c);
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
            }
            _ => return None,
        }
        match chars.peek() {
            Some('.') => name.push(chars.next()?),
            _ => break,
        }
    }
    let rest: String = chars.take(1).collect();
    matches!(rest.as_str(), "" | " " | "\n" | "(" | ";").then_some(name)
}

/// What the sessions of a load tell the scheduler.
pub enum Event {
    /// A line an index session printed on stderr.
    Line(usize, String),
    /// An index session's stderr closed: it has exited.
    Closed(usize),
    /// A data session has loaded this table (`public.t`, as the dump names it).
    Loaded(String),
    /// A data session has finished (its failure, if any, is in [`Failure`]).
    StreamEnded,
}

/// What a session prints on stderr when it has finished a job.
const DONE: &str = "np:done ";
/// What a data session prints on stderr when a table's data is in.
const LOADED: &str = "np:loaded ";

/// The post-data part of a load: its statements, and the tables whose data is on its way.
pub struct PostData {
    pub header: String,
    pub jobs: Vec<PostJob>,
    /// Tables still being loaded: indexes on them wait.
    pub loading: HashSet<String>,
    /// Data sessions still running: foreign keys and the rest wait for all of them.
    pub streams: usize,
    /// Ask for a checkpoint once the data is in; see [`spawn_flush`].
    pub flush: bool,
}

/// A session that will ask the server for a checkpoint. A load that replaces a database
/// ends by dropping the previous one, and `DROP DATABASE` forces a checkpoint that writes
/// every page of the new copy to disk while nothing else runs. Asked for when the table
/// data is in, most of that writing overlaps the index builds instead. It needs superuser
/// or `pg_checkpoint`; without them it fails quietly and nothing changes.
fn spawn_flush(sh: &Shell, tools: &PgTools, url: &DbUrl) -> anyhow::Result<Child> {
    let mut psql = restore::spawn_psql_load(sh, tools, url)?;
    // Nobody reads why a checkpoint was refused.
    drop(psql.stderr.take());
    Ok(psql)
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    running: Option<usize>,
    stderr: String,
}

/// Runs the post-data jobs on up to `sessions` psql sessions on `url` while data sessions
/// are still loading: an index starts as soon as its table is in; foreign keys and the rest
/// wait for all data and all indexes. Within a stage, statements that would lock each other
/// out never run together. Stops at the first failure, here or in a data session.
pub fn run_post_data(
    sh: &Shell,
    tools: &PgTools,
    url: &DbUrl,
    mut post: PostData,
    sessions: usize,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    failure: &Failure,
) -> anyhow::Result<()> {
    let (tx, rx) = events;
    let sessions = sessions.clamp(1, post.jobs.len().max(1));
    let mut workers = Vec::new();
    if !post.jobs.is_empty() {
        for n in 0..sessions {
            let mut child = restore::spawn_psql_load(sh, tools, url)?;
            let stderr = child.stderr.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(Event::Line(n, line)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Event::Closed(n));
            });
            let mut stdin = child.stdin.take().unwrap();
            // A write error means psql has already gone; its stderr says why.
            let _ = stdin.write_all(post.header.as_bytes());
            workers.push(Session {
                child,
                stdin: Some(stdin),
                running: None,
                stderr: String::new(),
            });
        }
    }
    drop(tx);
    let mut flush = match post.flush {
        true => Some(spawn_flush(sh, tools, url)?),
        false => None,
    };
    // `max_parallel_maintenance_workers` came with PostgreSQL 11.
    let tune_workers = tools.server_major(url).is_some_and(|major| major >= 11);
    let result = schedule(
        &mut post,
        &mut workers,
        &rx,
        url,
        failure,
        &mut flush,
        tune_workers,
    );
    if let Some(mut flush) = flush {
        if result.is_err() {
            let _ = flush.kill();
        }
        drop(flush.stdin.take());
        let _ = flush.wait();
    }
    for worker in &mut workers {
        drop(worker.stdin.take());
        if result.is_err() {
            let _ = worker.child.kill();
        }
    }
    for worker in &mut workers {
        let status = worker.child.wait()?;
        if result.is_ok() && !status.success() {
            bail!("restore into {url} failed while adding indexes and constraints: psql exited with {status}");
        }
    }
    result
}

fn schedule(
    post: &mut PostData,
    workers: &mut [Session],
    rx: &mpsc::Receiver<Event>,
    url: &DbUrl,
    failure: &Failure,
    flush: &mut Option<Child>,
    tune_workers: bool,
) -> anyhow::Result<()> {
    let jobs = &post.jobs;
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    // Stable: within a stage the largest tables first, ties (and stage 3) in dump order.
    order.sort_by_key(|&i| {
        let job = &jobs[i];
        let weight = if job.stage == 3 { 0 } else { job.weight };
        (job.stage, std::cmp::Reverse(weight))
    });
    let mut pending: VecDeque<usize> = order.into();
    loop {
        crate::process::check_interrupted()?;
        if failure.failed.load(Ordering::SeqCst) {
            bail!("stopped: a data session failed");
        }
        let data_done = post.streams == 0;
        let mut running: Vec<usize> = workers.iter().filter_map(|w| w.running).collect();
        if pending.is_empty() && running.is_empty() && data_done {
            return Ok(());
        }
        let stage = running
            .iter()
            .chain(pending.front())
            .map(|&i| jobs[i].stage)
            .min()
            .unwrap_or(0);
        let ready = |job: &PostJob| match (&job.tables, job.stage) {
            _ if data_done => true,
            (Some(tables), 0) => tables.iter().all(|t| !post.loading.contains(t)),
            _ => false,
        };
        // Data sessions count against the jobs: indexes fill the cores they leave idle.
        let capacity = workers.len().saturating_sub(post.streams);
        for worker in workers.iter_mut().filter(|w| w.running.is_none()) {
            if running.len() >= capacity {
                break;
            }
            let Some(pos) = pending.iter().position(|&i| {
                jobs[i].stage == stage
                    && ready(&jobs[i])
                    && !running.iter().any(|&r| jobs[r].conflicts(&jobs[i]))
            }) else {
                break;
            };
            let mut job = pending.remove(pos).unwrap();
            let mut sql = String::new();
            if tune_workers && jobs[job].stage == 0 {
                // An index build's parallel workers only help while cores would idle: with
                // every session busy they cost a fifth more CPU for the same index.
                let alone = running.is_empty()
                    && post.streams == 0
                    && !pending.iter().any(|&i| {
                        jobs[i].stage == stage && ready(&jobs[i]) && !jobs[i].conflicts(&jobs[job])
                    });
                sql.push_str(match alone {
                    true => "RESET max_parallel_maintenance_workers;\n",
                    false => "SET max_parallel_maintenance_workers = 0;\n",
                });
            }
            sql.push_str(&jobs[job].sql);
            // Statements that run alone go in one batch: one round trip instead of many.
            while jobs[job].tables.is_none() {
                match pending.front() {
                    Some(&next) if jobs[next].stage == stage && jobs[next].tables.is_none() => {
                        pending.pop_front();
                        sql.push_str(&jobs[next].sql);
                        job = next;
                    }
                    _ => break,
                }
            }
            let stdin = worker.stdin.as_mut().unwrap();
            let sent = stdin
                .write_all(sql.as_bytes())
                .and_then(|()| {
                    let done = restore::own_command(&format!("\\warn {DONE}{job}"));
                    stdin.write_all(format!("\n{done}").as_bytes())
                })
                .and_then(|()| stdin.flush());
            if sent.is_err() {
                // psql has stopped; its stderr, read below, says why.
                worker.stdin = None;
            }
            worker.running = Some(job);
            running.push(job);
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Line(n, line)) => match line.strip_prefix(DONE) {
                Some(_) => workers[n].running = None,
                None => {
                    workers[n].stderr.push_str(&line);
                    workers[n].stderr.push('\n');
                }
            },
            Ok(Event::Closed(n)) => {
                let message = restore::first_error(&workers[n].stderr)
                    .unwrap_or_else(|| "psql stopped unexpectedly".to_string());
                bail!(
                    "restore into {url} failed while adding indexes and constraints: {}",
                    pg_tools::scrub(url, &message)
                );
            }
            Ok(Event::Loaded(table)) => {
                post.loading.remove(&table);
            }
            Ok(Event::StreamEnded) => {
                post.streams = post.streams.saturating_sub(1);
                if post.streams == 0 {
                    if let Some(mut stdin) = flush.as_mut().and_then(|f| f.stdin.take()) {
                        // Best effort: it only moves disk writes earlier.
                        let _ = stdin.write_all(b"checkpoint;\n");
                    }
                    let left = pending.len() + running.len();
                    term::detail(format!(
                        "table data loaded; {left} index and constraint statements to go"
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("restore into {url} failed: its sessions stopped")
            }
        }
    }
}

/// Rewrites the data of a parallel load, table by table; see [`loaded_marker`].
#[cfg(test)]
fn mark_loaded<R: Read>(input: R) -> impl Read {
    dump::edit_lines(input, loaded_marker())
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
                let loaded = restore::own_command(&format!("\\warn {LOADED}{name}"));
                line.extend_from_slice(format!("COMMIT;\n{loaded}").as_bytes());
                table = None;
            }
        } else if dump::is_copy_start(line) {
            let text = String::from_utf8_lossy(line);
            table = dump::copy_target(line);
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

/// Feeds a data session, turning its "loaded" lines into events.
fn feed_data(
    url: &DbUrl,
    psql: Child,
    input: &mut dyn Read,
    bar: &ProgressBar,
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<u64> {
    let tx = tx.clone();
    restore::feed_psql_with(url, psql, input, &|n| bar.inc(n), move |line| {
        match line.strip_prefix(LOADED) {
            Some(table) => {
                let _ = tx.send(Event::Loaded(table.to_string()));
                true
            }
            None => false,
        }
    })
}

/// An open read-only transaction on the source whose snapshot other sessions share
/// (`pg_dump --snapshot`), so data dumped on several sessions is one consistent state.
pub struct Snapshot {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    pub id: String,
}

impl Snapshot {
    pub fn export(sh: &Shell, tools: &PgTools, source: &DbUrl) -> anyhow::Result<Snapshot> {
        let cmd = tools.cmd(sh, Tool::Psql, source, Access::ReadOnly)?.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
        ]);
        let mut command = restore::tool_command(cmd, source);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn_tool()
            .with_context(|| format!("starting psql for {source}"))?;
        let stderr = restore::collect_stderr(child.stderr.take().unwrap());
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let _ = stdin.write_all(
            b"begin transaction isolation level repeatable read read only;\nselect pg_export_snapshot();\n",
        );
        let _ = stdin.flush();
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let id = line.trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            return Err(pg_tools::explain_failure(source, &stderr))
                .context(format!("exporting a snapshot of {source}"));
        }
        Ok(Snapshot {
            child,
            stdin: Some(stdin),
            _stdout: stdout,
            id,
        })
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // End of input ends psql, and with it the read-only transaction.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Sessions of a load that stop early when one of them fails.
#[derive(Default)]
pub struct Failure {
    failed: AtomicBool,
    first: Mutex<Option<anyhow::Error>>,
}

impl Failure {
    fn record(&self, err: anyhow::Error) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            *self.first.lock().unwrap() = Some(err);
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.failed.load(Ordering::SeqCst) {
            true => Err(io::Error::other("stopped: another session failed")),
            false => Ok(()),
        }
    }

    fn into_result(self) -> anyhow::Result<()> {
        match self.first.into_inner().unwrap() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// A reader that fails as soon as another session has failed.
struct Stoppable<'a, R: ?Sized> {
    inner: &'a mut R,
    failure: &'a Failure,
}

impl<R: Read + ?Sized> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.failure.check()?;
        self.inner.read(buf)
    }
}

/// One relation whose data is copied.
#[derive(Debug, Clone)]
struct Relation {
    /// `"schema"."name"`, a pg_dump pattern matching exactly this relation.
    pattern: String,
    /// As the dump writes it: `public.dcim_site`.
    dumped_as: String,
    /// `schema.name` unquoted, as scrub rules name tables.
    name: String,
    bytes: u64,
    /// Whether a COPY block is expected (sequences and excluded tables have none).
    has_data: bool,
    /// The columns `COPY` reads and writes, quoted; generated columns are left out.
    columns: String,
    /// Every column's type has a binary form another server of the same major version
    /// reads back as the same value: a built-in type with send and receive functions,
    /// not one of the `reg*` types, which carry object ids.
    binary: bool,
}

/// Tables at least this large are copied straight from a source session into a target
/// session ([`Straight`]). Smaller ones share a `pg_dump`: two sessions for each of them
/// would cost more than the copy saves.
const STRAIGHT_MIN: u64 = 4 << 20;

/// Splits relations into `n` groups of about equal size, largest first.
fn balance(mut relations: Vec<Relation>, n: usize) -> Vec<Vec<Relation>> {
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

fn pattern(schema: &str, name: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        name.replace('"', "\"\"")
    )
}

/// What a parallel clone of the source needs to know, or why it must run as one stream.
fn relations_to_copy(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    excluded: &[(String, i64)],
) -> anyhow::Result<Result<Vec<Relation>, &'static str>> {
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
            pattern: pattern(schema, name),
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

/// What the parallel direct clone is given.
pub struct DirectClone<'a> {
    pub source: &'a DbUrl,
    pub patterns: &'a [String],
    pub excluded: &'a [(String, i64)],
    pub drop_settings: Vec<&'static str>,
    pub rules: &'a [scrub::Rule],
    pub bar: &'a ProgressBar,
    /// The load replaces an existing database (see [`spawn_flush`]).
    pub replaces: bool,
    /// The source database's encoding, which the temporary database was created with.
    pub encoding: &'a str,
    /// The leak scan, done on the rows as they pass.
    pub scan: Option<&'a leak_scan::Scanner>,
}

/// One piece of a direct clone's data, taken from a queue by the data sessions.
enum DataPiece {
    /// A `pg_dump --data-only` of a group of relations, normalised, scrubbed and marked on
    /// its way into its psql.
    Dump {
        dump: Child,
        psql: Child,
    },
    Straight(Box<Straight>),
}

impl DataPiece {
    fn run(
        self,
        clone: &DirectClone<'_>,
        temp: &DbUrl,
        failure: &Failure,
        tx: &mpsc::Sender<Event>,
        counts: &Mutex<BTreeMap<String, u64>>,
    ) -> anyhow::Result<()> {
        match self {
            DataPiece::Dump { dump, psql } => {
                let (_, scrubbed) = clone_prod::pump_dump(
                    dump,
                    clone.source,
                    clone.drop_settings.clone(),
                    clone.rules,
                    clone.scan,
                    true,
                    |reader| {
                        let mut reader = Stoppable {
                            inner: reader,
                            failure,
                        };
                        feed_data(temp, psql, &mut reader, clone.bar, tx)
                    },
                )?;
                let mut counts = counts.lock().unwrap();
                for (rule, n) in scrubbed {
                    *counts.entry(rule).or_default() += n;
                }
            }
            DataPiece::Straight(mut straight) => {
                straight.run(clone.source, temp, failure, clone.scan)?;
                clone.bar.inc(straight.bytes);
                let _ = tx.send(Event::Loaded(straight.table));
            }
        }
        Ok(())
    }
}

/// A table copied by `COPY ... TO STDOUT` in a source session piped straight into
/// `COPY ... FROM STDIN WITH (FREEZE)` in a target session: no `pg_dump` and no pass
/// through xtask, and in binary form when both servers have the same major version, which
/// the target reads with less work than text.
struct Straight {
    table: String,
    bytes: u64,
    copy_out: Command,
    copy_in: Command,
    /// The table as the leak scan names it, its columns in the copy's order, and whether
    /// the copy is binary.
    scanned: (String, Vec<String>, bool),
}

impl Straight {
    fn new(
        sh: &Shell,
        tools: &PgTools,
        clone: &DirectClone<'_>,
        temp: &DbUrl,
        snapshot: &str,
        relation: &Relation,
    ) -> anyhow::Result<Straight> {
        let binary = relation.binary
            && tools.server_major(clone.source).is_some()
            && tools.server_major(clone.source) == tools.server_major(temp);
        let (format, freeze) = match binary {
            true => (" with (format binary)", "format binary, freeze"),
            false => ("", "freeze"),
        };
        let table = format!("{} ({})", relation.pattern, relation.columns);
        let mut out = vec![
            "begin transaction isolation level repeatable read read only".to_string(),
            format!("set transaction snapshot {}", restore::literal(snapshot)),
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
            let encoding = restore::literal(clone.encoding);
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
            let mut cmd = tools.cmd(sh, Tool::Psql, url, access)?.args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
            ]);
            for statement in statements {
                cmd = cmd.arg("-c").arg(statement);
            }
            Ok(restore::tool_command(cmd, url))
        };
        let columns = dump::CopyHeader::parse(
            format!("COPY t ({}) FROM stdin;", relation.columns).as_bytes(),
        )
        .map(|header| header.columns)
        .unwrap_or_default();
        Ok(Straight {
            table: relation.dumped_as.clone(),
            bytes: relation.bytes,
            copy_out: session(clone.source, Access::ReadOnly, out)?,
            copy_in: session(temp, Access::Load, into)?,
            scanned: (relation.name.clone(), columns, binary),
        })
    }

    fn run(
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
        let out_stderr = restore::collect_stderr(out.stderr.take().unwrap());
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
        let into_stderr = restore::collect_stderr(into.stderr.take().unwrap());
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
                Err(pg_tools::explain_failure(source, &out_stderr))
                    .context(format!("copying {} from {source} failed", self.table))
            }
            _ => {
                let message = restore::first_error(&into_stderr)
                    .unwrap_or_else(|| format!("psql exited with {into_status}"));
                bail!(
                    "restore into {temp} failed: {}",
                    pg_tools::scrub(temp, &message)
                )
            }
        }
    }
}

/// Waits for two sessions; kills both when another session fails or the run is stopped.
fn wait_both(
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
        if failure.failed.load(Ordering::SeqCst) || crate::process::interrupted() {
            for child in [a, b] {
                let _ = child.kill();
                let _ = child.wait();
            }
            crate::process::check_interrupted()?;
            bail!("stopped: another session failed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl DirectClone<'_> {
    /// Copies the source into the empty database `temp` on `jobs()` sessions: the schema,
    /// then table data from one shared snapshot, then indexes and constraints side by side.
    /// Large tables go [`Straight`]; the rest, and every scrubbed table, in balanced groups,
    /// each a `pg_dump --data-only` streamed through xtask into its own psql. The sessions
    /// take the pieces largest first. Returns `None`, having changed nothing, when the
    /// source needs the single stream.
    pub fn run(
        &self,
        sh: &Shell,
        tools: &PgTools,
        temp: &DbUrl,
    ) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
        if jobs() < 2 {
            return Ok(None);
        }
        let relations = match relations_to_copy(sh, tools, self.source, self.excluded)? {
            Ok(relations) => relations,
            Err(why) => {
                term::detail(format!("copying in one stream: {why}"));
                return Ok(None);
            }
        };
        // At most on the source: the snapshot holder, a pg_dump per group (up to one per job)
        // and a straight copy per job; on the target: a psql per group, a straight copy per
        // job, a post-data session per job and the checkpoint session.
        let sessions = jobs_within_limits(
            sh,
            tools,
            &[
                Sessions {
                    url: self.source,
                    per_job: 2,
                    fixed: 1,
                },
                Sessions {
                    url: temp,
                    per_job: 3,
                    fixed: 1,
                },
            ],
        );
        if sessions < 2 {
            return Ok(None);
        }
        let snapshot = match Snapshot::export(sh, tools, self.source) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                term::detail(format!("copying in one stream: {err:#}"));
                return Ok(None);
            }
        };
        let sizes: HashMap<String, u64> = relations
            .iter()
            .map(|r| (r.dumped_as.clone(), r.bytes))
            .collect();
        let loading: HashSet<String> = relations
            .iter()
            .filter(|r| r.has_data)
            .map(|r| r.dumped_as.clone())
            .collect();
        let (straight, mut rest): (Vec<Relation>, Vec<Relation>) =
            relations.into_iter().partition(|r| {
                r.has_data
                    && r.bytes >= STRAIGHT_MIN
                    && !r.columns.is_empty()
                    && !self.rules.iter().any(|rule| rule.table == r.name)
            });
        // pg_dump sets an identity sequence only along with its table: the straight tables
        // stay in the dumps, without their rows.
        let mut patterns = self.patterns.to_vec();
        for relation in &straight {
            patterns.push(relation.pattern.clone());
            rest.push(Relation {
                bytes: 0,
                has_data: false,
                ..relation.clone()
            });
        }
        let rest_bytes: u64 = rest.iter().map(|r| r.bytes).sum();
        let groups = balance(
            rest,
            sessions.min((rest_bytes / STRAIGHT_MIN).max(1) as usize),
        );
        let snap = format!("--snapshot={}", snapshot.id);
        let section = |name: &str| -> anyhow::Result<Child> {
            clone_prod::spawn_dump(
                sh,
                tools,
                self.source,
                &[],
                &[snap.clone(), format!("--section={name}")],
            )
        };
        let post = section("post-data")?;
        let pre = section("pre-data")?;
        let mut dumps = Vec::new();
        for group in &groups {
            let mut args = vec![snap.clone(), "--data-only".to_string()];
            for relation in group {
                args.push(format!("--table={}", relation.pattern));
            }
            let dump = clone_prod::spawn_dump(sh, tools, self.source, &patterns, &args)?;
            dumps.push((group.iter().map(|r| r.bytes).sum::<u64>(), dump));
        }
        let source = self.source.clone();
        let drop_settings = self.drop_settings.clone();
        let post_text = std::thread::spawn(move || {
            clone_prod::pump_dump(post, &source, drop_settings, &[], None, false, |reader| {
                let mut text = String::new();
                reader.read_to_string(&mut text)?;
                Ok(text)
            })
        });

        let started = std::time::Instant::now();
        self.bar.set_message("schema");
        let psql = restore::spawn_psql_load(sh, tools, temp)?;
        clone_prod::pump_dump(
            pre,
            self.source,
            self.drop_settings.clone(),
            &[],
            None,
            false,
            |reader| restore::feed_psql(temp, psql, reader, &|n| self.bar.inc(n)),
        )?;

        phase_done("schema", &started);
        let text = post_text
            .join()
            .map_err(|_| anyhow::anyhow!("reading the post-data dump failed"))??
            .0;
        let (header, jobs) = post_jobs(&text, &sizes);

        self.bar.set_message("data");
        let mut loads = Vec::new();
        for (bytes, dump) in dumps {
            let psql = restore::spawn_psql_load(sh, tools, temp)?;
            loads.push((bytes, DataPiece::Dump { dump, psql }));
        }
        for relation in &straight {
            let straight = Straight::new(sh, tools, self, temp, &snapshot.id, relation)?;
            loads.push((relation.bytes, DataPiece::Straight(Box::new(straight))));
        }
        loads.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        let streams = sessions.min(loads.len());
        let queue = Mutex::new(
            loads
                .into_iter()
                .map(|(_, load)| load)
                .collect::<VecDeque<_>>(),
        );
        let post = PostData {
            header,
            jobs,
            loading,
            streams,
            flush: self.replaces,
        };
        let failure = Failure::default();
        let counts = Mutex::new(BTreeMap::<String, u64>::new());
        let (tx, rx) = mpsc::channel();
        let post_result = std::thread::scope(|scope| {
            for _ in 0..streams {
                let (failure, counts, queue, tx) = (&failure, &counts, &queue, tx.clone());
                scope.spawn(move || {
                    while !failure.failed.load(Ordering::SeqCst) {
                        let Some(load) = queue.lock().unwrap().pop_front() else {
                            break;
                        };
                        if let Err(err) = load.run(self, temp, failure, &tx, counts) {
                            failure.record(err);
                        }
                    }
                    let _ = tx.send(Event::StreamEnded);
                });
            }
            let result = run_post_data(sh, tools, temp, post, sessions, (tx, rx), &failure);
            if let Err(err) = &result {
                failure.record(anyhow::anyhow!("{err:#}"));
            }
            result
        });
        drop(snapshot);
        failure.into_result()?;
        post_result?;
        phase_done("data, indexes and constraints", &started);
        Ok(Some(counts.into_inner().unwrap()))
    }
}

/// Loads the plain dump at `path`, whose entries `toc` lists, into the empty database `temp`
/// on `jobs()` sessions:
/// schema first, then table data spread over the sessions (largest tables first), then
/// indexes and constraints side by side. Returns `false`, having changed nothing, when the
/// file must be loaded in one stream. The rows are leak-scanned as they stream, for the
/// columns `covered` leaves.
#[allow(clippy::too_many_arguments)]
pub fn load_file(
    sh: &Shell,
    tools: &PgTools,
    temp: &DbUrl,
    path: &Path,
    toc: &toc::Toc,
    drop_settings: &[&'static str],
    bar: &ProgressBar,
    replaces: bool,
    covered: &leak_scan::Covered,
) -> anyhow::Result<FileLoad> {
    if jobs() < 2 {
        return Ok(FileLoad::OneStream);
    }
    let open = || File::open(path).with_context(|| format!("reading {}", path.display()));
    let Some(sections) = toc::sections(toc) else {
        term::detail(format!(
            "loading {} in one stream: not laid out as a whole-database pg_dump",
            path.display()
        ));
        return Ok(FileLoad::OneStream);
    };
    // At most a loading psql and a post-data session per job, and the checkpoint session.
    let sessions = jobs_within_limits(
        sh,
        tools,
        &[Sessions {
            url: temp,
            per_job: 2,
            fixed: 1,
        }],
    );
    if sessions < 2 {
        return Ok(FileLoad::OneStream);
    }
    let read_normalised = |start: u64, end: u64| -> anyhow::Result<String> {
        let mut file = open()?;
        file.seek(SeekFrom::Start(start))?;
        let mut text = String::new();
        dump::normalising_reader(file.take(end - start), drop_settings.to_vec())
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text)
    };
    let header = read_normalised(0, toc.header_end)?;

    let started = std::time::Instant::now();
    bar.set_message("schema");
    let psql = restore::spawn_psql_load(sh, tools, temp)?;
    let mut pre = dump::normalising_reader(open()?.take(sections.pre_end), drop_settings.to_vec());
    restore::feed_psql(temp, psql, &mut pre, &|n| bar.inc(n))?;

    phase_done("schema", &started);
    // The loaded schema tells which columns hold text.
    let scanner = leak_scan::Scanner::start(sh, tools, temp, covered)?;
    bar.set_message("data");
    let mut sizes = HashMap::new();
    let mut ranges = Vec::new();
    let mut file = open()?;
    for &i in &sections.data {
        let entry = &toc.entries[i];
        let mut head = vec![0; 4096.min((entry.end - entry.start) as usize)];
        file.seek(SeekFrom::Start(entry.start))?;
        file.read_exact(&mut head)?;
        let table = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|line| dump::copy_target(line.as_bytes()));
        if let Some(table) = table {
            sizes.insert(table, entry.end - entry.start);
        }
        ranges.push((entry.start, entry.end));
    }
    ranges.sort_by_key(|(start, end)| std::cmp::Reverse(end - start));
    let post = header.clone() + &read_normalised(sections.post_start, toc.len)?;
    let (post_header, jobs) = post_jobs(&post, &sizes);
    let streams = sessions.min(sections.data.len());
    let post = PostData {
        header: post_header,
        jobs,
        loading: sizes.keys().cloned().collect(),
        streams,
        flush: replaces,
    };
    let queue = Mutex::new(VecDeque::from(ranges));
    let mut loaders = Vec::new();
    for _ in 0..streams {
        loaders.push((restore::spawn_psql_load(sh, tools, temp)?, open()?));
    }
    let failure = Failure::default();
    let (tx, rx) = mpsc::channel();
    let post_result = std::thread::scope(|scope| {
        for (psql, file) in loaders {
            let (failure, queue, header, bar, tx, scanner) = (
                &failure,
                &queue,
                &header,
                bar.clone(),
                tx.clone(),
                scanner.as_ref(),
            );
            scope.spawn(move || {
                let ranges = Ranges {
                    file,
                    queue,
                    left: 0,
                };
                let ranges: Box<dyn Read> = match scanner {
                    Some(scanner) => Box::new(scanner.reader(ranges)),
                    None => Box::new(ranges),
                };
                let mut reader = Stoppable {
                    inner: &mut header
                        .as_bytes()
                        .chain(dump::edit_lines(ranges, loaded_marker())),
                    failure,
                };
                if let Err(err) = feed_data(temp, psql, &mut reader, &bar, &tx) {
                    failure.record(err);
                }
                let _ = tx.send(Event::StreamEnded);
            });
        }
        let result = run_post_data(sh, tools, temp, post, sessions, (tx, rx), &failure);
        if let Err(err) = &result {
            failure.record(anyhow::anyhow!("{err:#}"));
        }
        result
    });
    failure.into_result()?;
    post_result?;
    phase_done("data, indexes and constraints", &started);
    Ok(FileLoad::Loaded(scanner.map(leak_scan::Scanner::report)))
}

/// How [`load_file`] went.
pub enum FileLoad {
    /// The file must be loaded in one stream; nothing was changed.
    OneStream,
    /// Loaded, with the leak scan of its rows (`None` when the scan is turned off).
    Loaded(Option<leak_scan::Report>),
}

fn phase_done(phase: &str, started: &std::time::Instant) {
    term::detail(format!(
        "{phase} loaded at {}",
        term::human_duration(started.elapsed())
    ));
}

/// Byte ranges of a file, taken one after another from a queue shared between sessions.
struct Ranges<'a> {
    file: File,
    queue: &'a Mutex<VecDeque<(u64, u64)>>,
    left: u64,
}

impl Read for Ranges<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some((start, end)) = self.queue.lock().unwrap().pop_front() else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(start))?;
            self.left = end - start;
        }
        let max = buf.len().min(self.left as usize);
        let n = self.file.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the dump file changed while loading",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = "SET statement_timeout = 0;\n\n\
--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n\
SET default_tablespace = fast;\n\n\
--\n-- Name: big_name_idx; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX big_name_idx ON public.\"Big \"\"One\"\"\" USING btree (name);\n\n\n\
--\n-- Name: p_idx; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX p_idx ON ONLY public.p USING btree (id);\n\n\n\
--\n-- Name: p_1_idx; Type: INDEX ATTACH; Schema: public; Owner: -\n--\n\nALTER INDEX public.p_idx ATTACH PARTITION public.p_1_idx;\n\n\n\
--\n-- Name: t t_tr; Type: TRIGGER; Schema: public; Owner: -\n--\n\nCREATE TRIGGER t_tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n\n\
--\n-- Name: t t_big_fk; Type: FK CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_big_fk FOREIGN KEY (big_id) REFERENCES public.\"Big \"\"One\"\"\"(id) DEFERRABLE INITIALLY DEFERRED;\n\n\n";

    #[test]
    fn post_data_jobs_know_their_tables_and_stages() {
        let sizes = HashMap::from([("public.\"Big \"\"One\"\"\"".to_string(), 1000)]);
        let (header, jobs) = post_jobs(POST, &sizes);
        assert_eq!(header, "SET statement_timeout = 0;\n\n");
        let summary: Vec<(u8, Option<Vec<&str>>, bool, u64)> = jobs
            .iter()
            .map(|j| {
                let tables = j
                    .tables
                    .as_ref()
                    .map(|t| t.iter().map(String::as_str).collect());
                (j.stage, tables, j.exclusive, j.weight)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, Some(vec!["public.t"]), true, 0),
                (0, Some(vec!["public.\"Big \"\"One\"\"\""]), false, 1000),
                (0, Some(vec!["public.p"]), false, 0),
                (1, None, true, 0),
                (3, None, true, 0),
                (
                    2,
                    Some(vec!["public.t", "public.\"Big \"\"One\"\"\""]),
                    true,
                    1000
                ),
            ]
        );
        assert!(jobs[1]
            .sql
            .starts_with("SET default_tablespace = fast;\n--\n-- Name: big_name_idx"));
        assert!(
            jobs[0].sql.starts_with("--\n-- Name: t t_pkey"),
            "{}",
            jobs[0].sql
        );
    }

    #[test]
    fn only_lock_sharing_statements_run_together() {
        let (_, jobs) = post_jobs(POST, &HashMap::new());
        let (pkey, big_index, p_index, attach, fk) =
            (&jobs[0], &jobs[1], &jobs[2], &jobs[3], &jobs[5]);
        assert!(!big_index.conflicts(p_index), "indexes on different tables");
        assert!(
            !big_index.conflicts(big_index),
            "two indexes on one table share its lock"
        );
        assert!(pkey.conflicts(fk), "both alter public.t");
        assert!(
            big_index.conflicts(fk),
            "the key references the indexed table"
        );
        assert!(!pkey.conflicts(p_index));
        assert!(attach.conflicts(p_index), "unknown tables run alone");
    }

    #[test]
    fn names_after_keywords() {
        assert_eq!(
            after_keyword("CREATE INDEX i ON public.t USING btree (a)", " ON "),
            Some("public.t".into())
        );
        assert_eq!(
            after_keyword("ALTER TABLE ONLY \"s\"\"x\".t\n    ADD", "ALTER TABLE "),
            Some("\"s\"\"x\".t".into())
        );
        assert_eq!(
            after_keyword("REFERENCES public.t(id)", "REFERENCES "),
            Some("public.t".into())
        );
        assert_eq!(after_keyword("CREATE INDEX i ON public.t+x", " ON "), None);
        assert_eq!(after_keyword("CREATE INDEX i", " ON "), None);
        assert_eq!(
            dump::copy_target(b"COPY public.\"a (b\" (id) FROM stdin;\n"),
            Some("public.\"a (b\"".into())
        );
        assert_eq!(
            dump::copy_target(b"COPY public.t FROM stdin;\n"),
            Some("public.t".into())
        );
    }

    #[test]
    fn loaded_markers_follow_each_copy_block() {
        let mut out = String::new();
        mark_loaded(toc::tests::DUMP.as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.matches("\\warn np:loaded public.t\n").count(), 1);
        assert!(
            out.contains("BEGIN;\nTRUNCATE ONLY public.t;\nCOPY public.t (id) FROM stdin WITH (FREEZE);\n--\n"),
            "{out}"
        );
        let loaded = restore::own_command("\\warn np:loaded public.t");
        assert!(out.contains(&format!("\\.\nCOMMIT;\n{loaded}")), "{out}");
        let undone = out
            .replace(&format!("COMMIT;\n{loaded}"), "")
            .replace("BEGIN;\nTRUNCATE ONLY public.t;\n", "")
            .replace(" WITH (FREEZE)", "");
        assert_eq!(undone, toc::tests::DUMP);
    }

    #[test]
    fn jobs_fit_in_every_limit_they_count_against() {
        let room = |server: &str, role: &str, free: i64| Room {
            server: server.into(),
            role: role.into(),
            server_free: free,
            server_detail: format!("server {server}"),
            role_free: None,
            database_free: None,
        };
        let (source, target) = (
            DbUrl::parse("postgres://u@prod/netpoint").unwrap(),
            DbUrl::parse("postgres://u@dev/netpoint").unwrap(),
        );
        let demands = [
            Sessions {
                url: &source,
                per_job: 2,
                fixed: 1,
            },
            Sessions {
                url: &target,
                per_job: 3,
                fixed: 1,
            },
        ];
        // Roomy servers: as asked.
        assert_eq!(
            fit(16, &demands, &[room("a", "u", 97), room("b", "u", 97)]),
            (16, None)
        );
        // Two servers, each its own limit: (17 - 1) / 2 on the source, (17 - 1) / 3 on the target.
        let (jobs, why) = fit(16, &demands, &[room("a", "u", 17), room("b", "u", 17)]);
        assert_eq!(jobs, 5);
        assert!(why
            .unwrap()
            .starts_with("server b, and a load opens 3 sessions there per job plus 1"));
        // One server: both count against it, (17 - 2) / 5.
        let (jobs, why) = fit(16, &demands, &[room("a", "u", 17), room("a", "u", 17)]);
        assert_eq!(jobs, 3);
        assert!(why.unwrap().contains("5 sessions there per job plus 2"));
        // A role's limit counts both sides when they share the role on one server.
        let mut limited = [room("a", "u", 97), room("a", "u", 97)];
        limited[0].role_free = Some((12, "role u".into()));
        limited[1].role_free = Some((12, "role u".into()));
        assert_eq!(fit(16, &demands, &limited).0, 2);
        limited[1].role = "other".into();
        limited[1].role_free = None;
        assert_eq!(fit(16, &demands, &limited).0, 5);
        // A database's limit counts only the sessions on it; no room at all is no job.
        let mut full = [room("a", "u", 97), room("b", "u", 97)];
        full[1].database_free = Some((7, "database".into()));
        assert_eq!(fit(16, &demands, &full).0, 2);
        full[0].server_free = -3;
        assert_eq!(fit(16, &demands, &full).0, 0);
    }

    #[test]
    fn groups_are_balanced_largest_first() {
        let relation = |name: &str, bytes| Relation {
            pattern: pattern("public", name),
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
        assert_eq!(pattern("we\"ird", "t"), "\"we\"\"ird\".\"t\"");
    }
}
