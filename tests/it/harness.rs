//! Test fixtures: real PostgreSQL servers in Docker, the built `xtask` binary, and helpers to
//! look at databases and files.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

use testcontainers::{runners::SyncRunner, Container, ImageExt};
use testcontainers_modules::postgres::Postgres;

pub const SETUP_HINT: &str = "run `bash scripts/test-prereqs.sh` (starts Docker and builds the postgres:13/15/17 images offline)";

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

pub fn fixtures() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The `xtask` binary, built once per test run.
pub fn xtask_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--package", "xtask", "--bin", "xtask"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for xtask");
        assert!(status.success(), "building xtask failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug/xtask")
    })
}

/// A unique, recognisable string: passwords and markers that must never leak.
pub fn marker(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{what}-{}-{}-Zq7",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// One PostgreSQL server in its own container, removed when dropped.
pub struct Pg {
    /// Kept for its `Drop`, which removes the container.
    _container: Container<Postgres>,
    pub port: u16,
    pub password: String,
    pub major: u32,
}

impl Pg {
    pub fn start(major: u32) -> Pg {
        let password = marker("pw");
        Pg::start_with_password(major, &password)
    }

    /// A server whose data directory is a tmpfs of `size` (such as `"80m"`): a disk that
    /// fills up.
    pub fn start_on_small_disk(major: u32, size: &str) -> Pg {
        let password = marker("pw");
        let container = Postgres::default()
            .with_password(&password)
            .with_tag(major.to_string())
            .with_mount(
                testcontainers::core::Mount::tmpfs_mount("/var/lib/postgresql/data")
                    .with_size(size),
            )
            .start()
            .unwrap_or_else(|err| {
                panic!("cannot start a postgres:{major} container ({err}): {SETUP_HINT}")
            });
        let port = container
            .get_host_port_ipv4(5432)
            .expect("postgres container publishes 5432");
        Pg {
            _container: container,
            port,
            password,
            major,
        }
    }

    pub fn start_with_password(major: u32, password: &str) -> Pg {
        Pg::start_with_settings(major, password, &[])
    }

    /// A server started with `-c name=value` for each setting, as well as `fsync=off`.
    pub fn start_with_settings(major: u32, password: &str, settings: &[&str]) -> Pg {
        let mut cmd = vec!["-c".to_string(), "fsync=off".to_string()];
        for setting in settings {
            cmd.extend(["-c".to_string(), setting.to_string()]);
        }
        let container = Postgres::default()
            .with_password(password)
            .with_tag(major.to_string())
            .with_cmd(cmd)
            .start()
            .unwrap_or_else(|err| {
                panic!("cannot start a postgres:{major} container ({err}): {SETUP_HINT}")
            });
        let port = container
            .get_host_port_ipv4(5432)
            .expect("postgres container publishes 5432");
        Pg {
            _container: container,
            port,
            password: password.to_string(),
            major,
        }
    }

    /// The container's id, for `docker exec`.
    pub fn container_id(&self) -> &str {
        self._container.id()
    }

    /// The container's address on Docker's bridge, where the server listens on 5432: the same
    /// server under another address and port.
    pub fn bridge_ip(&self) -> String {
        let out = Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                self._container.id(),
            ])
            .output()
            .expect("running docker inspect");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .next()
            .expect("the container has a bridge address")
            .to_string()
    }

    /// `postgres://postgres:<password>@127.0.0.1:<port>/<db>`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Runs SQL with the host's psql (password via the environment) and returns unaligned rows.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .psql_cmd(db)
            .args(["-c", sql])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed on {db}: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", db)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a SQL file into `db`, stopping at the first error.
    pub fn psql_file(&self, db: &str, file: &Path) {
        let out = self
            .psql_cmd(db)
            .arg("-f")
            .arg(file)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "loading {} into {db} failed:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("create database \"{db}\""));
    }

    /// A database loaded with the committed fixture, as a developer would have it.
    pub fn load_fixture(&self, db: &str) {
        self.create_db(db);
        self.psql_file(db, &fixtures().join("netpoint.sql"));
    }

    /// A production-like database: the fixture plus owners, grants and roles.
    pub fn load_prod(&self, db: &str) {
        self.load_fixture(db);
        self.psql_file(db, &workspace_root().join("tests/it/sql/prod_extras.sql"));
    }

    /// Everything in a database, as `pg_dump` prints it.
    pub fn full_dump(&self, db: &str) -> String {
        let out = Command::new("pg_dump")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", db)
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("a UTF-8 dump")
    }

    pub fn databases(&self) -> Vec<String> {
        self.psql("postgres", "select datname from pg_database order by 1")
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn has_db(&self, db: &str) -> bool {
        self.databases().iter().any(|d| d == db)
    }

    /// `table → row count` for every user table.
    pub fn row_counts(&self, db: &str) -> Vec<(String, i64)> {
        let tables = self.psql(
            db,
            "select schemaname || '.' || tablename from pg_tables \
             where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        );
        tables
            .lines()
            .map(|table| {
                let count = self.psql(db, &format!("select count(*) from {table}"));
                (table.to_string(), count.parse().unwrap())
            })
            .collect()
    }
}

/// What a run of `cargo xtask` did.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "xtask failed:\n{}", self.output());
        self
    }

    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Run {
        assert!(
            !self.status.success(),
            "xtask should have failed:\n{}",
            self.output()
        );
        assert!(
            self.stderr.contains(needle),
            "expected `{needle}` in stderr:\n{}",
            self.output()
        );
        assert!(
            self.stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count()
                == 1,
            "one error line expected:\n{}",
            self.stderr
        );
        self
    }
}

