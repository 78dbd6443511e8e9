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
    /// Each tool's clients: the one on PATH first, then other installs, newest first.
    pub pg_dump: Vec<Client>,
    pub psql: Vec<Client>,
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
    /// Looks the tools up on `PATH` and where this system's installers put them; a missing
    /// one is an error only when it is needed. `docker_net` is how Docker-run tools reach
    /// this machine's servers ([`DockerNet::from_env`], read once in `main`).
    pub fn discover(sh: &Shell, source: ToolSource, docker_net: DockerNet) -> PgTools {
        // Side by side: each lookup starts its tool once or twice.
        let path = sh.var_os("PATH");
        let layout = Layout::HOST;
        let root = Path::new("/");
        let (pg_dump, psql) = std::thread::scope(|scope| {
            let pg_dump = scope.spawn(|| find_clients(layout, root, path.as_deref(), "pg_dump"));
            let psql = find_clients(layout, root, path.as_deref(), "psql");
            (pg_dump.join().unwrap_or_default(), psql)
        });
        PgTools {
            pg_dump,
            psql,
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
                self.psql.iter().any(|c| c.path == path && c.restricts),
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

    fn host(&self, tool: Tool) -> &[Client] {
        match tool {
            Tool::PgDump => &self.pg_dump,
            Tool::Psql => &self.psql,
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
        let clients = self.host(tool);
        let name = tool.name();
        let wanted = match need {
            Need::Any | Need::Prefer(_) => None,
            Need::AtLeast(major) | Need::Exact(major) => Some(major),
        };
        if self.source != ToolSource::Docker {
            if let Some(client) = pick_client(clients, need) {
                return Ok((
                    Runner::Host(client.path.clone()),
                    fit_reason(clients, client, need),
                ));
            }
        }
        let first = clients.first();
        if self.source != ToolSource::Host {
            let major = match (wanted, need) {
                (Some(major), _) => self.has_image(sh, major).then_some(major),
                (None, Need::Prefer(major)) if self.has_image(sh, major) => Some(major),
                (None, _) => self.any_image(sh),
            };
            if let Some(major) = major {
                let why = match first {
                    None if self.source == ToolSource::Auto => {
                        format!("no {name} {}", Layout::HOST.searched())
                    }
                    Some(_) if self.source == ToolSource::Auto => format!(
                        "no host {name} fits PostgreSQL {} (found {})",
                        wanted.unwrap_or(major),
                        found_list(clients)
                    ),
                    _ => "--pg-tools docker".to_string(),
                };
                return Ok((Runner::Docker(major), why));
            }
        }
        if let (Need::Exact(major), false) = (need, self.source == ToolSource::Docker) {
            let newer = clients
                .iter()
                .filter(|c| c.major > major)
                .min_by_key(|c| c.major);
            if let Some(client) = newer {
                return Ok((
                    Runner::Host(client.path.clone()),
                    format!(
                        "no postgres:{major} image; host {name} {} ({}) is newer",
                        client.major, client.found
                    ),
                ));
            }
        }
        let found = match first {
            Some(_) => format!("found {name} {}", found_list(clients)),
            None => format!("no {name} {}", Layout::HOST.searched()),
        };
        let major = wanted.map(|m| m.to_string()).unwrap_or_else(|| "N".into());
        let docker = match self.source {
            ToolSource::Host => "or drop `--pg-tools host` so the postgres image can be used through Docker".to_string(),
            _ => format!("or start Docker with the image postgres:{major} (`bash scripts/test-prereqs.sh` builds it)"),
        };
        let install = Layout::HOST.install_hint(wanted);
        match wanted {
            Some(server) => bail!("{found}, but PostgreSQL {server} needs {name} {server} or newer: install {install}, {docker}"),
            None => bail!("{found}: install the PostgreSQL client tools ({install}), {docker}"),
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

/// How a client tool in a container reaches the server a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerNet {
    /// Linux: the container shares the host's network, loopback included (a bridge's
    /// gateway would not reach a server that listens on 127.0.0.1 only).
    HostNetwork,
    /// Docker Desktop, colima, OrbStack: containers run in a VM, where host networking is
    /// the VM's, and this machine's loopback is `host.docker.internal`.
    Gateway,
}

impl DockerNet {
    /// Host networking on Linux, the gateway elsewhere.
    pub const DEFAULT: DockerNet = match cfg!(target_os = "linux") {
        true => DockerNet::HostNetwork,
        false => DockerNet::Gateway,
    };

    /// `NETPOINT_DOCKER_NETWORK` (`host` or `gateway`) when set, for Docker engines the
    /// platform does not tell (Docker Desktop on Linux runs a VM too); else [`Self::DEFAULT`].
    pub fn from_env() -> anyhow::Result<DockerNet> {
        let Some(value) = super::url::from_env("NETPOINT_DOCKER_NETWORK") else {
            return Ok(DockerNet::DEFAULT);
        };
        match value.to_string_lossy().trim() {
            "host" => Ok(DockerNet::HostNetwork),
            "gateway" => Ok(DockerNet::Gateway),
            other => bail!(
                "NETPOINT_DOCKER_NETWORK is `{other}`: set it to `host` (the container shares this machine's network) \
                 or `gateway` (this machine is host.docker.internal, as on Docker Desktop), or unset it"
            ),
        }
    }

    /// The `docker run` arguments for `tool` before the image and after it. Behind a
    /// gateway, a server on this machine's loopback is reached at `host.docker.internal`:
    /// only the address connected to (`PGHOSTADDR`, looked up in the container) changes;
    /// `PGHOST`, which passfile entries and certificates are matched against, stays the
    /// user's (`localhost` when the URL names none).
    pub fn run_args(
        self,
        tool: &str,
        env: &mut Vec<(String, String)>,
    ) -> (Vec<String>, Vec<String>) {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let var = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, v)| v.as_str())
        };
        let host = var("PGHOST");
        // libpq connects to `hostaddr` when it is given, whatever `host` says.
        let local = match var("PGHOSTADDR").or(host) {
            None => true,
            Some(host) => loopback_name(host),
        };
        match self {
            DockerNet::HostNetwork => (
                strings(&["--network", "host", "--entrypoint", tool]),
                vec![],
            ),
            DockerNet::Gateway if !local => (strings(&["--entrypoint", tool]), vec![]),
            DockerNet::Gateway => {
                if host.is_none() {
                    env.push(("PGHOST".to_string(), "localhost".to_string()));
                }
                let before = strings(&[
                    "--add-host=host.docker.internal:host-gateway",
                    "--entrypoint",
                    "sh",
                ]);
                let after = strings(&[
                    "-c",
                    "addr=$(getent hosts host.docker.internal) || { echo 'cannot resolve host.docker.internal in the container' >&2; exit 2; }; \
                     PGHOSTADDR=${addr%% *}; export PGHOSTADDR; exec \"$@\"",
                    "sh",
                    tool,
                ]);
                (before, after)
            }
        }
    }
}

/// Whether `host` spells this machine's loopback literally: `localhost` (and names under
/// it), `127.0.0.0/8`, `::1`, or an IPv4-mapped loopback.
pub fn loopback_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
        })
}

