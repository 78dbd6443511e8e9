//! The PostgreSQL client tools (`pg_dump`, `psql`): finding them on the host or in a
//! `postgres:<major>` image, choosing one that fits a server, and building their command
//! lines with credentials passed only through the environment.

use std::{
    collections::{HashMap, HashSet},
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
};

use anyhow::bail;
use xshell::{cmd, Cmd, Shell};

use super::{containers, session::session_env, DbUrl};
use crate::term;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Writes into a temporary database that a later, durable commit swaps into place:
    /// commits need not wait for their WAL to reach the disk (`synchronous_commit=off`),
    /// since the swap's commit flushes all WAL written before it.
    Load,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub path: PathBuf,
    pub major: u32,
    /// Whether this client knows `\restrict` (see [`restricts`]).
    pub restricts: bool,
}

/// What a server told us about itself.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Server {
    #[serde(skip)]
    pub major: u32,
    pub version: String,
    #[serde(rename = "version_num")]
    pub num: String,
    /// The cluster's system identifier, shared by its physical replicas (when the role may
    /// read it).
    pub sysid: Option<String>,
    /// When the postmaster started, to the microsecond, and the port it listens on as the
    /// server reports them.
    pub started: String,
    pub port: String,
    pub recovery: bool,
    /// The OID of the database the session is connected to.
    pub database_oid: String,
}

impl Server {
    /// Whether `self`'s database and the database with OID `oid` on `other` are one
    /// database: the same server (or a physical replica of it, which shares its system
    /// identifier and OIDs) and the same OID. Decided by what the servers report, never by
    /// how a URL spells the host.
    pub fn same_database(&self, other: &Server, oid: Option<&str>) -> bool {
        let Some(oid) = oid else {
            return false;
        };
        let same_cluster = match (&self.sysid, &other.sysid) {
            (Some(a), Some(b)) => {
                a == b && (self.started == other.started || self.recovery || other.recovery)
            }
            _ => self.started == other.started && self.port == other.port,
        };
        same_cluster && self.database_oid == oid
    }
}

/// Where the client tools come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolSource {
    /// Host tools when they can serve the server, else the `postgres:<major>` image.
    #[default]
    Auto,
    /// Only the tools on PATH.
    Host,
    /// Only the `postgres:<major>` images, through Docker.
    Docker,
}

/// How one tool is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runner {
    Host(PathBuf),
    /// `docker run ... postgres:<major> <tool>`
    Docker(u32),
}

/// What a step needs of a tool's major version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Any,
    /// Any host tool will do; through Docker, this major's image when it is there.
    Prefer(u32),
    /// At least the server's major (pg_dump refuses newer servers).
    AtLeast(u32),
    /// Exactly this major when it can be had (reproducible schema snapshots).
    Exact(u32),
}

pub struct PgTools {
    pub pg_dump: Option<Client>,
    pub psql: Option<Client>,
    pub source: ToolSource,
    /// Server majors learnt so far, by `host:port`.
    pub servers: Mutex<HashMap<String, u32>>,
    pub images: Mutex<HashMap<u32, bool>>,
    /// Whether the psql of each `postgres:<major>` image knows `\restrict`.
    pub image_restricts: Mutex<HashMap<u32, bool>>,
    pub announced: Mutex<HashSet<(Tool, String)>>,
}

impl PgTools {
    /// Looks the tools up on `PATH`; a missing one is an error only when it is needed.
    pub fn discover(sh: &Shell, source: ToolSource) -> PgTools {
        // Side by side: each lookup starts its tool once or twice.
        let path = sh.var_os("PATH");
        let (pg_dump, psql) = std::thread::scope(|scope| {
            let pg_dump = scope.spawn(|| find_client(path.as_deref(), "pg_dump"));
            let psql = find_client(path.as_deref(), "psql");
            (pg_dump.join().ok().flatten(), psql)
        });
        PgTools {
            pg_dump,
            psql,
            source,
            servers: Mutex::default(),
            images: Mutex::default(),
            image_restricts: Mutex::default(),
            announced: Mutex::default(),
        }
    }

