//! Production reached over SSH: one `ssh` connection per run, which forwards the database
//! to a Unix socket of ours, so that every `pg_dump` and `psql` of the run goes through it.
//!
//! The destination and options are the user's (`~/.ssh/config` aliases, `ProxyJump`,
//! agents and host-key checking work as they set them up); `NETPOINT_SSH_COMMAND` adds a
//! program and options as git's `GIT_SSH_COMMAND` does. No password ever goes into ssh's
//! argv: the database's travels in the tools' environment, through the forward.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

mod media;

pub use media::{RemoteMedia, Tree};

use crate::{
    pg::{url, DbUrl},
    process, term,
};

/// An SSH destination and the command that reaches it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// As the user gave it: `[user@]host`, `ssh://[user@]host[:port]` or a config alias.
    pub dest: String,
    /// The ssh program and its extra options (`NETPOINT_SSH_COMMAND`, default `ssh`).
    program: Vec<String>,
}

impl Remote {
    /// From `--source-ssh`, else `NETPOINT_PROD_SSH`; `None` when neither is set.
    pub fn from_flag(flag: Option<String>) -> anyhow::Result<Option<Remote>> {
        let dest = match flag {
            Some(dest) => dest,
            None => match url::from_env("NETPOINT_PROD_SSH") {
                Some(dest) => dest.to_string_lossy().into_owned(),
                None => return Ok(None),
            },
        };
        let program = match url::from_env("NETPOINT_SSH_COMMAND") {
            Some(text) => {
                let text = text.to_string_lossy();
                let words = shell_words::split(&text).map_err(|err| {
                    anyhow::anyhow!("NETPOINT_SSH_COMMAND is not a command line ({err}): quote it as a shell would, for example `ssh -i ~/.ssh/prod_ro`")
                })?;
                if words.is_empty() {
                    bail!("NETPOINT_SSH_COMMAND names no program: set it to `ssh` and its options, or unset it");
                }
                words
            }
            None => vec!["ssh".to_string()],
        };
        Remote::new(&dest, program).map(Some)
    }

    pub fn new(dest: &str, program: Vec<String>) -> anyhow::Result<Remote> {
        check_destination(dest)?;
        Ok(Remote {
            dest: dest.to_string(),
            program,
        })
    }

    /// `ssh [options] <ours> -- DEST SCRIPT`: a command line for the remote user's shell.
    fn command_with(&self, ours: &[&str], script: &str) -> Command {
        let mut command = self.command(ours);
        command.arg(script);
        command
    }

    /// `ssh [options] <ours> -- DEST`.
    fn command(&self, ours: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            // Fail rather than hang when the link dies; reported as the tunnel dropping.
            .args([
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
            ])
            .args(ours)
            .arg("--")
            .arg(&self.dest);
        command
    }
}

/// Refuses a password, what ssh would read as an option, and what no destination contains.
fn check_destination(dest: &str) -> anyhow::Result<()> {
    let fix = "pass a destination as ssh takes it: [user@]host, ssh://[user@]host[:port] or an alias from ~/.ssh/config";
    // First, so that no message below ever shows the password.
    if has_password(dest) {
        bail!("the SSH destination has a password in it (user:password@host): remove it and log in with a key or an agent (ssh-add); ssh never takes a password there");
    }
    if dest.trim().is_empty() {
        bail!("the SSH destination is empty: {fix}");
    }
    if dest.starts_with('-') {
        bail!("SSH destination `{dest}` starts with `-`, which ssh would read as an option: {fix}");
    }
    if dest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("SSH destination {dest:?} contains a space or control character: {fix}");
    }
    Ok(())
}

/// Whether the user part of `dest` (before its last `@`, as ssh splits it), raw or
/// percent-decoded, holds a `:`: `user:pw@host`, `ssh://user:pw@host:22`, `user%3Apw@host`.
/// No login name holds a colon, so nothing else is refused.
fn has_password(dest: &str) -> bool {
    let rest = dest
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("ssh://"))
        .map_or(dest, |_| &dest[6..]);
    let Some((user, _)) = rest.rsplit_once('@') else {
        return false;
    };
    user.contains(':')
        || percent_encoding::percent_decode_str(user)
            .decode_utf8_lossy()
            .contains(':')
}

/// The run's one SSH connection: a master that forwards the database to a socket of ours,
/// and that remote commands (the media's) share, so there is one login. Closed (ssh ended,
/// sockets and their directory removed) when dropped, on every way out of the run.
pub struct Tunnel {
    child: Child,
    /// The sockets' directory (the forward's and the master's), removed with the tunnel.
    dir: tempfile::TempDir,
    stderr: Option<thread::JoinHandle<String>>,
    remote: Remote,
    /// The source, reached through the forward, when there is a database to reach.
    pub url: Option<DbUrl>,
}

/// How long ssh may take to connect and open the forward when nobody is asked anything.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

