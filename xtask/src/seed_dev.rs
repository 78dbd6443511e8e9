//! `cargo xtask seed-dev`: a working dev database and media from the committed fixtures,
//! in a local Docker container when no database is configured; and `--refresh`, which
//! regenerates those fixtures deterministically from a database.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    net::TcpListener,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::{
    atomic_file, bundle,
    clone_prod::{self, LoadGuard, MediaForm},
    db_url::{self, path_or_env, DbUrl},
    dump, leak_scan, media,
    pg_tools::{self, Access, PgTools, Tool},
    schema_snapshot, scrub, term,
};

/// Seed a dev database and media from fixtures/, or regenerate the fixtures (--refresh).
#[derive(Debug, clap::Args)]
pub struct SeedDev {
    /// Fixtures to load or regenerate [default: fixtures/].
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Dev database to replace [default: $NETPOINT_DATABASE_URL, else a local Docker container].
    #[arg(long, value_name = "URL", conflicts_with = "refresh")]
    target: Option<String>,
    /// Dev media directory to replace [default: $NETPOINT_MEDIA_ROOT, else netpoint/media].
    #[arg(long, value_name = "DIR", conflicts_with = "refresh")]
    target_media: Option<PathBuf>,
    #[command(flatten)]
    guard: LoadGuard,
    /// Regenerate the fixtures from --source instead of seeding.
    #[arg(long)]
    refresh: bool,
    /// With --refresh: the database to read [default: $NETPOINT_DATABASE_URL].
    #[arg(long, value_name = "URL", requires = "refresh")]
    source: Option<String>,
    /// With --refresh: the media directory to copy [default: keep the fixtures' media].
    #[arg(long, value_name = "DIR", requires = "refresh")]
    source_media: Option<PathBuf>,
    /// With --refresh: write nothing; fail with a summary when the fixtures are out of date.
    #[arg(long, requires = "refresh")]
    check: bool,
    #[command(flatten)]
    scrub: scrub::ScrubFlags,
    /// Stop the local dev-database container (its data is kept).
    #[arg(long, conflicts_with_all = ["refresh", "destroy", "target"])]
    stop: bool,
    /// Remove the local dev-database container and its data volume.
    #[arg(long, conflicts_with_all = ["refresh", "target"])]
    destroy: bool,
}

impl SeedDev {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let fixtures = self
            .fixtures
            .clone()
            .unwrap_or_else(|| sh.current_dir().join("fixtures"));
        if self.stop {
            return DevContainer::new(sh).stop(sh);
        }
        if self.destroy {
            return DevContainer::new(sh).destroy(sh, &self.guard);
        }
        let tools = PgTools::discover(sh);
        if self.refresh {
            let source =
                db_url::required_url(self.source.clone(), "NETPOINT_DATABASE_URL", "--source")?;
            let refresh = Refresh {
                source: &source,
                source_media: self.source_media.as_deref(),
                fixtures: &fixtures,
                scrub: &self.scrub,
            };
            return refresh.run(sh, &tools, self.check);
        }
        let target = match db_url::url_or_env(self.target.clone(), "NETPOINT_DATABASE_URL")? {
            Some(url) => url,
            None => DevContainer::new(sh).ensure(sh, &tools)?,
        };
        let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT")
            .unwrap_or_else(|| {
                let default = sh.current_dir().join("netpoint/media");
                let _ = fs::create_dir_all(default.parent().unwrap());
                default
            });
        let load = clone_prod::Load {
            dir: &fixtures,
            media: MediaForm::Tree,
            target: &target,
            target_media: Some(&target_media),
            guard: &self.guard,
            strict: self.scrub.strict,
        };
        load.run(sh, &tools, false)?;
        println!("NETPOINT_DATABASE_URL={}", shareable_url(&target));
        println!("NETPOINT_MEDIA_ROOT={}", target_media.display());
        Ok(())
    }
}