    /// Fails, saying what to install, unless the psql that loads into `url` can be put in
    /// restricted mode (`\restrict`), where a dump can run no psql command.
    pub fn check_restricts(&self, sh: &Shell, url: &DbUrl) -> anyhow::Result<()> {
        let (runner, _) = self.choose(sh, Tool::Psql, self.need_for(Tool::Psql, url))?;
        let (restricts, which) = match runner {
            Runner::Host(path) => (
                self.psql.as_ref().is_some_and(|c| c.restricts),
                path.display().to_string(),
            ),
            Runner::Docker(major) => {
                let known = self.image_restricts.lock().unwrap().get(&major).copied();
                let restricts = known.unwrap_or_else(|| {
                    let image = format!("postgres:{major}");
                    let version = cmd!(sh, "docker run --rm --entrypoint psql {image} --version")
                        .quiet()
                        .ignore_stderr()
                        .read()
                        .unwrap_or_default();
                    let restricts = restricts(&version);
                    self.image_restricts
                        .lock()
                        .unwrap()
                        .insert(major, restricts);
                    restricts
                });
                (restricts, format!("the postgres:{major} image"))
            }
        };
        if !restricts {
            bail!(
                "psql from {which} is too old to refuse psql commands hidden in a dump (its \\restrict mode came with 13.22, 14.19, 15.14, 16.10 and 17.6): \
                 install a current postgresql-client, then run again; nothing was changed"
            );
        }
        Ok(())
    }

    fn host(&self, tool: Tool) -> Option<&Client> {
        match tool {
            Tool::PgDump => self.pg_dump.as_ref(),
            Tool::Psql => self.psql.as_ref(),
        }
    }