impl Tunnel {
    /// Connects to `remote` and forwards the server `source` names there (`localhost` when
    /// it names none, or a socket directory on that machine).
    pub fn open(remote: &Remote, source: Option<&DbUrl>) -> anyhow::Result<Tunnel> {
        remove_dead_runs_dirs(&std::env::temp_dir());
        let dir = socket_dir(&std::env::temp_dir())?;
        let control = dir.path().join("control");
        let control_path = control.to_string_lossy().into_owned();
        let mut ours = vec![
            "-N",
            "-T",
            "-M",
            "-S",
            &control_path,
            "-o",
            "ControlPersist=no",
            "-o",
            "ExitOnForwardFailure=yes",
        ];
        let forward = source.map(|source| {
            let socket = dir.path().join(format!(".s.PGSQL.{}", source.port));
            // The address to connect to, as libpq on that host would: `hostaddr` first.
            let far = match source.hostaddr.as_deref().or(source.host.as_deref()) {
                Some(host) if host.starts_with('/') => format!("{host}/.s.PGSQL.{}", source.port),
                Some(host) if host.contains(':') => format!("[{host}]:{}", source.port),
                Some(host) => format!("{host}:{}", source.port),
                None => format!("localhost:{}", source.port),
            };
            (format!("{}:{far}", socket.display()), socket)
        });
        if let Some((spec, _)) = &forward {
            ours.extend(["-L", spec.as_str()]);
        }
        let mut command = remote.command(&ours);
        // A host-key question or a key's passphrase goes to the terminal (ssh opens
        // /dev/tty itself); stdin is not ssh's to read.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if term::verbose() {
            term::detail(format!("{command:?}"));
        }
        let mut child = process::spawn(&mut command).map_err(|err| {
            anyhow::anyhow!(
                "cannot start `{}` for SSH to {} ({err}): install OpenSSH's client, or set NETPOINT_SSH_COMMAND",
                remote.program[0],
                remote.dest
            )
        })?;
        let stderr = Some(process::collect_stderr(child.stderr.take().unwrap()));
        let url = source.map(|s| s.through_forward(&dir.path().to_string_lossy(), &remote.dest));
        let mut tunnel = Tunnel {
            child,
            dir,
            stderr,
            remote: remote.clone(),
            url,
        };
        tunnel.wait_until_open(
            &control,
            forward.as_ref().map(|(_, socket)| socket.as_path()),
        )?;
        Ok(tunnel)
    }

    fn wait_until_open(&mut self, control: &Path, socket: Option<&Path>) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let said = self.stderr.take().map(|h| h.join().unwrap_or_default());
                bail!(explain(
                    &self.remote.dest,
                    &said.unwrap_or_default(),
                    Some(status.code())
                ));
            }
            if is_socket(control) && socket.is_none_or(is_socket) {
                return Ok(());
            }
            process::check_interrupted()?;
            if start.elapsed() > OPEN_TIMEOUT && !may_ask_user() {
                bail!(
                    "ssh to {} did not open the forward within {} s: check that `ssh {}` logs in without questions",
                    self.remote.dest,
                    OPEN_TIMEOUT.as_secs(),
                    self.remote.dest
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether ssh still runs: when it does not, a failed step failed because the tunnel
    /// dropped.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `err`, said to be the tunnel's doing when the tunnel is gone.
    pub fn explain_error(&mut self, err: anyhow::Error) -> anyhow::Error {
        if self.alive() || process::interrupted() {
            return err;
        }
        let said = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let why = match last {
            "" => String::new(),
            last => format!(" ({})", last.trim()),
        };
        err.context(format!(
            "the SSH connection to {} dropped during the run{why}: check the network and run again; the target was not changed",
            self.remote.dest,
        ))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
        if let Some(stderr) = self.stderr.take() {
            let _ = stderr.join();
        }
    }
}

/// What the sockets' directory of a run is called: `netpoint-ssh-<pid>-<random>`.
const DIR_PREFIX: &str = "netpoint-ssh-";

/// A new directory for the run's sockets in `tmp`, mode 0700 whatever the umask, named with
/// our process id so that a later run can tell whether we still run.
fn socket_dir(tmp: &Path) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::Permissions::from_mode(0o700);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .permissions(private.clone())
        .tempdir_in(tmp)
        .context("creating a directory for the SSH connection's sockets")?;
    std::fs::set_permissions(dir.path(), private)
        .context("making the SSH connection's socket directory private")?;
    Ok(dir)
}