/// Where a system's PostgreSQL installers put the client tools, besides `PATH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Linux and other Unix systems: the packages put them on `PATH` (Debian's behind its
    /// `pg_wrapper`, which [`find_clients`] looks through).
    Plain,
    /// macOS: Homebrew (`postgresql@N` and `libpq` are keg-only, so often not on `PATH`),
    /// Postgres.app and the EDB installer each keep their own directories.
    MacOs,
}

impl Layout {
    pub const HOST: Layout = match cfg!(target_os = "macos") {
        true => Layout::MacOs,
        false => Layout::Plain,
    };

    /// The `bin` directories of the installs under `root` (`/` but in tests), each with
    /// what to call it.
    pub fn install_dirs(self, root: &Path) -> Vec<(PathBuf, String)> {
        let mut dirs = Vec::new();
        if self == Layout::Plain {
            return dirs;
        }
        let mut each = |parent: &str, keep: &dyn Fn(&str) -> bool, label: &str| {
            let parent = root.join(parent);
            let Ok(entries) = std::fs::read_dir(&parent) else {
                return;
            };
            let mut found: Vec<(PathBuf, String)> = entries
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    keep(&name).then(|| (entry.path().join("bin"), format!("{label} {name}")))
                })
                .collect();
            found.sort();
            dirs.extend(found);
        };
        let brew = |name: &str| {
            name == "libpq"
                || name == "postgresql"
                || name
                    .strip_prefix("postgresql@")
                    .is_some_and(|major| major.parse::<u32>().is_ok())
        };
        let version =
            |name: &str| name == "latest" || name.split('.').all(|p| p.parse::<u32>().is_ok());
        // Apple silicon's Homebrew, then Intel's.
        each("opt/homebrew/opt", &brew, "Homebrew");
        each("usr/local/opt", &brew, "Homebrew");
        each(
            "Applications/Postgres.app/Contents/Versions",
            &version,
            "Postgres.app",
        );
        each("Library/PostgreSQL", &version, "EDB installer");
        dirs
    }

    /// Where a tool was looked for, for "no psql on PATH ...".
    fn searched(self) -> &'static str {
        match self {
            Layout::Plain => "on PATH",
            Layout::MacOs => "on PATH, in Homebrew, Postgres.app or /Library/PostgreSQL",
        }
    }

    fn install_hint(self, major: Option<u32>) -> String {
        match (self, major) {
            (Layout::Plain, Some(major)) => format!("postgresql-client-{major}"),
            (Layout::Plain, None) => "apt-get install postgresql-client".to_string(),
            (Layout::MacOs, Some(major)) => format!("`brew install postgresql@{major}`"),
            (Layout::MacOs, None) => "`brew install libpq`".to_string(),
        }
    }
}

