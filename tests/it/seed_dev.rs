//! `cargo xtask seed-dev`: seeding from the committed fixtures, `--refresh` (deterministic,
//! `--check`, atomic), and the embedded Docker dev database.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::harness::{
    copy_tree, fixtures, marker, run, sha256_hex, tree, workspace_root, xtask, Pg, Run,
};

const CHANGELOG_TABLE: &str = "public.extras_objectchange";

// ---------------------------------------------------------------------------------------
// expectations derived from the committed fixtures
// ---------------------------------------------------------------------------------------

/// `table → rows` from the `COPY ... FROM stdin;` blocks of a plain dump.
fn copy_row_counts(sql: &Path) -> BTreeMap<String, i64> {
    let text = fs::read_to_string(sql).unwrap();
    let mut counts = BTreeMap::new();
    let mut current: Option<(String, i64)> = None;
    for line in text.lines() {
        match current.as_mut() {
            Some(_) if line == "\\." => {
                let (table, rows) = current.take().unwrap();
                counts.insert(table, rows);
            }
            Some((_, rows)) => *rows += 1,
            None => {
                if let Some(rest) = line
                    .strip_prefix("COPY ")
                    .filter(|_| line.ends_with(" FROM stdin;"))
                {
                    current = Some((rest.split(" (").next().unwrap().to_string(), 0));
                }
            }
        }
    }
    assert!(
        current.is_none(),
        "unterminated COPY block in {}",
        sql.display()
    );
    counts
}

fn fixture_row_counts() -> BTreeMap<String, i64> {
    let counts = copy_row_counts(&fixtures().join("netpoint.sql"));
    assert!(
        counts.len() > 10 && counts.values().sum::<i64>() > 100,
        "fixture looks empty: {counts:?}"
    );
    counts
}

/// `relative path → sha256` as listed in a `sha256sum` file.
fn parse_sums(file: &Path) -> BTreeMap<String, String> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (hash, name) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line in {}: {line}", file.display()));
            (name.to_string(), hash.to_string())
        })
        .collect()
}

fn fixture_media_sums() -> BTreeMap<String, String> {
    let sums = parse_sums(&fixtures().join("media.sha256"));
    assert!(!sums.is_empty(), "fixtures/media.sha256 lists no files");
    sums
}

/// `relative path → sha256` of every file below `root`, hashed here.
fn hash_tree(root: &Path) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .map(|(rel, bytes)| (rel, sha256_hex(&bytes)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Names in `dir`, sorted (to spot staging or backup leftovers).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_trees_equal(actual: &Path, expected: &Path) {
    // The scrub-coverage file is written by hand: a refresh keeps it but never makes it.
    let made = |dir: &Path| {
        let mut files = tree(dir);
        files.retain(|(name, _)| name != "scrub-coverage.toml");
        files
    };
    let (a, e) = (made(actual), made(expected));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&e),
        "file lists differ: {} vs {}",
        actual.display(),
        expected.display()
    );
    for ((name, a), (_, e)) in a.iter().zip(&e) {
        assert!(
            a == e,
            "{name} differs between {} and {}",
            actual.display(),
            expected.display()
        );
    }
}

#[track_caller]
fn assert_no_leak(run: &Run, secret: &str) {
    assert!(!secret.is_empty());
    assert!(
        !run.output().contains(secret),
        "the password appears in the output:\n{}",
        run.output()
    );
}