/// Removes the socket directories that runs killed without a chance to clean up (`kill -9`)
/// left in `tmp`: only ours (same owner, a real directory), and only those of a process that
/// no longer runs. Best effort: what cannot be removed stays for the next run.
fn remove_dead_runs_dirs(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process::alive(pid) {
            continue;
        }
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours {
            if term::verbose() {
                term::detail(format!(
                    "removing {}, left by an SSH run that was killed (pid {pid})",
                    path.display()
                ));
            }
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// With a terminal, ssh may be waiting on the user (a host key, a passphrase).
fn may_ask_user() -> bool {
    use std::io::IsTerminal;
    std::fs::File::open("/dev/tty").is_ok_and(|tty| tty.is_terminal())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// One line for what ssh said when it ended before the forward was open.
pub fn explain(dest: &str, stderr: &str, code: Option<Option<i32>>) -> String {
    let has = |needle: &str| stderr.contains(needle);
    if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return format!("ssh: the host key of {dest} is not known or has changed: run `ssh {dest}` once to check and accept it (or fix ~/.ssh/known_hosts), then run again");
    }
    if has("Permission denied") {
        return format!("ssh: {dest} refused the login: check the user and that your key is offered (ssh-add, IdentityFile in ~/.ssh/config or NETPOINT_SSH_COMMAND)");
    }
    if has("Could not resolve hostname") {
        return format!(
            "ssh: cannot resolve the host of {dest}: check the name or its alias in ~/.ssh/config"
        );
    }
    if has("Connection refused")
        || has("Connection timed out")
        || has("No route to host")
        || has("Network is unreachable")
        || has("Operation timed out")
    {
        let why = [
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Network is unreachable",
            "Operation timed out",
        ]
        .into_iter()
        .find(|w| has(w))
        .unwrap_or_default()
        .to_ascii_lowercase();
        return format!(
            "ssh: cannot reach {dest} ({why}): check the host, port and network (VPN?), then run again"
        );
    }
    if has("forwarding failed") || has("cannot listen") || has("open failed") {
        return format!("ssh: {dest} would not forward the database: allow TCP forwarding for this user on that host (AllowTcpForwarding), then run again");
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    let code = match code.flatten() {
        Some(code) => format!("exit {code}"),
        None => "killed".to_string(),
    };
    format!(
        "ssh to {dest} failed ({code}): {}; check that `ssh {dest}` works, then run again",
        last.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_that_ssh_would_misread_are_refused() {
        for good in [
            "prod",
            "deploy@netpoint.example.com",
            "ssh://deploy@10.0.0.5:2222",
            "deploy@[::1]:22",
            "ssh://deploy@[fe80::1%25eth0]:22",
            "[::1]",
            "host:22",
        ] {
            assert!(Remote::new(good, vec!["ssh".into()]).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("-oProxyCommand=touch /tmp/x", "starts with `-`"),
            ("", "empty"),
            ("prod host", "space or control"),
            ("prod\n-v", "space or control"),
        ] {
            let err = Remote::new(bad, vec!["ssh".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_password_in_any_form_is_refused_without_being_shown() {
        for bad in [
            "deploy:hunter2@prod",
            "ssh://deploy:hunter2@prod",
            "SSH://deploy:hunter2@prod:2222",
            "ssh://deploy:hunter2@10.0.0.5:2222/",
            "deploy:hunter2@[::1]",
            "deploy:hun@ter2@prod",
            "deploy%3Ahunter2@prod",
            "ssh://deploy%3ahunter2@prod",
            "ssh://deploy:hunter2%40x@prod",
            ":hunter2@prod",
            "-deploy:hunter2@prod",
            "deploy:hunter2 x@prod",
        ] {
            let err = Remote::new(bad, vec!["ssh".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("has a password in it"), "{bad:?}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("ter2"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn socket_dirs_are_private_and_only_dead_runs_dirs_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = socket_dir(tmp.path()).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("netpoint-ssh-{}-", std::process::id())),
            "{name}"
        );
        // A child that has ended stands for a run killed with -9.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let left = tmp.path().join(format!("netpoint-ssh-{dead}-abc123"));
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join("control"), b"").unwrap();
        let running = tmp.path().join("netpoint-ssh-1-abc123");
        std::fs::create_dir(&running).unwrap();
        let unrelated = tmp.path().join(format!("netpoint-ssh-x{dead}-abc123"));
        std::fs::create_dir(&unrelated).unwrap();
        let linked = tmp.path().join(format!("netpoint-ssh-{dead}-link"));
        std::os::unix::fs::symlink(&running, &linked).unwrap();
        remove_dead_runs_dirs(tmp.path());
        assert!(!left.exists());
        assert!(dir.path().exists() && running.exists() && unrelated.exists());
        assert!(std::fs::symlink_metadata(&linked).is_ok());
    }

    #[test]
    fn ssh_failures_become_one_line_that_says_what_to_do() {
        for (stderr, says) in [
            (
                "Host key verification failed.\r\n",
                "host key of prod is not known",
            ),
            (
                "deploy@prod: Permission denied (publickey).\r\n",
                "refused the login",
            ),
            (
                "ssh: Could not resolve hostname prod: Name or service not known\r\n",
                "cannot resolve",
            ),
            (
                "ssh: connect to host prod port 22: Connection refused\r\n",
                "cannot reach prod (connection refused)",
            ),
            (
                "Warning: remote port forwarding failed for listen port\n",
                "would not forward",
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer\n",
                "ssh to prod failed (exit 255): kex_exchange_identification",
            ),
        ] {
            let line = explain("prod", stderr, Some(Some(255)));
            assert!(line.contains(says), "{stderr:?}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
