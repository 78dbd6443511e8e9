//! The snapshot holder: one read-only transaction on the source whose snapshot every
//! session of a parallel clone shares.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Stdio},
    thread::JoinHandle,
};

use anyhow::Context as _;

use crate::{
    context::Context,
    pg::{self, Access, DbUrl},
    process::{self, SpawnTool},
};

/// What a session that reads the source for a whole run sends first: as pg_dump does for
/// itself, no timeout a role's defaults set may end it halfway, and one read-only snapshot.
pub const READ_ONLY_SNAPSHOT: &str = "set statement_timeout = 0;\nset lock_timeout = 0;\n\
     set idle_in_transaction_session_timeout = 0;\n\
     begin transaction isolation level repeatable read read only;\n";

/// An open read-only transaction on the source whose snapshot other sessions share
/// (`pg_dump --snapshot`), so data dumped on several sessions is one consistent state.
pub struct Snapshot {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
    pub id: String,
}

/// A read-only psql session on the source, kept open: SQL goes to its stdin, answers come
/// from its stdout, and its stderr is collected for the error a failure explains.
pub struct OpenSession {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
    pub stderr: JoinHandle<String>,
}

/// Starts a read-only psql session on `source` that reads its SQL from stdin.
pub fn open_read_only(cx: &Context, source: &DbUrl) -> anyhow::Result<OpenSession> {
    let cmd = cx.tools.stdin_session(&cx.sh, source, Access::ReadOnly)?;
    let mut command = pg::tool_command(cmd, source);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn_tool()
        .with_context(|| format!("starting psql for {source}"))?;
    Ok(OpenSession {
        stderr: process::collect_stderr(child.stderr.take().unwrap()),
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        child,
    })
}

impl Snapshot {
    pub fn export(cx: &Context, source: &DbUrl) -> anyhow::Result<Snapshot> {
        let OpenSession {
            mut child,
            mut stdin,
            mut stdout,
            stderr,
        } = open_read_only(cx, source)?;
        // No timeout may end the holder, or a count, while other sessions need the snapshot.
        let _ = stdin.write_all(READ_ONLY_SNAPSHOT.as_bytes());
        let _ = stdin.write_all(b"select pg_export_snapshot();\n");
        let _ = stdin.flush();
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let id = line.trim().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            return Err(pg::explain_failure(source, &stderr))
                .context(format!("exporting a snapshot of {source}"));
        }
        Ok(Snapshot {
            child,
            stdin: Some(stdin),
            stdout,
            id,
        })
    }
}

impl Snapshot {
    /// The rows of `pattern` (a quoted `"schema"."name"`) as the snapshot sees them.
    pub fn count(&mut self, source: &DbUrl, pattern: &str) -> anyhow::Result<u64> {
        let failed = || {
            anyhow::anyhow!("counting the rows of {pattern} in the snapshot of {source} failed: its session stopped")
        };
        let stdin = self.stdin.as_mut().ok_or_else(failed)?;
        stdin
            .write_all(format!("select count(*) from {pattern};\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|_| failed())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|_| failed())?;
        line.trim().parse().map_err(|_| failed())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // End of input ends psql, and with it the read-only transaction.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