    /// Whether the image `postgres:<major>` is there (pulled once if it is not).
    fn has_image(&self, sh: &Shell, major: u32) -> bool {
        if let Some(&known) = self.images.lock().unwrap().get(&major) {
            return known;
        }
        let image = format!("postgres:{major}");
        let found = cmd!(sh, "docker image inspect {image}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
            || cmd!(sh, "docker pull --quiet {image}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok();
        self.images.lock().unwrap().insert(major, found);
        found
    }

    /// The newest `postgres:<major>` image present, for steps that need no particular major.
    fn any_image(&self, sh: &Shell) -> Option<u32> {
        let tags = cmd!(sh, "docker image ls postgres --format '{{.Tag}}'")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()?;
        let newest = tags
            .lines()
            .filter_map(|t| t.trim().parse::<u32>().ok())
            .max()?;
        self.images.lock().unwrap().insert(newest, true);
        Some(newest)
    }

    fn choose(&self, sh: &Shell, tool: Tool, need: Need) -> anyhow::Result<(Runner, String)> {
        let host = self.host(tool);
        let name = tool.name();
        let host_fits = |client: &Client| match need {
            Need::Any | Need::Prefer(_) => true,
            Need::AtLeast(major) => client.major >= major,
            Need::Exact(major) => client.major == major,
        };
        let wanted = match need {
            Need::Any | Need::Prefer(_) => None,
            Need::AtLeast(major) | Need::Exact(major) => Some(major),
        };
        if self.source != ToolSource::Docker {
            if let Some(client) = host.filter(|c| host_fits(c)) {
                return Ok((
                    Runner::Host(client.path.clone()),
                    format!("host {name} {} fits", client.major),
                ));
            }
        }
        if self.source != ToolSource::Host {
            let major = match (wanted, need) {
                (Some(major), _) => self.has_image(sh, major).then_some(major),
                (None, Need::Prefer(major)) if self.has_image(sh, major) => Some(major),
                (None, _) => self.any_image(sh),
            };
            if let Some(major) = major {
                let why = match host {
                    None if self.source == ToolSource::Auto => format!("no {name} on PATH"),
                    Some(client) if self.source == ToolSource::Auto => {
                        format!(
                            "host {name} {} does not fit PostgreSQL {}",
                            client.major,
                            wanted.unwrap_or(major)
                        )
                    }
                    _ => "--pg-tools docker".to_string(),
                };
                return Ok((Runner::Docker(major), why));
            }
        }
        if let (Need::Exact(major), Some(client)) = (need, host) {
            if client.major > major && self.source != ToolSource::Docker {
                return Ok((
                    Runner::Host(client.path.clone()),
                    format!(
                        "no postgres:{major} image; host {name} {} is newer",
                        client.major
                    ),
                ));
            }
        }
        let found = match host {
            Some(client) => format!("{name} {} found on PATH", client.major),
            None => format!("no {name} on PATH"),
        };
        let major = wanted.map(|m| m.to_string()).unwrap_or_else(|| "N".into());
        let docker = match self.source {
            ToolSource::Host => "or drop `--pg-tools host` so the postgres image can be used through Docker".to_string(),
            _ => format!("or start Docker with the image postgres:{major} (`bash scripts/test-prereqs.sh` builds it)"),
        };
        match wanted {
            Some(server) => bail!("{found}, but PostgreSQL {server} needs {name} {server} or newer: install postgresql-client-{server}, {docker}"),
            None => bail!("{found}: install the PostgreSQL client tools (apt-get install postgresql-client), {docker}"),
        }
    }

    /// What a tool should be for `url`'s server, when its major is known.
    fn need_for(&self, tool: Tool, url: &DbUrl) -> Need {
        match (tool, self.servers.lock().unwrap().get(&url.host_port())) {
            (Tool::PgDump, Some(&major)) => Need::AtLeast(major),
            (Tool::Psql, Some(&major)) => Need::Prefer(major),
            (_, None) => Need::Any,
        }
    }

    /// The major version of `url`'s server, once a query has learnt it.
    pub fn server_major(&self, url: &DbUrl) -> Option<u32> {
        self.servers.lock().unwrap().get(&url.host_port()).copied()
    }

    /// Refuses when no `pg_dump` can dump the server.
    pub fn check_dump_compatible(&self, sh: &Shell, server: &Server) -> anyhow::Result<()> {
        self.choose(sh, Tool::PgDump, Need::AtLeast(server.major))
            .map(|_| ())
    }

    /// A tool invocation against `url`: connection and password only in the environment.
    pub fn cmd<'a>(
        &self,
        sh: &'a Shell,
        tool: Tool,
        url: &DbUrl,
        access: Access,
    ) -> anyhow::Result<Cmd<'a>> {
        self.cmd_with(sh, tool, url, access, self.need_for(tool, url))
    }

    pub fn cmd_with<'a>(
        &self,
        sh: &'a Shell,
        tool: Tool,
        url: &DbUrl,
        access: Access,
        need: Need,
    ) -> anyhow::Result<Cmd<'a>> {
        let (runner, why) = self.choose(sh, tool, need)?;
        let shown = match &runner {
            Runner::Host(path) => path.display().to_string(),
            Runner::Docker(major) => format!("docker image postgres:{major}"),
        };
        if term::verbose() && self.announced.lock().unwrap().insert((tool, shown.clone())) {
            term::detail(format!("using {} from {shown}: {why}", tool.name()));
        }
        let env = session_env(url, access);
        let mut cmd = match runner {
            Runner::Host(path) => sh.cmd(path).quiet(),
            Runner::Docker(major) => {
                containers::first_use(sh);
                let mut cmd = sh
                    .cmd("docker")
                    .quiet()
                    .args(["run", "--rm", "-i", "--network", "host"])
                    .args(containers::name_and_label())
                    .args(["--entrypoint", tool.name()]);
                for (key, value) in &env {
                    // `--env NAME` without a value: docker takes it from its own environment.
                    cmd = cmd.args(["--env", key]);
                    let local_path = (key == "PGPASSFILE"
                        || (key == "PGHOST" && value.starts_with('/')))
                    .then_some(value);
                    if let Some(path) = local_path {
                        cmd = cmd.arg("--volume").arg(format!("{path}:{path}:ro"));
                    }
                }
                cmd.arg(format!("postgres:{major}"))
            }
        };
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        Ok(cmd)
    }
}