/// Every client `name` there is: the one `PATH` (`search`) names first, then the
/// installs `layout` knows under `root`, newest first. One binary found twice (a link on
/// `PATH` into an install) is listed once, as found on `PATH`.
pub fn find_clients(
    layout: Layout,
    root: &Path,
    search: Option<&OsStr>,
    name: &str,
) -> Vec<Client> {
    let mut candidates = Vec::new();
    if let Some(path) = find_on_path(search, name) {
        candidates.push((path, "PATH".to_string()));
    }
    for (dir, label) in layout.install_dirs(root) {
        let path = dir.join(name);
        if is_executable(&path) {
            candidates.push((path, label));
        }
    }
    // Side by side: each one's `--version` is a process start.
    let probed: Vec<Option<Client>> = std::thread::scope(|scope| {
        let probes: Vec<_> = candidates
            .into_iter()
            .map(|(path, found)| scope.spawn(move || probe_client(search, name, path, found)))
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().ok().flatten())
            .collect()
    });
    let mut clients: Vec<Client> = Vec::new();
    let mut seen = HashSet::new();
    for client in probed.into_iter().flatten() {
        let real = client.path.canonicalize().unwrap_or(client.path.clone());
        if seen.insert(real) {
            clients.push(client);
        }
    }
    let on_path = usize::from(clients.first().is_some_and(|c| c.found == "PATH"));
    clients[on_path..].sort_by_key(|c| std::cmp::Reverse(c.major));
    clients
}

/// The client at `path`, from its `--version`; none when it does not run.
fn probe_client(
    search: Option<&OsStr>,
    name: &str,
    path: PathBuf,
    found: String,
) -> Option<Client> {
    let version = |path: &Path| {
        let output = Command::new(path)
            .arg("--version")
            .envs(search.map(|p| ("PATH", p)))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
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
        found,
    })
}

/// The client that serves `need` best: the one on `PATH` when it fits (as a shell would
/// run it), else the fitting one nearest the server's major.
pub fn pick_client(clients: &[Client], need: Need) -> Option<&Client> {
    let first = clients.first();
    match need {
        Need::Any => first,
        Need::Prefer(major) => clients.iter().find(|c| c.major == major).or(first),
        Need::AtLeast(major) => first.filter(|c| c.major >= major).or_else(|| {
            clients
                .iter()
                .filter(|c| c.major >= major)
                .min_by_key(|c| c.major)
        }),
        Need::Exact(major) => clients.iter().find(|c| c.major == major),
    }
}

