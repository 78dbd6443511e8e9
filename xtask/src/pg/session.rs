//! Sessions on a server: short psql queries (stoppable by an interrupt), the libpq
//! environment a session gets, and tool failures turned into one clear line.

use std::process::Command;

use anyhow::Context;
use xshell::{Cmd, Shell};

use super::{Access, DbUrl, PgTools, Server, Tool};
use crate::{
    process::{self, SpawnTool},
    term,
};

impl PgTools {
    /// Runs a query with `psql` and returns its unaligned, tuples-only output.
    pub fn query(
        &self,
        sh: &Shell,
        url: &DbUrl,
        access: Access,
        sql: &str,
    ) -> anyhow::Result<String> {
        let cmd = self
            .cmd(sh, Tool::Psql, url, access)?
            .args(QUERY_ARGS)
            .args(["-c", sql]);
        let output = run_psql(cmd, url, None)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(explain_failure(url, &stderr));
        }
        Ok(answer(&output))
    }

    /// Runs a query like [`PgTools::query`], but hands a server error back as a [`Failure`]
    /// with its SQLSTATE, for callers that decide by it (never by message text, which
    /// depends on the server's `lc_messages`). Connection problems are errors as usual.
    pub fn query_state(
        &self,
        sh: &Shell,
        url: &DbUrl,
        sql: &str,
    ) -> anyhow::Result<Result<String, Failure>> {
        let cmd = self
            .cmd(sh, Tool::Psql, url, Access::ReadWrite)?
            .args(QUERY_ARGS)
            .args(["-v", "VERBOSITY=verbose", "-c", sql]);
        let output = run_psql(cmd, url, None)?;
        if output.status.success() {
            return Ok(Ok(answer(&output)));
        }
        let stderr = scrub(url, &String::from_utf8_lossy(&output.stderr));
        match sqlstate(&stderr) {
            Some(state) => Ok(Err(Failure { state, stderr })),
            None => Err(explain_failure(url, &stderr)),
        }
    }

    /// A query session that reads its SQL from stdin: for statements that carry sensitive
    /// values, and for sessions held open while others work (a snapshot, a lock).
    pub fn stdin_session<'a>(
        &self,
        sh: &'a Shell,
        url: &DbUrl,
        access: Access,
    ) -> anyhow::Result<Cmd<'a>> {
        Ok(self
            .cmd(sh, Tool::Psql, url, access)?
            .args(QUERY_ARGS)
            .args(["-f", "-"]))
    }

    /// Runs SQL given on psql's stdin (for statements that carry sensitive values).
    pub fn query_stdin(&self, sh: &Shell, url: &DbUrl, sql: &str) -> anyhow::Result<String> {
        let cmd = self.stdin_session(sh, url, Access::ReadWrite)?;
        let output = run_psql(cmd, url, Some(sql))?;
        if !output.status.success() {
            return Err(explain_failure(
                url,
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        Ok(answer(&output))
    }

    /// Starts psql on `sql` detached from this run: it finishes after the run exits, a
    /// terminal closing does not stop it, and nothing waits for it or reads what it says.
    /// For work whose result the next run finds (or not) on the server, such as a drop that
    /// forces a checkpoint nobody should wait for.
    pub fn detached(&self, sh: &Shell, url: &DbUrl, sql: &str) -> anyhow::Result<()> {
        use std::{io::Write, process::Stdio};
        let mut cmd = tool_command(self.stdin_session(sh, url, Access::ReadWrite)?, url);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        process::detach(&mut cmd);
        let mut child = cmd.spawn().context("starting psql")?;
        let mut stdin = child.stdin.take().context("psql's stdin")?;
        stdin.write_all(sql.as_bytes()).context("writing to psql")?;
        Ok(())
    }

    /// Connects once to learn the server's version and identity, turning connection
    /// failures into clear errors.
    pub fn server(&self, sh: &Shell, url: &DbUrl, access: Access) -> anyhow::Result<Server> {
        Ok(self.server_and(sh, url, access, None)?.0)
    }

    /// [`PgTools::server`], and the one-line answer of query `then` in the same session.
    pub fn server_and(
        &self,
        sh: &Shell,
        url: &DbUrl,
        access: Access,
        then: Option<&str>,
    ) -> anyhow::Result<(Server, String)> {
        let sql = format!(
            "select json_build_object('version_num', current_setting('server_version_num'), \
             'version', current_setting('server_version'), \
             'sysid', case when has_function_privilege('pg_catalog.pg_control_system()', 'execute') \
             then (select system_identifier::text from pg_catalog.pg_control_system()) end, \
             'started', pg_postmaster_start_time()::text, 'port', current_setting('port'), \
             'recovery', pg_is_in_recovery(), \
             'database_oid', (select oid::text from pg_database where datname = current_database())){}",
            then.map(|then| format!("; {then}")).unwrap_or_default()
        );
        let answer = self.query(sh, url, access, &sql)?;
        let (out, then) = match then {
            Some(_) => answer
                .split_once('\n')
                .map(|(out, then)| (out.to_string(), then.to_string()))
                .unwrap_or((answer, String::new())),
            None => (answer, String::new()),
        };
        let mut server: Server = serde_json::from_str(&out)
            .with_context(|| format!("unexpected answer from {url} about its version: {out}"))?;
        let num: u32 = server
            .num
            .parse()
            .with_context(|| format!("unexpected server version `{}` from {url}", server.num))?;
        server.major = num / 10000;
        self.servers
            .lock()
            .unwrap()
            .insert(url.host_port(), server.major);
        Ok((server, then))
    }
}

/// How a query session runs psql: no startup file, quiet, unaligned tuples only, stopping
/// at the first error.
pub const QUERY_ARGS: &[&str] = &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"];

/// A query session's answer: its output without the final newline.
pub fn answer(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// Runs one short psql session as a tool an interrupt stops (a query waiting on a lock must
/// not hold up Ctrl-C), with `stdin` as its input.
pub fn run_psql(
    cmd: xshell::Cmd<'_>,
    url: &DbUrl,
    stdin: Option<&str>,
) -> anyhow::Result<std::process::Output> {
    use std::{io::Write, process::Stdio};
    // A session the signal stopped fails as interrupted, not with psql's words.
    let stop = || match process::stop_requested() {
        true => Err(anyhow::anyhow!("interrupted")),
        false => Ok(()),
    };
    log(&cmd, url);
    let mut command = std::process::Command::from(cmd);
    command
        .stdin(match stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Before a signal, the session is a tool the signal stops; after one, it is the run
    // cleaning up (removing its temporary database), which must go to its end.
    let spawned = match process::interrupted() {
        false => process::spawn(&mut command),
        true => process::spawn_holder(&mut command),
    };
    let mut child = spawned.with_context(|| format!("running psql against {url}"))?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let output = child
        .wait_with_output()
        .with_context(|| format!("running psql against {url}"))?;
    if let Some(feeder) = feeder {
        // A psql that stopped early closes its end; its exit status says why.
        let _ = feeder.join();
    }
    if !output.status.success() {
        stop()?;
    }
    Ok(output)
}

/// A statement the server refused.
#[derive(Debug)]
pub struct Failure {
    /// The SQLSTATE code, such as `55006` (object in use).
    pub state: String,
    stderr: String,
}

impl Failure {
    pub fn into_error(self, url: &DbUrl) -> anyhow::Error {
        explain_failure(url, &self.stderr)
    }
}

/// The SQLSTATE of the first error in psql's verbose output (`ERROR:  55006: ...`, with the
/// severity word in the server's language).
pub fn sqlstate(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once(":  ")?;
        let (code, _) = rest.split_once(": ")?;
        (code.len() == 5
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
        .then(|| code.to_string())
    })
}

/// libpq environment for a session: the URL's parts plus what `access` asks of the session.
pub fn session_env(url: &DbUrl, access: Access) -> Vec<(String, String)> {
    let mut env = url.pg_env();
    // The client's own messages (connection refused, broken pipe) in one language, the one
    // the tool reads; the server's come in its own, and decisions use SQLSTATE codes.
    env.push(("LC_MESSAGES".to_string(), "C".to_string()));
    let option = match access {
        Access::ReadOnly => "-c default_transaction_read_only=on",
        Access::Load => "-c synchronous_commit=off",
        Access::ReadWrite => return env,
    };
    match env.iter_mut().find(|(key, _)| key == "PGOPTIONS") {
        Some((_, options)) => *options = format!("{options} {option}"),
        None => env.push(("PGOPTIONS".to_string(), option.to_string())),
    }
    env
}

/// Prints an external command in `--verbose` mode. Commands carry no secrets in argv, so
/// they are shown as they run, with the (masked) connection they use.
pub fn log(cmd: &Cmd<'_>, url: &DbUrl) {
    if term::verbose() {
        term::detail(format!("{cmd}  [{}]", url.masked()));
    }
}

/// Turns a libpq tool's stderr into one line that says what is wrong and what to do.
pub fn explain_failure(url: &DbUrl, stderr: &str) -> anyhow::Error {
    let stderr = scrub(url, stderr);
    let user = url.user.as_deref().unwrap_or("(default user)");
    let at = url.host_port();
    let message = if stderr.contains("password authentication failed") {
        format!("wrong password for user `{user}` at {at}: fix the password in the URL ({url})")
    } else if stderr.contains("no password supplied") || stderr.contains("fe_sendauth") {
        format!("the server at {at} asks user `{user}` for a password: add it to the URL or a passfile ({url})")
    } else if stderr.contains("could not translate host name")
        || stderr.contains("Name or service not known")
    {
        format!("unknown host in {url}: check the host name")
    } else if stderr.contains("Connection refused") {
        format!("cannot connect to {at}: connection refused; is the server running and the port right? ({url})")
    } else if stderr.contains("timeout expired") || stderr.contains("timed out") {
        format!(
            "cannot reach {at}: connection timed out; check the host, port and firewall ({url})"
        )
    } else if stderr.contains("No such file or directory") && stderr.contains("socket") {
        format!("no server listening at {at}: start it or give a host in the URL ({url})")
    } else if stderr.contains("affected by row-level security policy") {
        format!("row-level security hides rows of a table from user `{user}` at {at}: clone as the tables' owner or a role with BYPASSRLS ({url})")
    } else if let Some(db) = missing(&stderr, "database") {
        format!("database `{db}` does not exist at {at}: create it or fix the database name in the URL ({url})")
    } else if let Some(role) = missing(&stderr, "role") {
        format!("user `{role}` does not exist at {at}: fix the user in the URL ({url})")
    } else {
        let line = stderr
            .lines()
            .map(str::trim)
            .find(|line| line.contains("ERROR") || line.contains("FATAL") || line.contains("error"))
            .or_else(|| stderr.lines().map(str::trim).find(|line| !line.is_empty()))
            .unwrap_or("the command failed without a message");
        format!("{line} ({url})")
    };
    anyhow::anyhow!(message)
}

pub fn missing<'a>(stderr: &'a str, kind: &str) -> Option<&'a str> {
    let start = stderr.find(&format!("{kind} \""))? + kind.len() + 2;
    let rest = &stderr[start..];
    let end = rest.find('"')?;
    rest[end..]
        .starts_with("\" does not exist")
        .then(|| &rest[..end])
}

/// Removes the password from text a tool printed, should it ever echo one.
pub fn scrub(url: &DbUrl, text: &str) -> String {
    match url.secret() {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_string(),
    }
}

/// A tool's command, shown in `--verbose` mode, whose child dies with us, so a killed run
/// leaves no tool behind still writing.
pub fn tool_command(cmd: xshell::Cmd<'_>, url: &DbUrl) -> Command {
    log(&cmd, url);
    Command::from(cmd)
}

/// The first `ERROR:`/`FATAL:` line a tool printed, with its location.
pub fn first_error(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| line.contains("ERROR:") || line.contains("FATAL:") || line.contains("error:"))
        .map(|line| line.trim().to_string())
}

