//! The PostgreSQL client tools (`pg_dump`, `psql`): finding them on the host or in a
//! `postgres:<major>` image, choosing one that fits a server, and building their command
//! lines with credentials passed only through the environment.

mod choose;
mod discover;
mod docker;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use anyhow::bail;
use xshell::{cmd, Cmd, Shell};

use super::{containers, session::session_env, DbUrl};
use crate::term;
use discover::{find_clients, restricts, Layout};
pub use docker::DockerNet;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub path: PathBuf,
    pub major: u32,
    /// Whether this client knows `\restrict` (see [`restricts`]).
    pub restricts: bool,
    /// Where it was found: `PATH`, or an install such as `Homebrew postgresql@15`.
    pub found: String,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Each tool's clients: the one on PATH first, then other installs, newest first.
    /// Looked up when the tool is first used: each `--version` is a process start (Debian's
    /// `pg_wrapper` a Perl one), which a command that never runs the tool should not pay.
    pg_dump: OnceLock<Vec<Client>>,
    psql: OnceLock<Vec<Client>>,
    /// The `PATH` the tools are looked up on.
    path: Option<std::ffi::OsString>,
    pub source: ToolSource,
    /// Server majors learnt so far, by `host:port`.
    pub servers: Mutex<HashMap<String, u32>>,
    pub images: Mutex<HashMap<u32, bool>>,
    /// Whether the psql of each `postgres:<major>` image knows `\restrict`.
    pub image_restricts: Mutex<HashMap<u32, bool>>,
    pub announced: Mutex<HashSet<(Tool, String)>>,
    /// How Docker-run tools reach this machine's servers.
    pub docker_net: DockerNet,
}

impl PgTools {
    /// Looks the tools up on `PATH` and where this system's installers put them, each when
    /// it is first needed; a missing one is an error only when it is needed. `docker_net` is
    /// how Docker-run tools reach this machine's servers ([`DockerNet::from_env`], read once
    /// in `main`).
    pub fn discover(sh: &Shell, source: ToolSource, docker_net: DockerNet) -> PgTools {
        PgTools {
            pg_dump: OnceLock::new(),
            psql: OnceLock::new(),
            path: sh.var_os("PATH"),
            source,
            servers: Mutex::default(),
            images: Mutex::default(),
            image_restricts: Mutex::default(),
            announced: Mutex::default(),
            docker_net,
        }
    }

    /// Fails, saying what to install, unless the psql that loads into `url` can be put in
    /// restricted mode (`\restrict`), where a dump can run no psql command.
    pub fn check_restricts(&self, sh: &Shell, url: &DbUrl) -> anyhow::Result<()> {
        let (runner, _) = self.choose(sh, Tool::Psql, self.need_for(Tool::Psql, url))?;
        let (restricts, which) = match runner {
            Runner::Host(path) => (
                self.host(Tool::Psql)
                    .iter()
                    .any(|c| c.path == path && c.restricts),
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

    /// The clients of `tool` on this machine, looked up on first use.
    pub fn host(&self, tool: Tool) -> &[Client] {
        let cell = match tool {
            Tool::PgDump => &self.pg_dump,
            Tool::Psql => &self.psql,
        };
        cell.get_or_init(|| {
            find_clients(
                Layout::HOST,
                Path::new("/"),
                self.path.as_deref(),
                tool.name(),
            )
        })
    }

    /// What a tool should be for `url`'s server, when its major is known.
    fn need_for(&self, tool: Tool, url: &DbUrl) -> Need {
        match (tool, self.servers.lock().unwrap().get(&url.host_port())) {
            (Tool::PgDump, Some(&major)) => Need::AtLeast(major),
            (Tool::Psql, Some(&major)) => Need::Prefer(major),
            (_, None) => Need::Any,
        }
    }

    /// Records the major version of `url`'s server, which a session of its own learnt.
    pub fn learn_major(&self, url: &DbUrl, major: u32) {
        self.servers.lock().unwrap().insert(url.host_port(), major);
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
        let mut env = session_env(url, access);
        let mut cmd = match runner {
            Runner::Host(path) => {
                let mut cmd = sh.cmd(path).quiet();
                // The URL alone says where to connect (a service it names is already read).
                for var in super::url::STEERING_ENV {
                    if !env.iter().any(|(key, _)| key == var) {
                        cmd = cmd.env_remove(var);
                    }
                }
                cmd
            }
            Runner::Docker(major) => {
                containers::first_use(sh);
                let (before, after) = self.docker_net.run_args(tool.name(), &mut env);
                let mut cmd = sh
                    .cmd("docker")
                    .quiet()
                    .args(["run", "--rm", "-i"])
                    .args(containers::name_and_label())
                    .args(before);
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
                cmd.arg(format!("postgres:{major}")).args(after)
            }
        };
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        Ok(cmd)
    }
}