/// `cargo xtask` with a clean environment: no NETPOINT_* variables, no terminal on stdin.
pub fn xtask(args: &[&str]) -> Command {
    let mut cmd = Command::new(xtask_bin());
    cmd.args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("NETPOINT_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn run(mut cmd: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running xtask");
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Every file below `root` (relative path → bytes), for comparing trees.
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// All text of every file below `root`, for leak checks.
pub fn contains_anywhere(root: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            let bytes = fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// A TCP port on 127.0.0.1 where nothing listens (bound once to pick it, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().port()
}

/// A copy of the tree `src` at `dst`, which must not exist yet: links, modes and times kept
/// (`cp -a`).
pub fn copy_tree(src: &Path, dst: &Path) {
    assert!(!dst.exists(), "{} exists already", dst.display());
    let status = Command::new("cp").arg("-a").arg(src).arg(dst).status();
    assert!(
        status.unwrap().success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of the file at `path`, in hex.
pub fn sha256_file(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The first executable `name` on this process's PATH, as a shell would run it.
pub fn which(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH"))
}

/// Quotes a word for `sh`.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `cargo xtask` as [`xtask`] runs it, but on a pseudo-terminal (through util-linux `script`),
/// so that `--color auto` sees a terminal. stdout and stderr arrive together in `stdout`.
pub fn xtask_on_terminal(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let line: Vec<String> = std::iter::once(xtask_bin().to_string_lossy().into_owned())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|w| sh_quote(&w))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR");
    for (key, _) in std::env::vars() {
        if key.starts_with("NETPOINT_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(envs.iter().copied());
    run(cmd)
}

impl Pg {
    /// The same as [`Pg::row_counts`] in one psql call (`row_counts` runs one per table,
    /// which adds up in tests that check a database is unchanged many times).
    pub fn row_counts_fast(&self, db: &str) -> Vec<(String, i64)> {
        let rows = self.psql(
            db,
            "select schemaname || '.' || tablename, (xpath('/row/c/text()', query_to_xml( \
             format('select count(*) as c from %I.%I', schemaname, tablename), false, true, '')))[1]::text \
             from pg_tables where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        );
        rows.lines()
            .map(|row| {
                let (table, count) = row.rsplit_once('|').expect("table|count");
                (table.to_string(), count.parse().unwrap())
            })
            .collect()
    }
}

/// Waits for `probe` to hold, failing the test after `limit`.
#[track_caller]
pub fn wait_for(what: &str, limit: std::time::Duration, mut probe: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !probe() {
        assert!(start.elapsed() < limit, "{what}: not seen within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a spawned run printed and how it ended.
pub fn output_of(child: std::process::Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a refused or failed run must leave as it was on a server: its databases, the role and
/// database settings, and in one database every table's rows (their number and an
/// order-free hash of them) and every index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Pg {
    /// The server's and `db`'s [`Fingerprint`] now.
    pub fn fingerprint(&self, db: &str) -> Fingerprint {
        let settings = self.psql(
            "postgres",
            "select coalesce(string_agg(coalesce(r.rolname, '-') || '@' || coalesce(d.datname, '-') || '=' || s.setconfig::text, ';' order by 1), '') \
             from pg_db_role_setting s left join pg_roles r on r.oid = s.setrole left join pg_database d on d.oid = s.setdatabase",
        );
        let roles = self.psql(
            "postgres",
            "select coalesce(string_agg(rolname || '=' || rolconfig::text, ';' order by rolname), '') \
             from pg_roles where rolconfig is not null",
        );
        if !self.has_db(db) {
            return Fingerprint(format!(
                "databases {}\nsettings {settings}\nroles {roles}",
                self.databases().join(",")
            ));
        }
        let rows = self.psql(
            db,
            "select format('%I.%I', schemaname, tablename) || '=' || (xpath('/row/d/text()', query_to_xml(format( \
             'select count(*) || '':'' || coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) as d from %I.%I t', \
             schemaname, tablename), false, true, '')))[1]::text \
             from pg_tables where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        );
        let indexes = self.psql(
            db,
            "select indexdef from pg_indexes \
             where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        );
        Fingerprint(format!(
            "databases {}\nsettings {settings}\nroles {roles}\nrows\n{rows}\nindexes\n{indexes}",
            self.databases().join(",")
        ))
    }

    /// Fails the test, saying `why` and what differs, unless the server and `db` are as
    /// `before` found them.
    #[track_caller]
    pub fn assert_unchanged(&self, db: &str, before: &Fingerprint, why: impl std::fmt::Display) {
        self.compare(db, before, self.fingerprint(db), why);
    }

    /// The same as [`Pg::assert_unchanged`] after a killed run, which leaves its temporary
    /// databases for the next run to remove (a test checks that it does).
    #[track_caller]
    pub fn assert_unchanged_but_temp_dbs(
        &self,
        db: &str,
        before: &Fingerprint,
        why: impl std::fmt::Display,
    ) {
        let temp = self.temp_dbs();
        let mut now = self.fingerprint(db);
        now.0 = now
            .0
            .lines()
            .map(|line| match line.strip_prefix("databases ") {
                Some(list) => {
                    let kept: Vec<&str> = list
                        .split(',')
                        .filter(|d| !temp.iter().any(|t| t == d))
                        .collect();
                    format!("databases {}", kept.join(","))
                }
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.compare(db, before, now, why);
    }

    #[track_caller]
    fn compare(
        &self,
        db: &str,
        before: &Fingerprint,
        now: Fingerprint,
        why: impl std::fmt::Display,
    ) {
        let (was, is): (Vec<&str>, Vec<&str>) =
            (before.0.lines().collect(), now.0.lines().collect());
        if was != is {
            let gone: Vec<&&str> = was.iter().filter(|l| !is.contains(l)).collect();
            let new: Vec<&&str> = is.iter().filter(|l| !was.contains(l)).collect();
            panic!("{why}: the server or `{db}` changed\nbefore: {gone:#?}\nnow: {new:#?}");
        }
    }

    /// Temporary databases a run made (`<target>__npload_<pid>`, `<target>__npold_<pid>`,
    /// dev-db's `npsnaptmp_`, `npsnapold_`), which no finished run leaves.
    pub fn temp_dbs(&self) -> Vec<String> {
        self.databases()
            .into_iter()
            .filter(|d| {
                d.contains("__np")
                    || d.starts_with("npsnaptmp_")
                    || d.starts_with("npsnapold_")
                    || d.starts_with("npschematmp_")
            })
            .collect()
    }
}

/// Hidden entries of `dir` (beside a media directory, or in it) that a run made for a while:
/// staging and replaced trees, lock files, temporary files. Only dev-db's store of
/// snapshots (`.netpoint-dev-db`) is there to stay.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name != ".netpoint-dev-db")
        .collect();
    found.sort();
    found
}