/// One psql session kept open for a run's many short queries on one server (its
/// maintenance database): a query costs a round trip instead of a process start, a
/// connection and an authentication. A query that fails ends the session (`ON_ERROR_STOP`),
/// and the next one opens another. After an interrupt, queries run as [`PgTools::query`]
/// does, each a session of the run cleaning up.
pub struct QuerySession {
    url: DbUrl,
    open: std::cell::RefCell<Option<Open>>,
    /// What psql said when the last failed query ended its session.
    last_failure: std::cell::RefCell<Option<String>>,
}

struct Open {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr: std::thread::JoinHandle<String>,
}

/// The line that ends each answer: no query of ours prints it.
const ANSWER_END: &str = "\u{1}netpoint-answer-end";

impl QuerySession {
    pub fn new(url: &DbUrl) -> QuerySession {
        QuerySession {
            url: url.clone(),
            open: std::cell::RefCell::new(None),
            last_failure: std::cell::RefCell::new(None),
        }
    }

    /// Runs `sql` (one or more statements) and returns its unaligned, tuples-only output,
    /// as [`PgTools::query`] does.
    pub fn query(&self, sh: &Shell, tools: &PgTools, sql: &str) -> anyhow::Result<String> {
        if process::interrupted() {
            *self.open.borrow_mut() = None;
            return tools.query(sh, &self.url, Access::ReadWrite, sql);
        }
        let mut open = self.open.borrow_mut();
        if open.is_none() {
            *open = Some(self.start(sh, tools)?);
        }
        let session = open.as_mut().unwrap();
        match ask(session, sql) {
            Some(answer) => Ok(answer),
            None => {
                let mut ended = open.take().unwrap();
                drop(ended.stdin);
                let _ = ended.child.kill();
                let _ = ended.child.wait();
                let stderr = ended.stderr.join().unwrap_or_default();
                if process::stop_requested() {
                    anyhow::bail!("interrupted");
                }
                let error = explain_failure(&self.url, &stderr);
                *self.last_failure.borrow_mut() = Some(scrub(&self.url, &stderr));
                Err(error)
            }
        }
    }

