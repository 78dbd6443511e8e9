//! One long-lived psql session on the source, inside one read-only repeatable-read
//! transaction: every query of a subset (the roots, the closure, the rows) sees the same
//! snapshot, and nothing is written, not even a temporary table (the source may be a hot
//! standby). Each query answers on one line; `COPY ... TO STDOUT` is read to a marker.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use anyhow::Context as _;
use serde::de::DeserializeOwned;

use crate::{
    context::Context,
    pg::{self, DbUrl},
    pipeline::snapshot::{open_read_only, OpenSession, READ_ONLY_SNAPSHOT},
    process,
};

/// The line psql prints after the rows of a `COPY ... TO STDOUT`: no row of the text format
/// can read `\.` (a backslash in a value is written doubled).
const COPY_END: &[u8] = b"\\.\n";

pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
    source: DbUrl,
    /// Why the session ended, once it has.
    ended: Option<String>,
    /// Set when the run stops while the subset is computed beside its other work.
    abandon: Option<Arc<AtomicBool>>,
}

impl Session {
    pub fn open(cx: &Context, source: &DbUrl) -> anyhow::Result<Session> {
        let OpenSession {
            child,
            stdin,
            stdout,
            stderr,
        } = open_read_only(cx, source)?;
        let mut session = Session {
            child,
            stdin: Some(stdin),
            stdout,
            stderr: Some(stderr),
            source: source.clone(),
            ended: None,
            abandon: None,
        };
        session.send(READ_ONLY_SNAPSHOT)?;
        // The server's major chooses the pg_dump of the schema's sections, which may start
        // before anything else has asked the server.
        let version = session
            .line("select current_setting('server_version_num');")
            .with_context(|| format!("opening a read-only snapshot of {source}"))?;
        let num: u32 = version
            .parse()
            .with_context(|| format!("unexpected server version `{version}` from {source}"))?;
        cx.tools.learn_major(source, num / 10000);
        Ok(session)
    }

    pub fn source(&self) -> &DbUrl {
        &self.source
    }

    /// Makes every query after `flag` is set fail at once: the run that computes the
    /// subset beside other work stops it so when that work fails.
    pub fn abandon_when(&mut self, flag: Arc<AtomicBool>) {
        self.abandon = Some(flag);
    }

    fn send(&mut self, sql: &str) -> anyhow::Result<()> {
        if self
            .abandon
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            anyhow::bail!("the subset was abandoned: the run stopped");
        }
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(sql.as_bytes())
                .and_then(|()| stdin.flush())
                .is_ok(),
            None => false,
        };
        match written {
            true => Ok(()),
            false => Err(self.failure()),
        }
    }

    /// Exports the session's snapshot for `pg_dump --snapshot`: it stays importable while
    /// this session's transaction is open.
    pub fn export_snapshot(&mut self) -> anyhow::Result<String> {
        let id = self.line("select pg_export_snapshot();")?;
        match !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            true => Ok(id),
            false => anyhow::bail!("unexpected snapshot id from {}: {id}", self.source),
        }
    }

    /// The one-line answer of a query that returns one row of one column.
    pub fn line(&mut self, sql: &str) -> anyhow::Result<String> {
        self.send(&format!("{sql}\n"))?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                line.pop();
                Ok(line)
            }
            _ => Err(self.failure()),
        }
    }

    /// The answer of a query that returns one JSON value.
    pub fn json<T: DeserializeOwned>(&mut self, sql: &str) -> anyhow::Result<T> {
        let line = self.line(sql)?;
        serde_json::from_str(&line).with_context(|| {
            let shown: String = line.chars().take(200).collect();
            format!("unexpected answer from {}: {shown}", self.source)
        })
    }

    /// Runs `COPY (query) TO STDOUT` and writes its rows to `out`; returns how many.
    pub fn copy_out(&mut self, query: &str, out: &mut dyn Write) -> anyhow::Result<u64> {
        self.send(&format!("copy ({query}) to stdout;\nselect '\\.';\n"))?;
        let mut rows = 0;
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match self.stdout.read_until(b'\n', &mut buf) {
                Ok(n) if n > 0 && buf.ends_with(b"\n") => {}
                _ => return Err(self.failure()),
            }
            if buf == COPY_END {
                return Ok(rows);
            }
            out.write_all(&buf).context("writing the subset's rows")?;
            rows += 1;
        }
    }

    /// What ended the session, as one line: the server's error, a recovery conflict on a
    /// standby, or the connection's failure.
    fn failure(&mut self) -> anyhow::Error {
        if let Some(ended) = &self.ended {
            return anyhow::anyhow!("{ended}");
        }
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        let stderr = pg::scrub(&self.source, &stderr);
        let message = if stderr.contains("conflict with recovery") {
            format!(
                "the standby {} cancelled a query of the subset for a recovery conflict: set hot_standby_feedback = on there (or raise max_standby_streaming_delay) and run again",
                self.source
            )
        } else if let Some(line) = pg::first_error(&stderr).filter(|l| l.contains("ERROR:")) {
            // `psql:<stdin>:12: ERROR:  column "x" does not exist`: the server's words.
            let line = line.split_once("ERROR:").map_or(line.as_str(), |(_, m)| m);
            line.trim().to_string()
        } else if process::stop_requested() {
            "interrupted".to_string()
        } else {
            pg::explain_failure(&self.source, &stderr).to_string()
        };
        self.ended = Some(message.clone());
        anyhow::anyhow!(message)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // End of input ends psql, and with it the read-only transaction.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
