//! The local dev-database container: started on first use with a random password kept in a
//! 0600 passfile, reused after, stopped or destroyed on request.

use std::{
    fs,
    io::Write,
    net::TcpListener,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use super::{url, Access, DbUrl, PgTools};
use crate::remedy::{refuse, Remedy};
use crate::{media, term};

/// The local PostgreSQL container used when no database is configured.
pub struct DevContainer {
    name: String,
    volume: String,
    passfile: PathBuf,
}

const DEV_IMAGE: &str = "postgres:15";
const DEV_USER: &str = "netpoint";

impl DevContainer {
    pub fn new(sh: &Shell) -> DevContainer {
        let name = url::from_env("NETPOINT_DEV_DB_CONTAINER").map_or_else(
            || "netpoint-dev-db".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let passfile = sh
            .current_dir()
            .join(".netpoint")
            .join(format!("{name}.pgpass"));
        DevContainer {
            volume: format!("{name}-data"),
            name,
            passfile,
        }
    }

    fn docker_running(sh: &Shell) -> bool {
        cmd!(sh, "docker info --format '{{.ServerVersion}}'")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    }

    fn state(&self, sh: &Shell) -> Option<String> {
        let name = &self.name;
        cmd!(
            sh,
            "docker container inspect --format '{{.State.Status}}' {name}"
        )
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
    }

    /// Starts (or creates) the container and returns a URL that reaches it.
    pub fn ensure(&self, sh: &Shell, tools: &PgTools) -> anyhow::Result<DbUrl> {
        if !Self::docker_running(sh) {
            bail!(
                "no database configured and Docker is not running: {}, \
                 or start Docker (`bash scripts/test-prereqs.sh` installs and starts it) so the dev container can run {DEV_IMAGE}",
                Remedy::NameDevDatabase
            );
        }
        let name = &self.name;
        match self.state(sh).as_deref() {
            None => {
                let port = free_port();
                let volume = &self.volume;
                // PostgreSQL keeps the password it was first given in the volume's data.
                let password = match cmd!(sh, "docker volume inspect {volume}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()
                {
                    Ok(()) => self.known_password().with_context(|| format!(
                        "volume {volume} holds a dev database whose container {name} is gone, and {} with its password is missing: \
                         {} to remove the volume and start afresh",
                        self.passfile.display(),
                        Remedy::DestroyDevContainer
                    ))?,
                    Err(_) => random_password()?,
                };
                let publish = format!("127.0.0.1:{port}:5432");
                term::step(format!("starting {DEV_IMAGE} as container {name} on 127.0.0.1:{port} (data in volume {volume})"));
                let run = cmd!(
                    sh,
                    "docker run --detach --name {name} --label netpoint.dev-db=1 --volume {volume}:/var/lib/postgresql/data
                     --env POSTGRES_USER={DEV_USER} --env POSTGRES_DB=netpoint --env POSTGRES_PASSWORD --publish {publish} {DEV_IMAGE}"
                )
                .env("POSTGRES_PASSWORD", &password)
                .quiet()
                .ignore_stdout();
                term::detail(run.to_string());
                run.run().with_context(|| format!("starting container {name} from {DEV_IMAGE}: is the image available? (`bash scripts/test-prereqs.sh` builds it)"))?;
            }
            Some("running") => term::step(format!("using the running container {name}")),
            Some(_) => {
                term::step(format!("starting container {name}"));
                cmd!(sh, "docker start {name}")
                    .quiet()
                    .ignore_stdout()
                    .run()?;
            }
        }
        let url = self.url(sh)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match tools.query(sh, &url.with_database("postgres"), Access::ReadWrite, "select 1") {
                Ok(_) => break,
                Err(err) if err.to_string().contains("wrong password") => bail!(
                    "container {name} does not take its own password: its volume {} holds a database made with another one; \
                     {} to remove both and start afresh",
                    self.volume,
                    Remedy::DestroyDevContainer
                ),
                Err(err) if Instant::now() > deadline => {
                    return Err(err).context(format!("container {name} did not accept connections within 90 s (see `docker logs {name}`)"))
                }
                Err(_) => thread::sleep(Duration::from_millis(250)),
            }
        }
        Ok(url)
    }

    /// The password this checkout's passfile holds for the container, if any.
    /// What [`DevContainer::ensure`] would do, for a dry run: nothing is started.
    pub fn plan(&self, sh: &Shell) -> anyhow::Result<String> {
        if !Self::docker_running(sh) {
            bail!(
                "no database configured and Docker is not running: {}, \
                 or start Docker (`bash scripts/test-prereqs.sh` installs and starts it) so the dev container can run {DEV_IMAGE}",
                Remedy::NameDevDatabase
            );
        }
        let name = &self.name;
        Ok(match self.state(sh).as_deref() {
            None => format!("start {DEV_IMAGE} as container {name} on a free port of 127.0.0.1 (data in volume {})", self.volume),
            Some("running") => format!("use the running container {name}"),
            Some(_) => format!("start the stopped container {name}"),
        })
    }

    /// The database the container serves, as a dry run names it (its port is learnt later).
    pub fn planned_url(&self) -> anyhow::Result<DbUrl> {
        DbUrl::parse(&format!("postgres://{DEV_USER}@127.0.0.1/netpoint"))
    }

    fn known_password(&self) -> Option<String> {
        let line = fs::read_to_string(&self.passfile).ok()?;
        let password = line.trim_end().splitn(5, ':').nth(4)?;
        (!password.is_empty()).then(|| password.to_string())
    }

    /// The container's URL; the password goes to a 0600 passfile named in the URL.
    fn url(&self, sh: &Shell) -> anyhow::Result<DbUrl> {
        let name = &self.name;
        let port = cmd!(sh, "docker port {name} 5432/tcp").quiet().read()?;
        let port = port
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .context("container publishes no port")?
            .to_string();
        let env = cmd!(
            sh,
            "docker container inspect --format '{{range .Config.Env}}{{println .}}{{end}}' {name}"
        )
        .quiet()
        .read()?;
        let password = env
            .lines()
            .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD="))
            .context("container has no POSTGRES_PASSWORD")?;
        self.write_passfile(&format!("127.0.0.1:{port}:*:{DEV_USER}:{password}\n"))?;
        let passfile = self.passfile.display().to_string();
        DbUrl::parse(&format!(
            "postgres://{DEV_USER}@127.0.0.1:{port}/netpoint?passfile={}",
            percent_encoding::utf8_percent_encode(&passfile, percent_encoding::NON_ALPHANUMERIC)
        ))
    }

    /// Writes the passfile whole into a new file of ours with mode 0600, renamed over the old
    /// one: the password is never readable by others, even when the previous file was (libpq
    /// would ignore such a file anyway).
    fn write_passfile(&self, line: &str) -> anyhow::Result<()> {
        let path = &self.passfile;
        let dir = path.parent().unwrap();
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Ok(meta) = fs::symlink_metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            // SAFETY: geteuid only reads the process's user id.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                term::warn(format!(
                    "{} belonged to user id {}: replaced by a file of your own with mode 0600",
                    path.display(),
                    meta.uid()
                ));
            } else if !meta.is_file() || mode != 0o600 {
                term::warn(format!(
                    "{} had mode {mode:04o}, readable by others or not a plain file: rewritten with mode 0600",
                    path.display()
                ));
            }
        }
        let mut file = tempfile::Builder::new()
            .prefix(".pgpass.")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "cannot write to {}: check that it is writable",
                    dir.display()
                )
            })?;
        file.write_all(line.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn stop(&self, sh: &Shell) -> anyhow::Result<()> {
        let name = &self.name;
        if !Self::docker_running(sh) {
            bail!("Docker is not running: nothing to stop");
        }
        match self.state(sh) {
            None => term::success(format!("no container {name}: nothing to stop")),
            Some(_) => {
                cmd!(sh, "docker stop {name}")
                    .quiet()
                    .ignore_stdout()
                    .run()?;
                term::success(format!(
                    "stopped {name}; its data stays in volume {}",
                    self.volume
                ));
            }
        }
        Ok(())
    }

    pub fn destroy(&self, sh: &Shell, yes: bool) -> anyhow::Result<()> {
        let (name, volume) = (&self.name, &self.volume);
        if !Self::docker_running(sh) {
            bail!("Docker is not running: start it to remove {name}");
        }
        if !yes {
            if !term::stdin_is_terminal() {
                return Err(refuse(
                    Remedy::Confirm,
                    format!("this removes container {name} and all its data (volume {volume})"),
                ));
            }
            if !term::confirm(&format!(
                "Remove container {name} and all its data (volume {volume})?"
            ))? {
                bail!("cancelled: nothing was removed");
            }
        }
        cmd!(sh, "docker rm --force --volumes {name}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .ignore_status()
            .run()?;
        cmd!(sh, "docker volume rm --force {volume}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .ignore_status()
            .run()?;
        let _ = fs::remove_file(&self.passfile);
        term::success(format!("removed {name} and volume {volume}"));
        Ok(())
    }
}

fn free_port() -> u16 {
    if TcpListener::bind(("127.0.0.1", 5432)).is_ok() {
        return 5432;
    }
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(5432)
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 18];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(media::hex(&bytes))
}