    /// Starts the session's psql now, so that it connects while the run does other work;
    /// a failure is reported by the first query.
    pub fn connect_early(&self, sh: &Shell, tools: &PgTools) {
        let mut open = self.open.borrow_mut();
        if open.is_none() && !process::interrupted() {
            *open = self.start(sh, tools).ok();
        }
    }

    /// Runs `sql` as [`PgTools::query_state`] does: a server error comes back as a
    /// [`Failure`] with its SQLSTATE (the session it ended is replaced by the next query).
    pub fn query_state(
        &self,
        sh: &Shell,
        tools: &PgTools,
        sql: &str,
    ) -> anyhow::Result<Result<String, Failure>> {
        if process::interrupted() {
            *self.open.borrow_mut() = None;
            return tools.query_state(sh, &self.url, sql);
        }
        // Only this statement's errors carry their SQLSTATE; the others read as usual.
        let sql = sql.trim_end();
        let end = if sql.ends_with(';') { "" } else { ";" };
        let verbose = format!("\\set VERBOSITY verbose\n{sql}{end}\n\\set VERBOSITY default");
        self.last_failure.borrow_mut().take();
        match self.query(sh, tools, &verbose) {
            Ok(answer) => Ok(Ok(answer)),
            Err(err) => match self.last_failure.borrow_mut().take() {
                Some(stderr) => match sqlstate(&stderr) {
                    Some(state) => Ok(Err(Failure { state, stderr })),
                    None => Err(err),
                },
                None => Err(err),
            },
        }
    }