pub fn find_client(search: Option<&OsStr>, name: &str) -> Option<Client> {
    let path = find_on_path(name)?;
    let version = |path: &Path| {
        let output = Command::new(path)
            .arg("--version")
            .envs(search.map(|p| ("PATH", p)))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let text = version(&path)?;
    let major = parse_client_major(&text)?;
    // Debian's `pg_wrapper` (a Perl script behind /usr/bin/psql) costs about 50 ms of CPU per
    // start, and a clone starts these tools dozens of times. Run the binary it would pick.
    let path = wrapped_binary(&path, name, major)
        .filter(|real| version(real).as_deref() == Some(text.as_str()))
        .unwrap_or(path);
    Some(Client {
        path,
        major,
        restricts: restricts(&text),
    })
}

/// Whether a client of this `--version` output knows `\restrict`, psql's mode in which a
/// script can run no psql command at all: added in 13.22, 14.19, 15.14, 16.10 and 17.6.
pub fn restricts(version_output: &str) -> bool {
    let Some(version) = version_output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match major {
        18.. => true,
        17 => minor >= 6,
        16 => minor >= 10,
        15 => minor >= 14,
        14 => minor >= 19,
        13 => minor >= 22,
        _ => false,
    }
}

/// The versioned binary behind Debian's `pg_wrapper`, when `path` is that wrapper.
pub fn wrapped_binary(path: &Path, name: &str, major: u32) -> Option<PathBuf> {
    let target = path.canonicalize().ok()?;
    if target.file_name()? != "pg_wrapper" {
        return None;
    }
    let real = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
    is_executable(&real).then_some(real)
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15; `psql (PostgreSQL) 9.6.24` → 9.
pub fn parse_client_major(version_output: &str) -> Option<u32> {
    let version = version_output
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions() {
        assert_eq!(
            parse_client_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_client_major("psql (PostgreSQL) 17.2\n"), Some(17));
        assert_eq!(
            parse_client_major("pg_dump (PostgreSQL) 18beta1\n"),
            Some(18)
        );
        assert_eq!(parse_client_major("garbage"), None);
        for (version, knows) in [
            ("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", true),
            ("psql (PostgreSQL) 15.13", false),
            ("psql (PostgreSQL) 13.16 (Debian 13.16-0+deb11u1)", false),
            ("psql (PostgreSQL) 13.22", true),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 16.9", false),
            ("psql (PostgreSQL) 18beta1", true),
            ("psql (PostgreSQL) 12.22", false),
            ("garbage", false),
        ] {
            assert_eq!(restricts(version), knows, "{version}");
        }
    }

    #[test]
    fn debian_wrapper_resolves_to_the_versioned_binary() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("pg_wrapper");
        std::fs::write(&wrapper, "#!/bin/sh\n").unwrap();
        let link = dir.path().join("psql");
        std::os::unix::fs::symlink(&wrapper, &link).unwrap();
        let plain = dir.path().join("pg_dump");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        // A plain binary is used as it is; the wrapper only when the versioned binary exists.
        assert_eq!(wrapped_binary(&plain, "pg_dump", 15), None);
        let real = PathBuf::from("/usr/lib/postgresql/15/bin/psql");
        let expected = is_executable(&real).then_some(real);
        assert_eq!(wrapped_binary(&link, "psql", 15), expected);
        assert_eq!(wrapped_binary(&link, "psql", 999), None);
    }
}
