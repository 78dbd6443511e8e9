//! `cargo xtask dev-db`: snapshots of the dev database and media, on PostgreSQL 13, 15 and
//! 17, with the dev role an ordinary owner with CREATEDB (not a superuser), as seed-dev
//! leaves it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use crate::harness::{leftovers, marker, output_of, run, sha256_hex, tree, xtask, Pg, Run};

pub(crate) struct DevEnv {
    pub(crate) pg: Pg,
    pub(crate) password: String,
    pub(crate) media: PathBuf,
    _dir: tempfile::TempDir,
}

impl DevEnv {
    /// A server with a `dev` role (LOGIN CREATEDB) and a dev database seeded by it.
    pub(crate) fn start(major: u32) -> DevEnv {
        let pg = Pg::start(major);
        let password = marker("devpw");
        pg.psql(
            "postgres",
            &format!("create role dev login createdb password '{password}'"),
        );
        let dir = tempfile::tempdir().unwrap();
        let env = DevEnv {
            pg,
            password,
            media: dir.path().join("netpoint/media"),
            _dir: dir,
        };
        fs::create_dir_all(env.media.parent().unwrap()).unwrap();
        // The fixtures are a PostgreSQL 15 dump.
        let mut args = vec!["seed-dev", "--yes"];
        if major < 15 {
            args.push("--allow-downgrade");
        }
        run(env.xtask(&args)).ok();
        env
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!(
            "postgres://dev:{}@127.0.0.1:{}/{db}",
            self.password, self.pg.port
        )
    }

    /// `cargo xtask` with this dev database and media configured as a developer has them,
    /// without spares (their tests are in `spares.rs`): every restore copies.
    pub(crate) fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = self.xtask_with_spares(args);
        cmd.env("NETPOINT_DEV_DB_NO_SPARE", "1");
        cmd
    }

    /// `cargo xtask` as a developer runs it, spares and all.
    pub(crate) fn xtask_with_spares(&self, args: &[&str]) -> Command {
        let mut cmd = xtask(args);
        cmd.env("NETPOINT_DATABASE_URL", self.url("netpoint"))
            .env("NETPOINT_MEDIA_ROOT", &self.media)
            .env_remove("NETPOINT_DEV_DB_NO_SPARE");
        cmd
    }

    /// psql as the dev role.
    pub(crate) fn dev_psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port.to_string())
            .env("PGUSER", "dev")
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", "netpoint")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What a restore must give back: the schema, every table's content digest, and every
    /// media file's SHA-256.
    pub(crate) fn state(&self) -> (String, String, Vec<(String, String)>) {
        // The project's own schema snapshot (which picks client tools for any major).
        let file = self._dir.path().join("schema.sql");
        let mut snapshot = self.xtask(&["schema-snapshot", "--output", file.to_str().unwrap()]);
        snapshot.env("NETPOINT_DATABASE_URL", self.pg.url("netpoint"));
        run(snapshot).ok();
        let schema = fs::read_to_string(&file).unwrap();
        let digests = self.pg.psql("netpoint", TABLE_DIGESTS);
        let media = tree(&self.media)
            .into_iter()
            .map(|(name, bytes)| (name, sha256_hex(&bytes)))
            .collect();
        (schema, digests, media)
    }

    pub(crate) fn snapshots(&self) -> Vec<String> {
        self.pg
            .databases()
            .into_iter()
            .filter(|d| d.starts_with("npsnap_"))
            .collect()
    }
}

const TABLE_DIGESTS: &str = "select string_agg(format('%s.%s %s', schemaname, tablename, \
     (xpath('/row/d/text()', query_to_xml(format('select md5(coalesce(string_agg(t::text, ''|'' order by t::text), '''')) as d from %I.%I t', \
     schemaname, tablename), false, true, '')))[1]::text), E'\\n' order by schemaname, tablename) \
     from pg_tables where schemaname not in ('pg_catalog', 'information_schema')";