    fn start(&self, sh: &Shell, tools: &PgTools) -> anyhow::Result<Open> {
        use std::process::Stdio;
        let cmd = tools.stdin_session(sh, &self.url, Access::ReadWrite)?;
        let mut child = tool_command(cmd, &self.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_tool()
            .with_context(|| format!("running psql against {}", self.url))?;
        Ok(Open {
            stderr: process::collect_stderr(child.stderr.take().unwrap()),
            stdin: child.stdin.take().unwrap(),
            stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
            child,
        })
    }
}

/// Sends `sql` and reads its answer up to the end line; none when the session ended.
fn ask(session: &mut Open, sql: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    // Statements end at a semicolon on psql's input: the last one is given one if need be
    // (a psql command, on a line of its own, takes none).
    let sql = sql.trim_end();
    let last_line = sql.rsplit('\n').next().unwrap_or_default();
    let end = match sql.ends_with(';') || last_line.starts_with('\\') {
        true => "",
        false => ";",
    };
    let sent = format!("{sql}{end}\n\\echo {ANSWER_END}\n");
    session.stdin.write_all(sent.as_bytes()).ok()?;
    session.stdin.flush().ok()?;
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        if session.stdout.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end_matches('\n') == ANSWER_END {
            return Some(answer.trim_end_matches('\n').to_string());
        }
        answer.push_str(&line);
    }
}