/// The URL to give the application: as configured, but never with a password in it.
fn shareable_url(url: &DbUrl) -> String {
    let mut text = url.masked();
    if let Some((_, passfile)) = url.params.iter().find(|(key, _)| key == "PGPASSFILE") {
        text.push_str(&format!("?passfile={passfile}"));
    }
    text
}

/// The local PostgreSQL container used when no database is configured.
struct DevContainer {
    name: String,
    volume: String,
    passfile: PathBuf,
}

const DEV_IMAGE: &str = "postgres:15";
const DEV_USER: &str = "netpoint";

impl DevContainer {
    fn new(sh: &Shell) -> DevContainer {
        let name = db_url::from_env("NETPOINT_DEV_DB_CONTAINER").map_or_else(
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
    fn ensure(&self, sh: &Shell, tools: &PgTools) -> anyhow::Result<DbUrl> {
        if !Self::docker_running(sh) {
            bail!(
                "no database configured and Docker is not running: set NETPOINT_DATABASE_URL (or pass --target URL), \
                 or start Docker (`bash scripts/test-prereqs.sh` installs and starts it) so seed-dev can run {DEV_IMAGE}"
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
                         run `cargo xtask seed-dev --destroy --yes` to remove the volume and start afresh",
                        self.passfile.display()
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
                     run `cargo xtask seed-dev --destroy --yes` to remove both and start afresh",
                    self.volume
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

    fn stop(&self, sh: &Shell) -> anyhow::Result<()> {
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

    fn destroy(&self, sh: &Shell, guard: &LoadGuard) -> anyhow::Result<()> {
        let (name, volume) = (&self.name, &self.volume);
        if !Self::docker_running(sh) {
            bail!("Docker is not running: start it to remove {name}");
        }
        if !guard.yes {
            if !term::stdin_is_terminal() {
                bail!("this removes container {name} and all its data (volume {volume}): pass --yes to confirm");
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

/// Regenerating the fixtures from a database.
struct Refresh<'a> {
    source: &'a DbUrl,
    source_media: Option<&'a Path>,
    fixtures: &'a Path,
    scrub: &'a scrub::ScrubFlags,
}

impl Refresh<'_> {
    fn run(&self, sh: &Shell, tools: &PgTools, check: bool) -> anyhow::Result<()> {
        let server = tools.server(sh, self.source, Access::ReadOnly)?;
        tools.check_dump_compatible(sh, &server)?;
        atomic_file::parent_dir(self.fixtures)?;
        atomic_file::remove_stale_siblings(self.fixtures);
        let staging = atomic_file::StagingDir(atomic_file::sibling(self.fixtures, "staging"));
        fs::create_dir(&staging.0).with_context(|| format!("creating {}", staging.0.display()))?;
        self.write(sh, tools, &server, &staging.0)?;
        if check {
            let changes = compare(self.fixtures, &staging.0)?;
            if changes.is_empty() {
                println!("fixtures in {} are up to date", self.fixtures.display());
                return Ok(());
            }
            for change in &changes {
                println!("{change}");
            }
            bail!(
                "fixtures in {} are out of date ({} changes): run `cargo xtask seed-dev --refresh` with the same source",
                self.fixtures.display(),
                changes.len()
            );
        }
        // Files in fixtures/ that the refresh does not produce are kept as they are.
        if let Ok(entries) = fs::read_dir(self.fixtures) {
            for entry in entries.flatten() {
                let to = staging.0.join(entry.file_name());
                if !to.exists() && entry.file_type()?.is_file() {
                    fs::copy(entry.path(), &to)?;
                }
            }
        }
        atomic_file::replace_dir(&staging.0, self.fixtures)?;
        term::success(format!(
            "fixtures in {} regenerated from {}",
            self.fixtures.display(),
            self.source
        ));
        Ok(())
    }

    fn write(
        &self,
        sh: &Shell,
        tools: &PgTools,
        server: &pg_tools::Server,
        dir: &Path,
    ) -> anyhow::Result<()> {
        term::step(format!(
            "dumping {} (rows sorted, no changelog data)",
            self.source
        ));
        let excludes: Vec<String> = clone_prod::CHANGELOG_TABLES
            .iter()
            .map(|t| format!("--exclude-table-data={t}"))
            .collect();
        let cmd = tools
            .cmd(sh, Tool::PgDump, self.source, Access::ReadOnly)?
            .args(["--format=plain", "--no-owner", "--no-privileges"])
            .args(&excludes)
            .ignore_status();
        pg_tools::log(&cmd, self.source);
        let out = cmd
            .output()
            .with_context(|| format!("running pg_dump against {}", self.source))?;
        if !out.status.success() {
            return Err(pg_tools::explain_failure(
                self.source,
                &String::from_utf8_lossy(&out.stderr),
            ))
            .context("pg_dump failed");
        }
        let scrub = self.scrub.plan(sh, tools, self.source)?;
        let (scrubbed, counts) = scrub::scrubbing_reader(&out.stdout[..], &scrub.applied);
        let (mut rows, mut entries) = Default::default();
        atomic_file::write(&dir.join(bundle::SQL), |file| {
            let mut counter = dump::RowCounter::new(file);
            dump::normalise_sorted(io::BufReader::new(scrubbed), &mut counter)?;
            (rows, entries) = (counter.counts, counter.entries);
            Ok(())
        })?;
        let counts = counts.borrow().clone();
        if !scrub.applied.is_empty() {
            term::step(scrub.report(&counts));
        }
        let excluded: Vec<String> = clone_prod::CHANGELOG_TABLES
            .iter()
            .map(|t| format!("public.{t}"))
            .collect();
        let covered = leak_scan::Covered::by_rules(&scrub.applied, &excluded);
        let leaks = leak_scan::Scanner::start(sh, tools, self.source, &covered)?.map(|scanner| {
            scanner.scan_bytes(&out.stdout);
            scanner.report()
        });
        leak_scan::check(
            leaks.as_ref(),
            self.scrub.strict,
            "the fixtures are unchanged",
        )?;
        term::step(leak_scan::summary(leaks.as_ref()));
        let schema = schema_snapshot::snapshot(sh, tools, self.source, None)?;
        fs::write(dir.join("schema.sql"), schema)?;

        let media_root = dir.join(bundle::MEDIA_DIR);
        let current_media = self.fixtures.join(bundle::MEDIA_DIR);
        let from = match self.source_media {
            Some(from) => Some(from.to_path_buf()),
            None if current_media.is_dir() => {
                term::step("media: keeping the fixtures' media (no --source-media given)");
                Some(current_media)
            }
            None => None,
        };
        let totals = match from {
            Some(from) => {
                let entries = media::scan(&from)?;
                let hashed = media::copy_verified(&from, &entries, &media_root, &|_| {})?;
                fs::write(dir.join(bundle::MEDIA_SUMS), media::sha256_list(&hashed))?;
                Some(media::totals(&hashed))
            }
            None => None,
        };
        let encoding = tools.query(sh, self.source, Access::ReadOnly, "select pg_encoding_to_char(encoding) from pg_database where datname = current_database()")?;
        // No time, host or tool version: two refreshes of one database give the same bytes.
        let manifest = bundle::Manifest {
            format: bundle::FORMAT,
            tool: bundle::ToolInfo {
                name: bundle::Manifest::tool().name,
                version: None,
            },
            created_at: None,
            source: bundle::SourceInfo {
                host: None,
                port: None,
                database: None,
                server_version: None,
                server_major: server.major,
                encoding,
            },
            excluded_table_data: excluded,
            entries,
            rows,
            sql_bytes: None,
            scrub: (!self.scrub.no_scrub).then(|| scrub.manifest(None)),
            // Columns and counts only, in name order: the same data gives the same bytes.
            leaks: leaks.map(|report| report.findings).unwrap_or_default(),
            media: totals.map(|t| bundle::MediaRecord {
                files: t.files,
                bytes: t.bytes,
            }),
        };
        fs::write(dir.join(bundle::MANIFEST), manifest.text())?;
        let mut names = vec![bundle::SQL, bundle::MANIFEST];
        if totals.is_some() {
            names.push(bundle::MEDIA_SUMS);
        }
        fs::write(dir.join(bundle::SUMS), bundle::sums_for(dir, &names)?)?;
        Ok(())
    }
}

/// What a refresh would change, one line each: tables whose rows changed, the schema,
/// media added, removed or changed.
fn compare(current: &Path, fresh: &Path) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    let read = |dir: &Path, name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (old_sql, new_sql) = (read(current, bundle::SQL), read(fresh, bundle::SQL));
    if old_sql != new_sql {
        let old_rows: BTreeMap<String, Vec<&str>> =
            dump::copy_blocks(&old_sql).into_iter().collect();
        let new_rows: BTreeMap<String, Vec<&str>> =
            dump::copy_blocks(&new_sql).into_iter().collect();
        for (table, rows) in &new_rows {
            match old_rows.get(table) {
                None => changes.push(format!("table {table}: new ({} rows)", rows.len())),
                Some(old) if old != rows => {
                    let added = rows.iter().filter(|r| !old.contains(r)).count();
                    let removed = old.iter().filter(|r| !rows.contains(r)).count();
                    changes.push(format!("table {table}: rows changed (+{added} -{removed})"));
                }
                Some(_) => {}
            }
        }
        for table in old_rows.keys().filter(|t| !new_rows.contains_key(*t)) {
            changes.push(format!("table {table}: removed"));
        }
        if schema_part(&old_sql) != schema_part(&new_sql) {
            changes.push(format!(
                "{}: schema or sequence values changed",
                bundle::SQL
            ));
        }
    }
    let old_media = media_on_disk(current)?;
    let new_media = media_on_disk(fresh)?;
    for (name, hash) in &new_media {
        let shown = name.display();
        match old_media.get(name) {
            None => changes.push(format!("media {shown}: added")),
            Some(old) if old != hash => changes.push(format!("media {shown}: changed")),
            Some(_) => {}
        }
    }
    for name in old_media.keys().filter(|n| !new_media.contains_key(*n)) {
        changes.push(format!("media {}: removed", name.display()));
    }
    if read(current, "schema.sql") != read(fresh, "schema.sql") {
        changes.push("schema.sql: changed".to_string());
    }
    if changes.is_empty() {
        let bytes = |dir: &Path, name: &str| fs::read(dir.join(name)).unwrap_or_default();
        if bytes(current, bundle::MEDIA_SUMS) != bytes(fresh, bundle::MEDIA_SUMS) {
            changes.push(format!("{}: changed", bundle::MEDIA_SUMS));
        } else if [bundle::MANIFEST, bundle::SUMS]
            .iter()
            .any(|n| read(current, n) != read(fresh, n))
        {
            changes.push(format!("{}: changed", bundle::MANIFEST));
        }
    }
    Ok(changes)
}

/// `file → SHA-256` of the media a fixtures directory holds, read from the files themselves:
/// a file edited or dropped in by hand differs from its media.sha256 line, and the files are
/// what a seed loads.
fn media_on_disk(fixtures: &Path) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let root = fixtures.join(bundle::MEDIA_DIR);
    if !root.is_dir() {
        return Ok(BTreeMap::new());
    }
    let entries = media::scan(&root)?;
    let hashed = media::hash_all(&root, &entries, &|_| {})?;
    Ok(hashed.into_iter().map(|f| (f.rel, f.sha256)).collect())
}

/// A dump without its COPY data, for telling schema changes from data changes.
fn schema_part(sql: &str) -> String {
    let mut out = String::new();
    let mut in_copy = false;
    for line in sql.lines() {
        if in_copy {
            in_copy = line != "\\.";
            continue;
        }
        in_copy = dump::is_copy_start(line.as_bytes());
        out.push_str(line);
        out.push('\n');
    }
    out
}
