//! The PostgreSQL client tools (`pg_dump`, `psql`): finding them, checking their versions
//! against a server, and running them with credentials passed only through the environment.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context};
use xshell::{Cmd, Shell};

use crate::{db_url::DbUrl, term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    PgDump,
    Psql,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::PgDump => "pg_dump",
            Tool::Psql => "psql",
        }
    }
}

/// How a session on a server is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every transaction is read-only (`default_transaction_read_only=on`): for sources.
    ReadOnly,
    ReadWrite,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub path: PathBuf,
    pub major: u32,
}

/// What a server told us about itself.
#[derive(Clone, Debug)]
pub struct Server {
    pub major: u32,
    pub version: String,
}

pub struct PgTools {
    pg_dump: Option<Client>,
    psql: Option<Client>,
}

impl PgTools {
    /// Looks the tools up on `PATH`; a missing one is an error only when it is needed.
    pub fn discover(sh: &Shell) -> PgTools {
        PgTools { pg_dump: find_client(sh, "pg_dump"), psql: find_client(sh, "psql") }
    }

    pub fn client(&self, tool: Tool) -> anyhow::Result<&Client> {
        let found = match tool {
            Tool::PgDump => &self.pg_dump,
            Tool::Psql => &self.psql,
        };
        found.as_ref().with_context(|| {
            format!(
                "{} not found on PATH: install the PostgreSQL client tools \
                 (Debian/Ubuntu: apt-get install postgresql-client)",
                tool.name()
            )
        })
    }

    /// Refuses a `pg_dump` older than the server it is to dump.
    pub fn check_dump_compatible(&self, url: &DbUrl, server: &Server) -> anyhow::Result<()> {
        let client = self.client(Tool::PgDump)?;
        if client.major < server.major {
            bail!(
                "pg_dump {} cannot dump a PostgreSQL {} server ({url}): install \
                 postgresql-client-{} and put it first on PATH",
                client.major,
                server.major,
                server.major
            );
        }
        Ok(())
    }

    /// A tool invocation against `url`: connection and password only in the environment.
    pub fn cmd<'a>(&self, sh: &'a Shell, tool: Tool, url: &DbUrl, access: Access) -> anyhow::Result<Cmd<'a>> {
        let client = self.client(tool)?;
        let mut cmd = sh.cmd(&client.path).quiet();
        for (key, value) in session_env(url, access) {
            cmd = cmd.env(key, value);
        }
        Ok(cmd)
    }

    /// Runs a query with `psql` and returns its unaligned, tuples-only output.
    pub fn query(&self, sh: &Shell, url: &DbUrl, access: Access, sql: &str) -> anyhow::Result<String> {
        let cmd = self
            .cmd(sh, Tool::Psql, url, access)?
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .ignore_status();
        log(&cmd, url);
        let output = cmd.output().with_context(|| format!("running psql against {url}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(explain_failure(url, &stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim_end_matches('\n').to_string())
    }

    /// Connects once to learn the server version, turning connection failures into clear errors.
    pub fn server(&self, sh: &Shell, url: &DbUrl, access: Access) -> anyhow::Result<Server> {
        let out = self.query(
            sh,
            url,
            access,
            "select current_setting('server_version_num') || ' ' || current_setting('server_version')",
        )?;
        let (num, version) = out.split_once(' ').unwrap_or((out.as_str(), ""));
        let num: u32 = num
            .trim()
            .parse()
            .with_context(|| format!("unexpected server version `{out}` from {url}"))?;
        Ok(Server { major: num / 10000, version: version.to_string() })
    }
}

/// libpq environment for a session: the URL's parts plus, for sources, read-only transactions.
pub fn session_env(url: &DbUrl, access: Access) -> Vec<(String, String)> {
    let mut env = url.pg_env();
    if access == Access::ReadOnly {
        let read_only = "-c default_transaction_read_only=on";
        match env.iter_mut().find(|(key, _)| key == "PGOPTIONS") {
            Some((_, options)) => *options = format!("{options} {read_only}"),
            None => env.push(("PGOPTIONS".to_string(), read_only.to_string())),
        }
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
    } else if stderr.contains("could not translate host name") || stderr.contains("Name or service not known") {
        format!("unknown host in {url}: check the host name")
    } else if stderr.contains("Connection refused") {
        format!("cannot connect to {at}: connection refused; is the server running and the port right? ({url})")
    } else if stderr.contains("timeout expired") || stderr.contains("timed out") {
        format!("cannot reach {at}: connection timed out; check the host, port and firewall ({url})")
    } else if stderr.contains("No such file or directory") && stderr.contains("socket") {
        format!("no server listening at {at}: start it or give a host in the URL ({url})")
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

fn missing<'a>(stderr: &'a str, kind: &str) -> Option<&'a str> {
    let start = stderr.find(&format!("{kind} \""))? + kind.len() + 2;
    let rest = &stderr[start..];
    let end = rest.find('"')?;
    rest[end..].starts_with("\" does not exist").then(|| &rest[..end])
}

/// Removes the password from text a tool printed, should it ever echo one.
pub fn scrub(url: &DbUrl, text: &str) -> String {
    match url.secret() {
        Some(secret) if !secret.is_empty() => text.replace(secret, "***"),
        _ => text.to_string(),
    }
}

fn find_client(sh: &Shell, name: &str) -> Option<Client> {
    let path = find_on_path(name)?;
    let output = Command::new(&path)
        .arg("--version")
        .envs(sh.var_os("PATH").map(|p| ("PATH", p)))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let major = parse_client_major(&text)?;
    Some(Client { path, major })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15; `psql (PostgreSQL) 9.6.24` → 9.
pub fn parse_client_major(version_output: &str) -> Option<u32> {
    let version = version_output.split_whitespace().find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions() {
        assert_eq!(parse_client_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), Some(15));
        assert_eq!(parse_client_major("psql (PostgreSQL) 17.2\n"), Some(17));
        assert_eq!(parse_client_major("pg_dump (PostgreSQL) 18beta1\n"), Some(18));
        assert_eq!(parse_client_major("garbage"), None);
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
        ];
        for (stderr, expected) in cases {
            let message = explain_failure(&url, stderr).to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("db.local:5433"), "{message}");
            assert!(!message.contains("s3cret") && !message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn sources_are_read_only() {
        let url = DbUrl::parse("postgres://u@h/db?options=-c%20work_mem%3D64MB").unwrap();
        let env = session_env(&url, Access::ReadOnly);
        let options = &env.iter().find(|(k, _)| k == "PGOPTIONS").unwrap().1;
        assert_eq!(options, "-c work_mem=64MB -c default_transaction_read_only=on");
        assert!(!session_env(&url, Access::ReadWrite)
            .iter()
            .any(|(_, v)| v.contains("read_only")));
    }
}