fn one_file(root: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = walk_files(root);
    files.sort();
    files.remove(0)
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let kind = fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() {
            out.extend(walk_files(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

fn save_damage_restore(major: u32) {
    let env = DevEnv::start(major);
    let before = env.state();
    assert!(before.2.len() > 5, "{:?}", before.2);
    let saved = run(env.xtask(&["dev-db", "save", "base"])).ok();
    assert!(saved.stderr.contains("saved"), "{}", saved.stderr);
    assert_eq!(env.snapshots().len(), 1);

    // The snapshot takes no connections: no application reaches it by mistake.
    let snapshot = &env.snapshots()[0];
    let refused = Command::new("psql")
        .args(["-X", "-c", "select 1", &env.url(snapshot)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // list: name, time, sizes, the checkout's commit, the newest migration per app.
    let listed = run(env.xtask(&["dev-db", "list"])).ok();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    let newest_auth = env.pg.psql(
        "netpoint",
        "select name from django_migrations where app = 'auth' order by applied desc, id desc limit 1",
    );
    for needle in [
        "base ",
        " UTC",
        &commit,
        &format!("auth {newest_auth}"),
        &format!("{} files", before.2.len()),
    ] {
        assert!(
            listed.stdout.contains(needle),
            "{needle}: {}",
            listed.stdout
        );
    }

    // Damage: rows, schema, and media (one file rewritten in place, one removed, one added).
    env.dev_psql(
        "truncate dcim_interface cascade; alter table dcim_site add column damaged int; \
         create table junk (id int); insert into junk values (1)",
    );
    let rewritten = one_file(&env.media);
    fs::write(&rewritten, b"rewritten in place").unwrap();
    let removed = walk_files(&env.media).pop().unwrap();
    fs::remove_file(&removed).unwrap();
    fs::write(env.media.join("added.txt"), b"new").unwrap();
    assert_ne!(env.state(), before);

    // An application session on the dev database does not stop the restore: it is ended,
    // and the output says so.
    let mut app = Command::new("psql")
        .args(["-X", "-q", "-c", "select pg_sleep(120)"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", env.pg.port.to_string())
        .env("PGUSER", "dev")
        .env("PGPASSWORD", &env.password)
        .env("PGDATABASE", "netpoint")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::harness::wait_for(
        "the application session",
        std::time::Duration::from_secs(30),
        || {
            env.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where datname = 'netpoint' and usename = 'dev'",
        ) == "1"
        },
    );
    let restored = run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert!(
        restored.stderr.contains("ended 1 other session(s)"),
        "{}",
        restored.stderr
    );
    let _ = app.wait();
    assert_eq!(env.state(), before, "PostgreSQL {major}");

    // The dev role owns its database again and writes to every table as before.
    assert_eq!(
        env.dev_psql(
            "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
        ),
        "dev"
    );
    env.dev_psql(
        "do $$ declare t record; begin for t in select schemaname, tablename from pg_tables \
         where schemaname = 'public' loop execute format('lock table %I.%I in exclusive mode', t.schemaname, t.tablename); \
         end loop; end $$; update dcim_site set name = name",
    );

    // The snapshot stays: a second restore after more damage gives the same state.
    env.dev_psql("update dcim_site set name = name || ' (changed)'");
    run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert_eq!(env.state(), before, "PostgreSQL {major}, second restore");

    run(env.xtask(&["dev-db", "drop", "base", "--yes"])).ok();
    assert!(env.snapshots().is_empty());
    let listed = run(env.xtask(&["dev-db", "list"])).ok();
    assert!(listed.stdout.contains("no snapshots"), "{}", listed.stdout);
    assert!(!env
        .media
        .parent()
        .unwrap()
        .join(".netpoint-dev-db")
        .read_dir()
        .unwrap()
        .any(|_| true));
}

#[test]
fn save_damage_and_restore_give_back_the_saved_state_on_13_15_and_17() {
    thread::scope(|scope| {
        let runs: Vec<_> = [13, 15, 17]
            .into_iter()
            .map(|major| scope.spawn(move || save_damage_restore(major)))
            .collect();
        for run in runs {
            run.join().unwrap();
        }
    });
}

fn fails(run: Run, needle: &str) -> Run {
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains(needle), "{needle}: {}", run.stderr);
    run
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let env = DevEnv::start(15);
    fails(
        run(env.xtask(&["dev-db", "save", "no/slashes"])),
        "invalid snapshot name `no/slashes`",
    );
    fails(
        run(env.xtask(&["dev-db", "restore", "nope", "--yes"])),
        "there is no snapshot `nope`",
    );
    fails(
        run(env.xtask(&["dev-db", "drop", "nope", "--yes"])),
        "there is no snapshot `nope`",
    );
    run(env.xtask(&["dev-db", "save", "one"])).ok();
    let before = env.state();
    fails(
        run(env.xtask(&["dev-db", "save", "one"])),
        "snapshot `one` exists",
    );
    fails(run(env.xtask(&["dev-db", "drop", "one"])), "pass --yes");
    fails(run(env.xtask(&["dev-db", "restore", "one"])), "pass --yes");
    run(env.xtask(&["dev-db", "save", "one", "--force"])).ok();
    assert_eq!(env.snapshots().len(), 1);

    // A dev database that is not there.
    let mut missing = env.xtask(&["dev-db", "save", "x"]);
    missing.env("NETPOINT_DATABASE_URL", env.url("nosuch"));
    fails(run(missing), "there is no dev database");

    // A role that may not create databases cannot copy one.
    env.pg.psql(
        "postgres",
        &format!("create role weak login password '{}'", env.password),
    );
    env.pg.psql("postgres", "create database weakdb owner weak");
    let mut weak = env.xtask(&["dev-db", "save", "x"]);
    weak.env(
        "NETPOINT_DATABASE_URL",
        format!(
            "postgres://weak:{}@127.0.0.1:{}/weakdb",
            env.password, env.pg.port
        ),
    );
    fails(run(weak), "may not create databases");

    // seed-dev and clone-prod never take a snapshot for a dev database, nor remove one.
    let snapshot = env.snapshots().remove(0);
    fails(
        run(env.xtask(&["seed-dev", "--yes", "--target", &env.url(&snapshot)])),
        "is a snapshot of the dev database, not a dev database: name the dev database, or use `cargo xtask dev-db restore`",
    );
    fails(
        run(xtask(&[
            "clone-prod",
            "--source",
            &env.url("netpoint"),
            "--target",
            &env.url(&snapshot),
            "--yes",
        ])),
        "is a snapshot of the dev database, not a dev database: name the dev database, or use `cargo xtask dev-db restore`",
    );
    run(env.xtask(&["seed-dev", "--yes"])).ok();
    assert_eq!(env.snapshots(), vec![snapshot]);
    assert_eq!(env.state(), before);
    assert!(run(env.xtask(&["dev-db", "list"]))
        .ok()
        .stdout
        .contains("one "));
}

impl DevEnv {
    /// The dev database's URL with the host spelt `host`.
    fn url_on(&self, host: &str, db: &str) -> String {
        format!(
            "postgres://dev:{}@{host}:{}/{db}",
            self.password, self.pg.port
        )
    }

    /// Where the snapshots' media live, and the directories there.
    pub(crate) fn stores(&self) -> PathBuf {
        self.media.parent().unwrap().join(".netpoint-dev-db")
    }

    pub(crate) fn store_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.stores())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The media directory of snapshot `name`'s save (exactly one).
    fn store_of(&self, name: &str) -> PathBuf {
        let found: Vec<String> = self
            .store_names()
            .into_iter()
            .filter(|n| n.starts_with("npsnap_") && n.contains(&format!("_{name}@")))
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        self.stores().join(&found[0])
    }

    /// The id in snapshot `name`'s database comment.
    fn snapshot_id(&self, name: &str) -> String {
        self.pg.psql(
            "postgres",
            &format!(
                "select shobj_description(oid, 'pg_database')::json->>'id' from pg_database \
                 where datname like 'npsnap\\_%\\_{name}'"
            ),
        )
    }

    /// A session of the dev role on the dev database, as an application keeps one.
    fn app_session(&self, name: &str) -> std::process::Child {
        let child = Command::new("psql")
            .args(["-X", "-q", "-c", "select pg_sleep(600)"])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.pg.port.to_string())
            .env("PGUSER", "dev")
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", "netpoint")
            .env("PGAPPNAME", name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::harness::wait_for(name, Duration::from_secs(30), || {
            self.sessions_of(name) == 1
        });
        child
    }

    pub(crate) fn sessions_of(&self, application: &str) -> usize {
        self.pg
            .psql(
                "postgres",
                &format!(
                    "select count(*) from pg_stat_activity where application_name = '{application}'"
                ),
            )
            .parse()
            .unwrap()
    }

    /// Rows and files enough that copying them takes a while: a signal can be sent during it.
    fn make_bulky(&self, files: usize) {
        self.dev_psql(
            "create table bulk as select g, md5(g::text) || repeat('x', 400) as pad \
             from generate_series(1, 400000) g",
        );
        let dir = self.media.join("bulk");
        fs::create_dir_all(&dir).unwrap();
        let mut block = vec![0u8; 16 * 1024];
        for i in 0..files {
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            fs::write(dir.join(format!("{i:05}.bin")), &block).unwrap();
        }
        let big = vec![7u8; 48 << 20];
        for i in 0..3 {
            fs::write(dir.join(format!("big-{i}.bin")), &big).unwrap();
        }
    }
}

use std::time::Duration;

fn sigterm(child: &std::process::Child) {
    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

fn sigkill(child: &std::process::Child) {
    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
}

fn spawn(mut cmd: Command) -> std::process::Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Rewrites `path` in place with other bytes of the same length and gives it back its
/// access and modification times, as `touch -d` or `cp -p` would: only its change time
/// (and contents) tell.
fn rewrite_keeping_size_and_times(path: &Path, fill: u8) -> Vec<u8> {
    let meta = fs::metadata(path).unwrap();
    let bytes = vec![fill; meta.len() as usize];
    fs::write(path, &bytes).unwrap();
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().unwrap())
        .set_modified(meta.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(times)
        .unwrap();
    let after = fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (meta.len(), meta.modified().unwrap())
    );
    bytes
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn media_roots_holding_the_checkout_or_home_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().join("me");
    fs::create_dir(&home_dir).unwrap();
    let checkout = crate::harness::workspace_root();
    let roots = [
        PathBuf::from("/"),
        home_dir.clone(),
        checkout.to_path_buf(),
        checkout.parent().unwrap().to_path_buf(),
        PathBuf::from(".."),
    ];
    for root in &roots {
        for args in [
            &["dev-db", "save", "x"][..],
            &["dev-db", "restore", "x", "--yes"][..],
        ] {
            for by_flag in [true, false] {
                let mut cmd = xtask(args);
                // Nothing is asked of the server: the check comes first.
                cmd.env(
                    "NETPOINT_DATABASE_URL",
                    "postgres://dev@127.0.0.1:1/netpoint",
                )
                .env("HOME", &home_dir);
                match by_flag {
                    true => cmd.arg("--target-media").arg(root),
                    false => cmd.env("NETPOINT_MEDIA_ROOT", root),
                };
                let ran = fails(run(cmd), "holds");
                assert!(
                    ran.stderr.contains("the current directory")
                        || ran.stderr.contains("your home directory"),
                    "{}",
                    ran.stderr
                );
            }
        }
    }
    for root in roots {
        let beside = atomic_parent(&root).join(".netpoint-dev-db");
        assert!(!beside.exists(), "{}", beside.display());
    }
    assert_eq!(fs::read_dir(home.path()).unwrap().count(), 1);
}

fn atomic_parent(path: &Path) -> PathBuf {
    let real = fs::canonicalize(crate::harness::workspace_root().join(path)).unwrap();
    real.parent().map_or(real.clone(), Path::to_path_buf)
}

#[test]
fn a_file_rewritten_in_place_with_its_size_and_times_kept_is_saved_and_restored_as_it_is() {
    let env = DevEnv::start(15);
    let file = one_file(&env.media);
    let rel = file.strip_prefix(&env.media).unwrap().to_path_buf();
    let original = fs::read(&file).unwrap();
    let unchanged = walk_files(&env.media).pop().unwrap();
    assert_ne!(unchanged, file);
    let unchanged_rel = unchanged.strip_prefix(&env.media).unwrap().to_path_buf();
    // The fixtures' files were written moments ago: a save records only files that changed
    // before the clock step it begins in.
    thread::sleep(Duration::from_millis(50));
    run(env.xtask(&["dev-db", "save", "base"])).ok();
    let base_state = env.state();

    // Saved again after the rewrite: the new snapshot holds the new bytes; the files that did
    // not change are links to the first snapshot's (the link check still saves the copy).
    let rewritten = rewrite_keeping_size_and_times(&file, b'R');
    thread::sleep(Duration::from_millis(50));
    run(env.xtask(&["dev-db", "save", "second"])).ok();
    let (base, second) = (env.store_of("base"), env.store_of("second"));
    assert_eq!(
        fs::read(second.join("media").join(&rel)).unwrap(),
        rewritten
    );
    assert_eq!(fs::read(base.join("media").join(&rel)).unwrap(), original);
    assert_eq!(
        ino(&base.join("media").join(&unchanged_rel)),
        ino(&second.join("media").join(&unchanged_rel))
    );
    assert_ne!(
        ino(&base.join("media").join(&rel)),
        ino(&second.join("media").join(&rel))
    );
    // The record beside the media is this tool's, read strictly.
    let record = fs::read_to_string(second.join("origins.json")).unwrap();
    assert!(
        record.starts_with("{\"netpoint_media_origins\":1,"),
        "{record}"
    );

    // Restored: the live file, rewritten again with its size and times kept, gets the
    // snapshot's bytes back; the rest of the live tree is kept as it was (linked).
    rewrite_keeping_size_and_times(&file, b'S');
    let before_restore = ino(&unchanged);
    let restored = run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert_eq!(fs::read(&file).unwrap(), original, "{}", restored.stderr);
    assert_eq!(ino(&unchanged), before_restore);
    assert_eq!(env.state(), base_state);

    // And once more: the restore recorded the tree it put in place, and the next one still
    // tells a rewrite from an unchanged file.
    rewrite_keeping_size_and_times(&file, b'T');
    run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert_eq!(fs::read(&file).unwrap(), original);
    assert_eq!(ino(&unchanged), before_restore);
    assert_eq!(env.state(), base_state);
    run(env.xtask(&["dev-db", "restore", "second", "--yes"])).ok();
    assert_eq!(fs::read(&file).unwrap(), rewritten);

    // A record this tool did not write is refused, naming it, before anything changes.
    fs::write(
        base.join("origins.json"),
        record.replacen("\"files\"", "\"extra\":1,\"files\"", 1),
    )
    .unwrap();
    let refused = fails(
        run(env.xtask(&["dev-db", "restore", "base", "--yes"])),
        "origins.json",
    );
    assert!(
        refused.stderr.contains("save it again"),
        "{}",
        refused.stderr
    );
    assert_eq!(fs::read(&file).unwrap(), rewritten);

    // `list` finds the snapshots however the host is spelt; so does a restore.
    for host in ["localhost", "LOCALHOST", "127.1", "127.0.0.1"] {
        let mut list = env.xtask(&["dev-db", "list"]);
        list.env("NETPOINT_DATABASE_URL", env.url_on(host, "netpoint"));
        let listed = run(list).ok();
        for name in ["base ", "second "] {
            assert!(listed.stdout.contains(name), "{host}: {}", listed.stdout);
        }
    }
    let mut restore = env.xtask(&["dev-db", "restore", "second", "--yes"]);
    restore.env("NETPOINT_DATABASE_URL", env.url_on("LOCALHOST", "netpoint"));
    run(restore).ok();
}

#[test]
fn sigterm_during_save_force_never_loses_the_snapshot_it_replaces() {
    let env = DevEnv::start(15);
    env.make_bulky(5000);
    run(env.xtask(&["dev-db", "save", "base"])).ok();
    let saved = env.state();
    let id = env.snapshot_id("base");
    let store = env.store_of("base");
    let stored = tree(&store);
    env.dev_psql("update dcim_site set name = name || ' (changed)'");
    fs::write(env.media.join("added.txt"), b"new").unwrap();
    // Every file changed (a chmod moves its change time): the save copies them all.
    let touch_all = || {
        for file in walk_files(&env.media) {
            let mode = fs::metadata(&file).unwrap().permissions();
            fs::set_permissions(&file, mode).unwrap();
        }
    };
    let copying_media = || {
        env.store_names()
            .iter()
            .filter(|n| n.contains("_base@"))
            .count()
            == 2
    };
    let copying_database = || {
        env.pg.psql(
            "postgres",
            "select count(*) > 0 from pg_stat_activity where query like 'create database \"npsnaptmp\\_%'",
        ) == "t"
    };
    type Phase<'a> = (&'a str, Box<dyn Fn() -> bool + 'a>);
    let phases: Vec<Phase> = vec![
        ("while copying the media", Box::new(copying_media)),
        ("while copying the database", Box::new(copying_database)),
    ];
    for (what, ready) in phases {
        touch_all();
        let child = spawn(env.xtask(&["dev-db", "save", "base", "--force"]));
        let started = std::time::Instant::now();
        while !ready() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{what}: not seen"
            );
        }
        sigterm(&child);
        let ended = output_of(child);
        assert_eq!(
            ended.status.code(),
            Some(143),
            "{what}:\n{}",
            ended.output()
        );
        let errors: Vec<&str> = ended
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(
            errors,
            ["error: interrupted: nothing was changed, and nothing is left behind"],
            "{what}:\n{}",
            ended.output()
        );
        // It is true: the snapshot is the one saved, whole, and nothing else is there.
        assert_eq!(env.snapshot_id("base"), id, "{what}");
        assert_eq!(env.store_of("base"), store, "{what}");
        assert_eq!(tree(&store), stored, "{what}");
        assert!(
            env.pg.temp_dbs().is_empty(),
            "{what}: {:?}",
            env.pg.temp_dbs()
        );
        assert_eq!(
            env.store_names().len(),
            1,
            "{what}: {:?}",
            env.store_names()
        );
    }

    run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert_eq!(env.state(), saved);
    // Saved over for good, the previous media and database go.
    fs::write(env.media.join("added.txt"), b"new").unwrap();
    run(env.xtask(&["dev-db", "save", "base", "--force"])).ok();
    assert_ne!(env.snapshot_id("base"), id);
    assert!(!store.exists());
    assert!(env.store_of("base").join("media/added.txt").is_file());
    crate::harness::wait_for(
        "the replaced snapshot's database, dropped in the background",
        Duration::from_secs(60),
        || env.pg.temp_dbs().is_empty(),
    );
}

#[test]
fn leftovers_of_killed_runs_are_removed_and_a_live_run_s_are_kept() {
    let env = DevEnv::start(15);
    env.make_bulky(6000);
    run(env.xtask(&["dev-db", "save", "base"])).ok();
    let saved = env.state();

    // Killed outright while copying the database: the server finishes the copy, and the
    // new media are there too.
    let kill_during = |args: &[&str], copying: &str| {
        let before = env.pg.temp_dbs();
        let child = spawn(env.xtask(args));
        let pattern = copying.replace('_', "\\_");
        // Watched from inside the server, every millisecond: a quick copy can start and end
        // between two polls that each start a psql.
        env.pg.psql(
            "postgres",
            &format!(
                "do $$ begin \
                   for i in 1..120000 loop \
                     perform pg_stat_clear_snapshot(); \
                     if exists (select from pg_stat_activity \
                                where query like 'create database \"{pattern}%') then return; end if; \
                     perform pg_sleep(0.001); \
                   end loop; \
                   raise exception '{copying}: no copy seen within two minutes'; \
                 end $$"
            ),
        );
        sigkill(&child);
        let _ = output_of(child);
        crate::harness::wait_for(
            "the copy the server finishes",
            Duration::from_secs(120),
            || {
                env.pg
                    .temp_dbs()
                    .iter()
                    .any(|d| d.starts_with(copying) && !before.contains(d))
            },
        );
    };
    let dead = env.stores().join(".npsnap_0123abcd_x.old-4194999");
    fs::create_dir_all(dead.join("media")).unwrap();
    // A live run's temporary database (its pid is alive here) stays.
    let mut live = Command::new("sleep").arg("600").spawn().unwrap();
    let live_db = format!("netpoint__npload_{}", live.id());
    env.pg.create_db(&live_db);
    let live_dir = env
        .stores()
        .join(format!(".npsnap_0123abcd_x.old-{}", live.id()));
    fs::create_dir_all(&live_dir).unwrap();

    // Another command on the dev database removes what a killed save and a killed restore
    // left there...
    kill_during(&["dev-db", "save", "big"], "npsnaptmp_");
    assert!(env.store_names().iter().any(|n| n.contains("_big@")));
    let seeded = run(env.xtask(&["seed-dev", "--yes"])).ok();
    assert!(
        seeded.stderr.contains("left behind by an interrupted run"),
        "{}",
        seeded.stderr
    );
    assert_eq!(env.pg.temp_dbs(), std::slice::from_ref(&live_db));
    kill_during(&["dev-db", "restore", "base", "--yes"], "netpoint__npload_");
    assert!(!leftovers(env.media.parent().unwrap()).is_empty());
    run(env.xtask(&["seed-dev", "--yes"])).ok();
    assert_eq!(env.pg.temp_dbs(), std::slice::from_ref(&live_db));
    assert!(
        leftovers(env.media.parent().unwrap()).is_empty(),
        "{:?}",
        leftovers(env.media.parent().unwrap())
    );
    // ...and dev-db the media no snapshot names.
    run(env.xtask(&["dev-db", "restore", "base", "--yes"])).ok();
    assert_eq!(env.state(), saved);
    assert!(!dead.exists());
    assert!(live_dir.exists());
    assert_eq!(
        env.store_names(),
        [
            format!(".npsnap_0123abcd_x.old-{}", live.id()),
            env.store_of("base")
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        ]
    );
    let _ = live.kill();
    let _ = live.wait();
    env.pg
        .psql("postgres", &format!("drop database \"{live_db}\""));

    // A save killed the same way is cleaned up by the next dev-db run.
    kill_during(&["dev-db", "save", "big"], "npsnaptmp_");
    run(env.xtask(&["dev-db", "drop", "base", "--yes"])).ok();
    assert!(env.pg.temp_dbs().is_empty());
    assert!(
        !env.store_names().iter().any(|n| n.starts_with("npsnap_")),
        "{:?}",
        env.store_names()
    );
    run(env.xtask(&["dev-db", "save", "base"])).ok();

    // SIGTERM while the restore drops what it replaced: it finishes, and leaves nothing.
    env.dev_psql("update dcim_site set name = name || ' (changed)'");
    let child = spawn(env.xtask(&["dev-db", "restore", "base", "--yes"]));
    crate::harness::wait_for("the swap", Duration::from_secs(120), || {
        env.pg
            .temp_dbs()
            .iter()
            .any(|d| d.starts_with("netpoint__npold_"))
    });
    sigterm(&child);
    let ended = output_of(child);
    assert_eq!(ended.status.code(), Some(143), "{}", ended.output());
    assert!(
        ended.stderr.contains("interrupted after the work was done"),
        "{}",
        ended.output()
    );
    assert!(env.pg.temp_dbs().is_empty(), "{:?}", env.pg.temp_dbs());
    assert!(
        leftovers(env.media.parent().unwrap()).is_empty(),
        "{:?}",
        leftovers(env.media.parent().unwrap())
    );
    assert_eq!(env.state(), saved);
}

#[test]
fn a_target_named_like_a_temporary_database_is_refused_by_every_command() {
    let env = DevEnv::start(15);
    for name in [
        "netpoint__npload_123",
        "netpoint__npold_9",
        "npsnaptmp_0123abcd_42",
    ] {
        env.pg.create_db(name);
        let url = env.url(name);
        let commands = [
            xtask(&["seed-dev", "--yes", "--target", &url]),
            xtask(&[
                "clone-prod",
                "--source",
                &env.url("netpoint"),
                "--target",
                &url,
                "--yes",
            ]),
            xtask(&["dev-db", "save", "x", "--target", &url]),
            xtask(&["dev-db", "restore", "x", "--yes", "--target", &url]),
        ];
        for cmd in commands {
            fails(run(cmd), "has the name of a temporary database");
        }
        assert_eq!(
            env.pg.psql(
                name,
                "select count(*) from pg_tables where schemaname = 'public'"
            ),
            "0"
        );
    }
}

#[test]
fn a_failed_restore_ends_no_session() {
    let env = DevEnv::start(15);
    run(env.xtask(&["dev-db", "save", "base"])).ok();
    let store = env.store_of("base");
    let mut app = env.app_session("the-app");
    let kept = |what: &str| assert_eq!(env.sessions_of("the-app"), 1, "{what}");
    let restore = || run(env.xtask(&["dev-db", "restore", "base", "--yes"]));

    // The snapshot's media gone.
    let away = env._dir.path().join("away");
    fs::rename(&store, &away).unwrap();
    fails(restore(), "the media of snapshot `base` are missing");
    kept("media missing");
    fs::rename(&away, &store).unwrap();

    // The media of another save.
    let beside = store.join("snapshot.json");
    let text = fs::read_to_string(&beside).unwrap();
    let id = env.snapshot_id("base");
    fs::write(&beside, text.replace(&id, "0000000000000000")).unwrap();
    fails(restore(), "belong to another save");
    kept("another save");
    fs::write(&beside, text).unwrap();

    // A snapshot of another format.
    let comment = env.pg.psql(
        "postgres",
        "select shobj_description(oid, 'pg_database') from pg_database where datname like 'npsnap\\_%'",
    );
    let database = env.snapshots().remove(0);
    env.pg.psql(
        "postgres",
        &format!(
            "comment on database {database} is '{}'",
            comment.replacen(
                "\"netpoint_dev_db_snapshot\":2",
                "\"netpoint_dev_db_snapshot\":9",
                1
            )
        ),
    );
    fails(restore(), "saved by another version");
    kept("format");
    env.pg.psql(
        "postgres",
        &format!("comment on database {database} is '{comment}'"),
    );

    // Another run holding the dev database's lock.
    let mut holder = env
        .pg
        .psql_cmd("postgres")
        .args([
            "-c",
            "select pg_advisory_lock(1313888340, hashtext('netpoint')); select pg_sleep(600)",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    crate::harness::wait_for("the lock", Duration::from_secs(30), || {
        env.pg.psql(
            "postgres",
            "select count(*) from pg_locks where locktype = 'advisory' and granted",
        ) == "1"
    });
    fails(restore(), "another run is replacing");
    kept("lock");
    env.pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory'",
    );
    let _ = holder.wait();

    // A session the dev role may not end: the restore waits, gives up, and ends none.
    let mut superuser = env
        .pg
        .psql_cmd("netpoint")
        .args(["-c", "select pg_sleep(600)"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    crate::harness::wait_for("the superuser session", Duration::from_secs(30), || {
        env.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where datname = 'netpoint' and usename = 'postgres'",
        ) == "1"
    });
    let refused = fails(restore(), "may not be ended by user `dev`");
    assert!(
        refused.stderr.contains("user postgres"),
        "{}",
        refused.stderr
    );
    kept("a session of another role");
    let _ = superuser.kill();
    env.pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = 'netpoint' and usename = 'postgres'",
    );
    let _ = superuser.wait();
    assert!(env.pg.temp_dbs().is_empty(), "{:?}", env.pg.temp_dbs());

    // With every check passed, the restore ends the session and says so.
    let restored = restore().ok();
    assert!(
        restored.stderr.contains("ended 1 other session(s)"),
        "{}",
        restored.stderr
    );
    let _ = app.wait();
}