impl Drop for QuerySession {
    fn drop(&mut self) {
        if let Some(open) = self.open.get_mut().take() {
            let Open {
                mut child, stdin, ..
            } = open;
            // End of input: psql disconnects and exits.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_in_any_language() {
        assert_eq!(
            sqlstate("ERROR:  55006: database \"x\" is being accessed by other users\nDETAIL:  1 other\n").as_deref(),
            Some("55006")
        );
        assert_eq!(
            sqlstate("psql:<stdin>:3: FEHLER:  22023: Kodierung passt nicht\n").as_deref(),
            Some("22023")
        );
        assert_eq!(
            sqlstate("ОШИБКА:  42P01: отношение не существует\n").as_deref(),
            Some("42P01")
        );
        assert_eq!(sqlstate("psql: error: connection to server failed\n"), None);
    }

    #[test]
    fn failures_become_one_clear_line() {
        let url = DbUrl::parse("postgres://app:s3cret@db.local:5433/netpoint").unwrap();
        let cases = [
            ("psql: error: connection to server at \"db.local\" (10.0.0.1), port 5433 failed: FATAL:  password authentication failed for user \"app\"", "wrong password"),
            ("psql: error: connection to server at \"db.local\", port 5433 failed: Connection refused", "connection refused"),
            ("psql: error: could not translate host name \"db.local\" to address: Name or service not known", "unknown host"),
            ("psql: error: connection to server at \"db.local\" failed: FATAL:  database \"netpoint\" does not exist", "database `netpoint` does not exist"),
            ("psql: error: connection failed: FATAL:  role \"app\" does not exist", "user `app` does not exist"),
            ("ERROR:  query would be affected by row-level security policy for table \"t\"", "a role with BYPASSRLS"),
        ];
        for (stderr, expected) in cases {
            let message = explain_failure(&url, stderr).to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("db.local:5433"), "{message}");
            assert!(
                !message.contains("s3cret") && !message.contains('\n'),
                "{message}"
            );
        }
    }

    #[test]
    fn sources_are_read_only() {
        let url = DbUrl::parse("postgres://u@h/db?options=-c%20work_mem%3D64MB").unwrap();
        let env = session_env(&url, Access::ReadOnly);
        let options = &env.iter().find(|(k, _)| k == "PGOPTIONS").unwrap().1;
        assert_eq!(
            options,
            "-c work_mem=64MB -c default_transaction_read_only=on"
        );
        assert!(!session_env(&url, Access::ReadWrite)
            .iter()
            .any(|(_, v)| v.contains("read_only")));
    }

    #[test]
    fn loads_do_not_wait_for_each_commit_to_reach_disk() {
        let url = DbUrl::parse("postgres://u@h/db").unwrap();
        let env = session_env(&url, Access::Load);
        let options = &env.iter().find(|(k, _)| k == "PGOPTIONS").unwrap().1;
        assert_eq!(options, "-c synchronous_commit=off");
        assert!(!session_env(&url, Access::ReadWrite)
            .iter()
            .any(|(k, _)| k == "PGOPTIONS"));
    }
}