/// Asserts that `db` holds exactly the fixture's rows, and the (empty) changelog table.
#[track_caller]
fn assert_fixture_rows(actual: &[(String, i64)]) {
    let expected = fixture_row_counts();
    let actual: BTreeMap<String, i64> = actual.iter().cloned().collect();
    for (table, rows) in &expected {
        assert_eq!(actual.get(table), Some(rows), "rows of {table}");
    }
    assert_eq!(
        actual.get(CHANGELOG_TABLE),
        Some(&0),
        "changelog table {CHANGELOG_TABLE} must exist, without data"
    );
    for (table, rows) in &actual {
        assert!(
            expected.contains_key(table) || *rows == 0,
            "{table} has {rows} rows the fixture does not have"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. seeding
// ---------------------------------------------------------------------------------------

#[test]
fn seeds_a_fresh_database_and_reseeds_only_with_yes() {
    let pg = Pg::start(15);
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let url = pg.url("netpoint");
    assert!(!pg.has_db("netpoint"));

    let first = run(xtask(&[
        "seed-dev",
        "--target",
        &url,
        "--target-media",
        s(&media),
    ]))
    .ok();
    assert_no_leak(&first, &pg.password);
    assert!(
        first.stdout.contains(&format!(
            "NETPOINT_DATABASE_URL=postgres://postgres:***@127.0.0.1:{}/netpoint",
            pg.port
        )),
        "{}",
        first.output()
    );
    assert!(
        first
            .stdout
            .contains(&format!("NETPOINT_MEDIA_ROOT={}", media.display())),
        "{}",
        first.output()
    );
    assert_fixture_rows(&pg.row_counts("netpoint"));
    assert_eq!(
        hash_tree(&media),
        fixture_media_sums(),
        "seeded media differ from fixtures/media.sha256"
    );

    // Local changes a second seed must not touch without --yes.
    pg.psql("netpoint", "update public.dcim_site set name = 'local edit' where id = (select min(id) from public.dcim_site)");
    fs::write(media.join("local-upload.png"), b"local").unwrap();
    let before = pg.fingerprint("netpoint");

    run(xtask(&[
        "seed-dev",
        "--target",
        &url,
        "--target-media",
        s(&media),
    ]))
    .fails_with("pass --yes");
    pg.assert_unchanged("netpoint", &before, "a seed without --yes");
    assert_eq!(
        pg.psql(
            "netpoint",
            "select count(*) from public.dcim_site where name = 'local edit'"
        ),
        "1"
    );
    assert!(
        media.join("local-upload.png").exists(),
        "refused seed changed the media"
    );
    assert_eq!(
        entries(tmp.path()),
        ["media"],
        "refused seed left files beside the media"
    );

    let second = run(xtask(&[
        "seed-dev",
        "--target",
        &url,
        "--target-media",
        s(&media),
        "--yes",
    ]))
    .ok();
    assert_no_leak(&second, &pg.password);
    assert_fixture_rows(&pg.row_counts("netpoint"));
    assert_eq!(
        pg.psql(
            "netpoint",
            "select count(*) from public.dcim_site where name = 'local edit'"
        ),
        "0"
    );
    assert_eq!(
        hash_tree(&media),
        fixture_media_sums(),
        "reseeded media differ from fixtures/media.sha256"
    );
    assert_eq!(
        entries(tmp.path()),
        ["media"],
        "staging or backup media left behind"
    );
    let leftovers = pg.psql(
        "postgres",
        "select datname from pg_database where datname like 'netpoint\\_\\_np%'",
    );
    assert!(
        leftovers.is_empty(),
        "temporary databases left behind: {leftovers}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. refresh determinism
// ---------------------------------------------------------------------------------------

/// `id`s of a table in physical (ctid) order.
fn physical_order(pg: &Pg, db: &str, table: &str) -> String {
    pg.psql(
        db,
        &format!("select string_agg(id::text, ',' order by ctid) from {table}"),
    )
}

#[test]
fn refresh_is_deterministic_and_reproduces_the_committed_fixtures() {
    let pg = Pg::start(15);
    let tmp = tempfile::tempdir().unwrap();

    // The same database refreshed twice into a copy of the fixtures: identical bytes, and
    // identical to the committed fixtures it was loaded from.
    pg.load_fixture("loaded");
    let copy = tmp.path().join("copy");
    copy_tree(&fixtures(), &copy);
    let refresh = |source: &str, dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "seed-dev",
            "--refresh",
            "--source",
            source,
            "--fixtures",
            s(dir),
        ];
        args.extend_from_slice(extra);
        let done = run(xtask(&args)).ok();
        assert_no_leak(&done, &pg.password);
    };
    refresh(&pg.url("loaded"), &copy, &[]);
    let once = tree(&copy);
    refresh(&pg.url("loaded"), &copy, &[]);
    assert!(
        tree(&copy) == once,
        "a second refresh of the same database changed the fixtures"
    );
    assert_trees_equal(&copy, &fixtures());

    // Physical row order does not matter: rows moved by UPDATE and CLUSTER dump the same.
    let before = (
        physical_order(&pg, "loaded", "public.dcim_interface"),
        physical_order(&pg, "loaded", "public.dcim_device"),
    );
    pg.psql(
        "loaded",
        "update public.dcim_interface set name = name where id % 2 = 0",
    );
    pg.psql(
        "loaded",
        "cluster public.dcim_device using dcim_device_name_a77119e5",
    );
    pg.psql(
        "loaded",
        "alter table public.dcim_device set without cluster",
    );
    let after = (
        physical_order(&pg, "loaded", "public.dcim_interface"),
        physical_order(&pg, "loaded", "public.dcim_device"),
    );
    assert_ne!(
        before.0, after.0,
        "the UPDATE did not change the physical order of dcim_interface"
    );
    assert_ne!(
        before.1, after.1,
        "CLUSTER did not change the physical order of dcim_device"
    );
    refresh(&pg.url("loaded"), &copy, &[]);
    assert_trees_equal(&copy, &fixtures());

    // Round trip: seed the fixtures with the tool, refresh from that database into a new
    // directory: every committed file comes back byte for byte.
    let media = tmp.path().join("seeded-media");
    run(xtask(&[
        "seed-dev",
        "--target",
        &pg.url("seeded"),
        "--target-media",
        s(&media),
    ]))
    .ok();
    let fresh = tmp.path().join("fresh");
    refresh(&pg.url("seeded"), &fresh, &["--source-media", s(&media)]);
    assert_trees_equal(&fresh, &fixtures());
    for name in [
        "netpoint.sql",
        "media.sha256",
        "SHA256SUMS",
        "manifest.json",
        "schema.sql",
        "media",
    ] {
        assert!(fresh.join(name).exists(), "refresh did not write {name}");
    }

    // The realistic source the fixtures are made from (changelog included) gives them too.
    let source_sql = tmp.path().join("netpoint-source.sql");
    let status = Command::new("python3")
        .arg(workspace_root().join("scripts/gen_fixture_data.py"))
        .arg(&source_sql)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/gen_fixture_data.py failed");
    let source_rows = copy_row_counts(&source_sql);
    assert!(
        source_rows.get(CHANGELOG_TABLE).copied().unwrap_or(0) > 0,
        "the source has no changelog rows to leave out"
    );
    pg.create_db("source");
    pg.psql_file("source", &source_sql);
    let generated = tmp.path().join("generated");
    refresh(
        &pg.url("source"),
        &generated,
        &["--source-media", s(&fixtures().join("media"))],
    );
    assert_trees_equal(&generated, &fixtures());
    assert!(!fs::read_to_string(generated.join("netpoint.sql"))
        .unwrap()
        .contains("COPY public.extras_objectchange"));

    let mut names = entries(tmp.path());
    names.retain(|n| n.starts_with('.'));
    assert!(names.is_empty(), "staging leftovers: {names:?}");
}

// ---------------------------------------------------------------------------------------
// 3. --refresh --check
// ---------------------------------------------------------------------------------------

#[test]
fn refresh_check_names_changed_tables_and_media_and_writes_nothing() {
    let pg = Pg::start(15);
    let tmp = tempfile::tempdir().unwrap();
    pg.load_fixture("source");
    let url = pg.url("source");
    let fx = tmp.path().join("fx");
    copy_tree(&fixtures(), &fx);
    let source_media = tmp.path().join("source-media");
    copy_tree(&fixtures().join("media"), &source_media);
    let committed = tree(&fixtures());
    let check = |extra: &[&str]| {
        let mut args = vec![
            "seed-dev",
            "--refresh",
            "--check",
            "--source",
            &url,
            "--fixtures",
            s(&fx),
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };

    for extra in [&[][..], &["--source-media", s(&source_media)][..]] {
        let current = check(extra).ok();
        assert!(
            current.stdout.contains("up to date"),
            "{}",
            current.output()
        );
        assert_no_leak(&current, &pg.password);
    }
    assert!(tree(&fx) == committed, "--check changed the fixtures");

    pg.psql("source", "update public.dcim_site set name = name || ' (renamed)' where id = (select min(id) from public.dcim_site)");
    pg.psql("source", "insert into public.extras_tag (id, name, slug, color, description) values (9001, 'check-test', 'check-test', 'ff0000', '')");
    let sums = fixture_media_sums();
    let removed = sums.keys().next().unwrap().clone();
    fs::remove_file(source_media.join(&removed)).unwrap();
    let added = "image-attachments/new upload.png";
    fs::write(source_media.join(added), b"new image").unwrap();

    let stale = check(&["--source-media", s(&source_media)]).fails_with("out of date");
    assert_no_leak(&stale, &pg.password);
    for expected in [
        "table public.dcim_site: rows changed (+1 -1)".to_string(),
        "table public.extras_tag: rows changed (+1 -0)".to_string(),
        format!("media {added}: added"),
        format!("media {removed}: removed"),
    ] {
        assert!(
            stale.stdout.contains(&expected),
            "`{expected}` missing from the summary:\n{}",
            stale.output()
        );
    }
    for unchanged in ["dcim_device", "dcim_interface", "schema.sql"] {
        assert!(
            !stale.stdout.contains(unchanged),
            "{unchanged} reported as changed:\n{}",
            stale.output()
        );
    }
    assert!(
        tree(&fx) == committed,
        "a failing --check changed the fixtures"
    );
    assert_eq!(
        entries(tmp.path()),
        ["fx", "source-media"],
        "--check left files beside the fixtures"
    );

    // Database changes alone are caught too (the fixtures' own media are compared then).
    check(&[]).fails_with("out of date");
    assert!(tree(&fx) == committed);
}

// ---------------------------------------------------------------------------------------
// 4. failed refresh
// ---------------------------------------------------------------------------------------

#[test]
fn failed_refresh_leaves_the_fixtures_untouched() {
    let pg = Pg::start(15);
    let tmp = tempfile::tempdir().unwrap();
    pg.load_fixture("source");
    let fx = tmp.path().join("fx");
    copy_tree(&fixtures(), &fx);
    let committed = tree(&fixtures());
    // A stale staging directory of a killed run (no such process) is cleaned up too.
    let stale = tmp.path().join(".fx.staging-999999999");
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("netpoint.sql"), "half written").unwrap();

    let refresh = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "seed-dev",
            "--refresh",
            "--source",
            url,
            "--fixtures",
            s(&fx),
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    #[track_caller]
    fn assert_untouched(fx: &Path, committed: &[(String, Vec<u8>)]) {
        assert!(
            tree(fx) == committed,
            "a failed refresh changed {}",
            fx.display()
        );
    }

    // The source database does not exist.
    let missing = refresh(&pg.url("no_such_db"), &[]).fails_with("does not exist");
    assert_no_leak(&missing, &pg.password);
    assert_untouched(&fx, &committed);

    // pg_dump fails mid-way: a role that may connect but not read one table.
    let reader_pw = marker("reader");
    pg.psql(
        "postgres",
        &format!("create role reader login password '{reader_pw}'"),
    );
    pg.psql("source", "grant usage on schema public to reader; grant select on all tables in schema public to reader; grant select on all sequences in schema public to reader; revoke select on public.users_token from reader");
    let reader_url = format!("postgres://reader:{reader_pw}@127.0.0.1:{}/source", pg.port);
    let denied = refresh(&reader_url, &[]).fails_with("pg_dump failed");
    assert!(
        denied.stderr.contains("permission denied"),
        "{}",
        denied.output()
    );
    assert_no_leak(&denied, &reader_pw);
    assert_untouched(&fx, &committed);

    // The dump succeeds but the media cannot be read.
    let no_media = tmp.path().join("no-such-media");
    refresh(&pg.url("source"), &["--source-media", s(&no_media)]).fails_with("not found");
    assert_untouched(&fx, &committed);

    assert_eq!(
        entries(tmp.path()),
        ["fx"],
        "staging directories left behind"
    );
    // And a working refresh after all this still gives the committed bytes.
    run(xtask(&[
        "seed-dev",
        "--refresh",
        "--source",
        &pg.url("source"),
        "--fixtures",
        s(&fx),
    ]))
    .ok();
    assert_untouched(&fx, &committed);
    assert_eq!(entries(tmp.path()), ["fx"]);
}

// ---------------------------------------------------------------------------------------
// 5. the embedded Docker dev database
// ---------------------------------------------------------------------------------------

/// Removes the dev container, its volume and its passfile, however the test ends.
struct DevContainerGuard {
    name: String,
    passfile: PathBuf,
}

impl Drop for DevContainerGuard {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("docker")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["rm", "--force", "--volumes", &self.name]);
        quiet(&["volume", "rm", "--force", &format!("{}-data", self.name)]);
        let _ = fs::remove_file(&self.passfile);
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running docker");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// The `NETPOINT_DATABASE_URL` a seed-dev run printed.
fn database_url(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("NETPOINT_DATABASE_URL="))
        .unwrap_or_else(|| panic!("no URL line:\n{}", run.output()))
        .to_string()
}

fn container_field(name: &str, format: &str) -> String {
    let (ok, out) = docker(&["container", "inspect", "--format", format, name]);
    assert!(ok, "container {name} not found");
    out
}

/// psql with only the URL (and its passfile) to go on.
fn psql_url(url: &str, sql: &str) -> String {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        url,
        "-c",
        sql,
    ])
    .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("running psql");
    assert!(
        out.status.success(),
        "psql {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

fn row_counts_url(url: &str) -> Vec<(String, i64)> {
    let tables = psql_url(url, "select schemaname || '.' || tablename from pg_tables where schemaname not in ('pg_catalog', 'information_schema') order by 1");
    tables
        .lines()
        .map(|t| {
            (
                t.to_string(),
                psql_url(url, &format!("select count(*) from {t}"))
                    .parse()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn embedded_docker_database_starts_reuses_stops_and_is_destroyed() {
    let name = marker("np-it-devdb").to_lowercase();
    let volume = format!("{name}-data");
    let passfile = workspace_root()
        .join(".netpoint")
        .join(format!("{name}.pgpass"));
    let _guard = DevContainerGuard {
        name: name.clone(),
        passfile: passfile.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let seed = |extra: &[&str]| {
        let mut args = vec!["seed-dev"];
        args.extend_from_slice(extra);
        let mut cmd = xtask(&args);
        cmd.env("NETPOINT_DEV_DB_CONTAINER", &name);
        run(cmd)
    };
    let seed_args = ["--target-media", s(&media), "--yes"];

    let first = seed(&seed_args).ok();
    let url = database_url(&first);
    let url_line = format!("NETPOINT_DATABASE_URL={url}");
    let prefix = "postgres://netpoint@127.0.0.1:";
    assert!(url.starts_with(prefix), "{url}");
    let port: u16 = url[prefix.len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no port in {url}"));
    assert_eq!(
        url,
        format!("{prefix}{port}/netpoint?passfile={}", passfile.display())
    );
    assert_eq!(
        docker(&["port", &name, "5432/tcp"])
            .1
            .lines()
            .next()
            .unwrap(),
        format!("127.0.0.1:{port}")
    );

    let mode = fs::metadata(&passfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o600,
        "passfile {} has mode {mode:o}",
        passfile.display()
    );
    let pass_line = fs::read_to_string(&passfile).unwrap();
    let password = pass_line
        .trim_end()
        .splitn(5, ':')
        .nth(4)
        .unwrap()
        .to_string();
    assert!(password.len() >= 16, "weak password in the passfile");
    assert_no_leak(&first, &password);

    assert_fixture_rows(&row_counts_url(&url));
    assert_eq!(hash_tree(&media), fixture_media_sums());
    let id = container_field(&name, "{{.Id}}");
    assert_eq!(container_field(&name, "{{.State.Status}}"), "running");
    assert_eq!(
        docker(&["volume", "inspect", "--format", "{{.Name}}", &volume]),
        (true, volume.clone())
    );

    // A second run reuses the running container.
    let second = seed(&seed_args).ok();
    assert_no_leak(&second, &password);
    assert!(second.stdout.contains(&url_line), "{}", second.output());
    assert_eq!(
        container_field(&name, "{{.Id}}"),
        id,
        "a second run replaced the container"
    );
    assert_fixture_rows(&row_counts_url(&url));

    // Data outside the seeded database lives in the volume and survives stop/start.
    psql_url(&url, "create database keep_me");
    let stopped = seed(&["--stop"]).ok();
    assert_no_leak(&stopped, &password);
    assert_eq!(container_field(&name, "{{.State.Status}}"), "exited");
    let restarted = seed(&seed_args).ok();
    assert_no_leak(&restarted, &password);
    assert_eq!(
        container_field(&name, "{{.Id}}"),
        id,
        "the stopped container was not reused"
    );
    assert_eq!(container_field(&name, "{{.State.Status}}"), "running");
    let restart_url = database_url(&restarted);
    assert_fixture_rows(&row_counts_url(&restart_url));
    assert_eq!(
        psql_url(
            &restart_url,
            "select count(*) from pg_database where datname = 'keep_me'"
        ),
        "1",
        "data did not survive stop/start"
    );

    // A container removed by hand: the next run starts a new one on the same volume with the
    // password this checkout's passfile kept, and the data is still there.
    assert!(docker(&["rm", "--force", &name]).0);
    let recreated = seed(&seed_args).ok();
    assert_no_leak(&recreated, &password);
    assert_ne!(container_field(&name, "{{.Id}}"), id);
    let recreated_url = database_url(&recreated);
    assert_eq!(
        psql_url(
            &recreated_url,
            "select count(*) from pg_database where datname = 'keep_me'"
        ),
        "1",
        "the volume's data was not reused"
    );

    // Without the passfile nobody knows that password: seed-dev says what to do, and starts
    // nothing.
    assert!(docker(&["rm", "--force", &name]).0);
    fs::remove_file(&passfile).unwrap();
    seed(&seed_args).fails_with("run `cargo xtask seed-dev --destroy --yes`");
    assert!(
        !docker(&["container", "inspect", &name]).0,
        "a container was started on a volume whose password is unknown"
    );
    assert!(
        docker(&["volume", "inspect", &volume]).0,
        "the volume was removed"
    );

    // A container started by hand on that volume with another password fails at once, with
    // the same way out, rather than after the 90 s start-up wait.
    let other = marker("other");
    let started = Command::new("docker")
        .args([
            "run",
            "--detach",
            "--name",
            &name,
            "--label",
            "netpoint.dev-db=1",
        ])
        .args(["--volume", &format!("{volume}:/var/lib/postgresql/data")])
        .args([
            "--env",
            "POSTGRES_USER=netpoint",
            "--env",
            "POSTGRES_PASSWORD",
        ])
        .args(["--publish", "127.0.0.1::5432", "postgres:15"])
        .env("POSTGRES_PASSWORD", &other)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success());
    let id = container_field(&name, "{{.Id}}");
    let clock = std::time::Instant::now();
    let mismatch = seed(&seed_args).fails_with("run `cargo xtask seed-dev --destroy --yes`");
    assert!(
        mismatch.stderr.contains("does not take its own password"),
        "{}",
        mismatch.output()
    );
    assert_no_leak(&mismatch, &other);
    assert!(
        clock.elapsed() < std::time::Duration::from_secs(45),
        "took {:?}",
        clock.elapsed()
    );

    // Destroying needs --yes when nobody can be asked.
    seed(&["--destroy"]).fails_with("pass --yes");
    assert_eq!(container_field(&name, "{{.Id}}"), id);
    let destroyed = seed(&["--destroy", "--yes"]).ok();
    assert_no_leak(&destroyed, &password);
    assert!(
        !docker(&["container", "inspect", &name]).0,
        "container {name} still exists"
    );
    assert!(
        !docker(&["volume", "inspect", &volume]).0,
        "volume {volume} still exists"
    );
    assert!(!passfile.exists(), "passfile left behind");
}

// ---------------------------------------------------------------------------------------
// 6. no Docker and no URL
// ---------------------------------------------------------------------------------------

#[test]
fn without_docker_or_url_the_error_names_both_ways_out() {
    let name = marker("np-it-nodocker").to_lowercase();
    let passfile = workspace_root()
        .join(".netpoint")
        .join(format!("{name}.pgpass"));
    let _guard = DevContainerGuard {
        name: name.clone(),
        passfile: passfile.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let mut cmd = xtask(&["seed-dev", "--target-media", s(&media), "--yes"]);
    cmd.env("DOCKER_HOST", "unix:///nonexistent.sock")
        .env("NETPOINT_DEV_DB_CONTAINER", &name);
    let failed = run(cmd).fails_with("NETPOINT_DATABASE_URL");
    let error = failed
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    for expected in ["--target", "Docker"] {
        assert!(
            error.contains(expected),
            "`{expected}` missing from: {error}"
        );
    }
    assert!(
        failed.stdout.is_empty(),
        "printed something on stdout: {}",
        failed.stdout
    );
    assert!(!media.exists(), "media written without a database");
    assert!(!passfile.exists(), "passfile written without a container");
}

// ---------------------------------------------------------------------------------------
// the scheduled refresh
// ---------------------------------------------------------------------------------------

#[test]
fn refresh_workflow_is_present() {
    let workflow = workspace_root().join(".github/workflows/refresh-fixtures.yml");
    let text =
        fs::read_to_string(&workflow).unwrap_or_else(|err| panic!("{}: {err}", workflow.display()));
    // The regeneration reads the staging URL from NETPOINT_DATABASE_URL, not an argument.
    for expected in [
        "seed-dev --refresh --check",
        "run: cargo xtask seed-dev --refresh\n",
    ] {
        assert!(
            text.contains(expected),
            "{} does not run `{expected}`",
            workflow.display()
        );
    }
}
