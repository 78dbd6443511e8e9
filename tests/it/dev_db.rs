//! `cargo xtask dev-db`: snapshots of the dev database and media, on PostgreSQL 13, 15 and
//! 17, with the dev role an ordinary owner with CREATEDB (not a superuser), as seed-dev
//! leaves it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use crate::harness::{marker, run, sha256_hex, tree, xtask, Pg, Run};

struct DevEnv {
    pg: Pg,
    password: String,
    media: PathBuf,
    _dir: tempfile::TempDir,
}

impl DevEnv {
    /// A server with a `dev` role (LOGIN CREATEDB) and a dev database seeded by it.
    fn start(major: u32) -> DevEnv {
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

    fn url(&self, db: &str) -> String {
        format!(
            "postgres://dev:{}@127.0.0.1:{}/{db}",
            self.password, self.pg.port
        )
    }

    /// `cargo xtask` with this dev database and media configured as a developer has them.
    fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = xtask(args);
        cmd.env("NETPOINT_DATABASE_URL", self.url("netpoint"))
            .env("NETPOINT_MEDIA_ROOT", &self.media);
        cmd
    }

    /// psql as the dev role.
    fn dev_psql(&self, sql: &str) -> String {
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
    fn state(&self) -> (String, String, Vec<(String, String)>) {
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

    fn snapshots(&self) -> Vec<String> {
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
        "is a snapshot of `cargo xtask dev-db`",
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
        "is a snapshot of `cargo xtask dev-db`",
    );
    run(env.xtask(&["seed-dev", "--yes"])).ok();
    assert_eq!(env.snapshots(), vec![snapshot]);
    assert_eq!(env.state(), before);
    assert!(run(env.xtask(&["dev-db", "list"]))
        .ok()
        .stdout
        .contains("one "));
}