/// Why `chosen` serves `need`, for `--verbose`: "version 15, found on PATH, fits
/// PostgreSQL 15".
fn fit_reason(clients: &[Client], chosen: &Client, need: Need) -> String {
    let found = match chosen.found.as_str() {
        "PATH" => "found on PATH".to_string(),
        install => format!("from {install}"),
    };
    let fits = match need {
        Need::Any => "any version will do".to_string(),
        Need::Prefer(major) if major != chosen.major => {
            format!("none is {major}, and any version will do")
        }
        Need::Prefer(major) | Need::AtLeast(major) | Need::Exact(major) => {
            format!("fits PostgreSQL {major}")
        }
    };
    let others = match clients.len() {
        1 => String::new(),
        _ => format!(" (found {})", found_list(clients)),
    };
    format!("version {}, {found}, {fits}{others}", chosen.major)
}

/// `15 (PATH), 17 (Homebrew postgresql@17)`
fn found_list(clients: &[Client]) -> String {
    let list: Vec<String> = clients
        .iter()
        .map(|c| format!("{} ({})", c.major, c.found))
        .collect();
    list.join(", ")
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

pub fn find_on_path(search: Option<&OsStr>, name: &str) -> Option<PathBuf> {
    env::split_paths(search?)
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

    /// A fake client `name` in `dir` that reports `version`.
    fn fake_tool(dir: &Path, name: &str, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn macos_installs_are_found_and_chosen_by_major() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // Homebrew on Apple silicon (keg-only postgresql@15 and libpq 17), Intel Homebrew's
        // postgresql@14, Postgres.app with 16 and a `latest` link to it, the EDB installer's
        // 13, and a directory that is no install.
        fake_tool(
            &r.join("opt/homebrew/opt/postgresql@15/bin"),
            "pg_dump",
            "15.14",
        );
        fake_tool(
            &r.join("opt/homebrew/opt/libpq/bin"),
            "pg_dump",
            "17.6 (Homebrew)",
        );
        fake_tool(
            &r.join("usr/local/opt/postgresql@14/bin"),
            "pg_dump",
            "14.19",
        );
        let app = r.join("Applications/Postgres.app/Contents/Versions");
        fake_tool(&app.join("16/bin"), "pg_dump", "16.10");
        std::os::unix::fs::symlink(app.join("16"), app.join("latest")).unwrap();
        fake_tool(&r.join("Library/PostgreSQL/13/bin"), "pg_dump", "13.22");
        fake_tool(&r.join("opt/homebrew/opt/openssl@3/bin"), "pg_dump", "99.0");
        // A pg_dump on PATH that is the libpq one through a link, as `brew link` makes it.
        let bin = r.join("opt/homebrew/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(
            r.join("opt/homebrew/opt/libpq/bin/pg_dump"),
            bin.join("pg_dump"),
        )
        .unwrap();

        let found = |search: Option<&OsStr>| {
            find_clients(Layout::MacOs, r, search, "pg_dump")
                .into_iter()
                .map(|c| (c.major, c.found))
                .collect::<Vec<_>>()
        };
        let listed = |list: &[(u32, &str)]| {
            list.iter()
                .map(|&(m, f)| (m, f.to_string()))
                .collect::<Vec<_>>()
        };
        // Without PATH: every install once (`latest` is 16 again), newest first.
        assert_eq!(
            found(None),
            listed(&[
                (17, "Homebrew libpq"),
                (16, "Postgres.app 16"),
                (15, "Homebrew postgresql@15"),
                (14, "Homebrew postgresql@14"),
                (13, "EDB installer 13"),
            ])
        );
        // With it: the one PATH names first, and its install is not listed again.
        let clients = find_clients(Layout::MacOs, r, Some(bin.as_os_str()), "pg_dump");
        assert_eq!(clients[0].found, "PATH");
        assert_eq!(clients[0].major, 17);
        assert_eq!(clients.len(), 5);
        assert!(clients.iter().all(|c| c.found != "Homebrew libpq"));

        let chosen = |need| pick_client(&clients, need).map(|c| (c.major, c.found.as_str()));
        assert_eq!(chosen(Need::Any), Some((17, "PATH")));
        assert_eq!(chosen(Need::AtLeast(15)), Some((17, "PATH")));
        assert_eq!(
            chosen(Need::Exact(15)),
            Some((15, "Homebrew postgresql@15"))
        );
        assert_eq!(
            chosen(Need::Prefer(14)),
            Some((14, "Homebrew postgresql@14"))
        );
        assert_eq!(chosen(Need::Prefer(12)), Some((17, "PATH")));
        assert_eq!(chosen(Need::Exact(12)), None);
        assert_eq!(chosen(Need::AtLeast(18)), None);
        // PATH's too old: the nearest newer install, not the newest.
        let old_first: Vec<Client> = {
            let mut list = clients.clone();
            list.retain(|c| c.major != 17);
            list.insert(
                0,
                Client {
                    found: "PATH".into(),
                    major: 12,
                    ..clients[0].clone()
                },
            );
            list
        };
        let pick = pick_client(&old_first, Need::AtLeast(14)).unwrap();
        assert_eq!(
            (pick.major, pick.found.as_str()),
            (14, "Homebrew postgresql@14")
        );
        let why = fit_reason(&old_first, pick, Need::AtLeast(14));
        assert!(why.starts_with("version 14, from Homebrew postgresql@14, fits PostgreSQL 14 (found 12 (PATH), 16 (Postgres.app 16)"), "{why}");

        // The Linux layout looks only at PATH (Debian's packages put every tool there).
        assert_eq!(find_clients(Layout::Plain, r, None, "pg_dump"), vec![]);
        assert_eq!(
            find_clients(Layout::Plain, r, Some(bin.as_os_str()), "pg_dump").len(),
            1
        );
    }

    #[test]
    fn tools_that_do_not_run_or_answer_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let broken = r.join("opt/homebrew/opt/postgresql@16/bin");
        fake_tool(&broken, "psql", "16.1");
        std::fs::write(broken.join("psql"), "#!/bin/sh\necho garbage\n").unwrap();
        let unreadable = r.join("Library/PostgreSQL/15/bin");
        fake_tool(&unreadable, "psql", "15.14");
        std::fs::set_permissions(
            unreadable.join("psql"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fake_tool(&r.join("usr/local/opt/postgresql@17/bin"), "psql", "17.6");
        let clients = find_clients(Layout::MacOs, r, None, "psql");
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert_eq!((clients[0].major, clients[0].restricts), (17, true));
    }

    #[test]
    fn docker_reaches_the_host_loopback_on_each_platform() {
        let env = |host: Option<&str>| {
            let mut env = vec![("PGPORT".to_string(), "5433".to_string())];
            env.extend(host.map(|h| ("PGHOST".to_string(), h.to_string())));
            env
        };
        // Linux: host networking, the URL as it is.
        let mut linux = env(Some("127.0.0.1"));
        let (before, after) = DockerNet::HostNetwork.run_args("pg_dump", &mut linux);
        assert_eq!(before, ["--network", "host", "--entrypoint", "pg_dump"]);
        assert!(after.is_empty());
        assert_eq!(linux, env(Some("127.0.0.1")));

        // A VM: loopback spellings reach host.docker.internal, the host name stays.
        for host in [
            "localhost",
            "LOCALHOST.",
            "db.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            let mut mac = env(Some(host));
            let (before, after) = DockerNet::Gateway.run_args("psql", &mut mac);
            assert_eq!(
                before,
                [
                    "--add-host=host.docker.internal:host-gateway",
                    "--entrypoint",
                    "sh"
                ],
                "{host}"
            );
            assert_eq!(after[0], "-c");
            assert!(after[1].contains("PGHOSTADDR="), "{}", after[1]);
            assert_eq!(&after[2..], ["sh", "psql"]);
            assert_eq!(mac, env(Some(host)), "{host}");
        }
        // No host (a local socket): `localhost`, which a passfile's entry matches too.
        let mut socket = env(None);
        let (before, _) = DockerNet::Gateway.run_args("psql", &mut socket);
        assert_eq!(before[0], "--add-host=host.docker.internal:host-gateway");
        assert_eq!(socket, env(Some("localhost")));
        // Other hosts are reached as they are, without host networking.
        for host in [
            "db.example.com",
            "10.0.0.5",
            "localhost.example.com",
            "2001:db8::1",
        ] {
            let mut remote = env(Some(host));
            let (before, after) = DockerNet::Gateway.run_args("pg_dump", &mut remote);
            assert_eq!(before, ["--entrypoint", "pg_dump"], "{host}");
            assert!(after.is_empty());
            assert_eq!(remote, env(Some(host)));
        }
    }
}
