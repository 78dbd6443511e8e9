//! The PostgreSQL client tools (`pg_dump`, `psql`): finding them, checking their versions
//! against a server, and running them with credentials passed only through the environment.

use std::{
    collections::{HashMap, HashSet},
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

use anyhow::{bail, Context};
use xshell::{cmd, Cmd, Shell};

use crate::{db_url::DbUrl, term};

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
    num: String,
    /// The cluster's system identifier, shared by its physical replicas (when the role may
    /// read it).
    sysid: Option<String>,
    /// When the postmaster started, to the microsecond, and the port it listens on as the
    /// server reports them.
    started: String,
    port: String,
    recovery: bool,
    /// The OID of the database the session is connected to.
    database_oid: String,
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

static TOOL_SOURCE: OnceLock<ToolSource> = OnceLock::new();

pub fn set_tool_source(source: ToolSource) {
    let _ = TOOL_SOURCE.set(source);
}

/// How one tool is run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Runner {
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
    pg_dump: Option<Client>,
    psql: Option<Client>,
    source: ToolSource,
    /// Server majors learnt so far, by `host:port`.
    servers: Mutex<HashMap<String, u32>>,
    images: Mutex<HashMap<u32, bool>>,
    /// Whether the psql of each `postgres:<major>` image knows `\restrict`.
    image_restricts: Mutex<HashMap<u32, bool>>,
    announced: Mutex<HashSet<(Tool, String)>>,
}

impl PgTools {
    /// Looks the tools up on `PATH`; a missing one is an error only when it is needed.
    pub fn discover(sh: &Shell) -> PgTools {
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
            source: TOOL_SOURCE.get().copied().unwrap_or_default(),
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

    /// Runs SQL given on psql's stdin (for statements that carry sensitive values).
    pub fn query_stdin(&self, sh: &Shell, url: &DbUrl, sql: &str) -> anyhow::Result<String> {
        let cmd = self
            .cmd(sh, Tool::Psql, url, Access::ReadWrite)?
            .args(QUERY_ARGS)
            .args(["-f", "-"]);
        let output = run_psql(cmd, url, Some(sql))?;
        if !output.status.success() {
            return Err(explain_failure(
                url,
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        Ok(answer(&output))
    }

    /// Connects once to learn the server's version and identity, turning connection
    /// failures into clear errors.
    pub fn server(&self, sh: &Shell, url: &DbUrl, access: Access) -> anyhow::Result<Server> {
        let out = self.query(
            sh,
            url,
            access,
            "select json_build_object('version_num', current_setting('server_version_num'), \
             'version', current_setting('server_version'), \
             'sysid', case when has_function_privilege('pg_catalog.pg_control_system()', 'execute') \
             then (select system_identifier::text from pg_catalog.pg_control_system()) end, \
             'started', pg_postmaster_start_time()::text, 'port', current_setting('port'), \
             'recovery', pg_is_in_recovery(), \
             'database_oid', (select oid::text from pg_database where datname = current_database()))",
        )?;
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
        Ok(server)
    }
}

/// How a query session runs psql: no startup file, quiet, unaligned tuples only, stopping
/// at the first error.
const QUERY_ARGS: &[&str] = &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"];

/// A query session's answer: its output without the final newline.
fn answer(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// Runs one short psql session as a tool an interrupt stops (a query waiting on a lock must
/// not hold up Ctrl-C), with `stdin` as its input.
fn run_psql(
    cmd: xshell::Cmd<'_>,
    url: &DbUrl,
    stdin: Option<&str>,
) -> anyhow::Result<std::process::Output> {
    use std::{io::Write, process::Stdio};
    // A session the signal stopped fails as interrupted, not with psql's words.
    let stop = || match crate::process::stop_requested() {
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
    let spawned = match crate::process::interrupted() {
        false => crate::process::spawn(&mut command),
        true => crate::process::spawn_holder(&mut command),
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

/// Containers that run client tools carry our pid in a label, so that none outlives the run:
/// those left when we end are removed, and so are those of runs that died.
pub mod containers {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use xshell::{cmd, Shell};

    const LABEL: &str = "netpoint-xtask.pid";
    static USED: AtomicBool = AtomicBool::new(false);

    /// `--name` and `--label` for the next container.
    pub fn name_and_label() -> [String; 4] {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        [
            "--name".into(),
            format!(
                "netpoint-xtask-{pid}-{}",
                NEXT.fetch_add(1, Ordering::SeqCst)
            ),
            "--label".into(),
            format!("{LABEL}={pid}"),
        ]
    }

    /// Before the first container of a run: removes those of runs that are gone.
    pub fn first_use(sh: &Shell) {
        if USED.swap(true, Ordering::SeqCst) {
            return;
        }
        let filter = format!("label={LABEL}");
        let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
        let Ok(listed) = cmd!(sh, "docker ps -a --filter {filter} --format {format}")
            .quiet()
            .ignore_stderr()
            .read()
        else {
            return;
        };
        let dead: Vec<&str> = listed
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, pid)| {
                pid.parse::<u32>()
                    .is_ok_and(|pid| !crate::process::alive(pid))
            })
            .map(|(id, _)| id)
            .collect();
        if !dead.is_empty() {
            let _ = cmd!(sh, "docker rm -f {dead...}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
        }
    }

    /// At the end of a run that used containers: removes any still there.
    pub fn remove_ours() {
        if !USED.load(Ordering::SeqCst) {
            return;
        }
        let Ok(sh) = Shell::new() else {
            return;
        };
        let filter = format!("label={LABEL}={}", std::process::id());
        if let Ok(ids) = cmd!(sh, "docker ps -aq --filter {filter}")
            .quiet()
            .ignore_stderr()
            .read()
        {
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = cmd!(sh, "docker rm -f {ids...}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run();
            }
        }
    }
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
fn sqlstate(stderr: &str) -> Option<String> {
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

fn missing<'a>(stderr: &'a str, kind: &str) -> Option<&'a str> {
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

fn find_client(search: Option<&OsStr>, name: &str) -> Option<Client> {
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
fn wrapped_binary(path: &Path, name: &str, major: u32) -> Option<PathBuf> {
    let target = path.canonicalize().ok()?;
    if target.file_name()? != "pg_wrapper" {
        return None;
    }
    let real = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin/{name}"));
    is_executable(&real).then_some(real)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
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
