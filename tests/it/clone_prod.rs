//! `cargo xtask clone-prod`: direct clones, bundles (export/import), the guards that refuse
//! before anything changes, atomicity when a restore fails or is killed, media trees, and
//! passwords that never leak.
//!
//! Every test starts its own "production" and "dev" servers (two containers).

use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::harness::{
    contains_anywhere, copy_tree, fixtures, leftovers, marker, run, sha256_file, tree, xtask, Pg,
    Run,
};

const CHANGELOG: &str = "public.extras_objectchange";

/// A production server and a dev server, each in its own container, started side by side.
fn servers(password: Option<&str>) -> (Pg, Pg) {
    let start = || match password {
        Some(password) => Pg::start_with_password(15, password),
        None => Pg::start(15),
    };
    thread::scope(|scope| {
        let prod = scope.spawn(start);
        let dev = start();
        (prod.join().expect("starting the production server"), dev)
    })
}

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `pg.url(db)` spelled with `localhost` instead of `127.0.0.1`.
fn localhost_url(pg: &Pg, db: &str) -> String {
    let url = pg.url(db);
    assert!(url.contains("@127.0.0.1:"), "{url}");
    url.replace("@127.0.0.1:", "@localhost:")
}

/// Tables a default clone leaves empty: the changelog (unless --with-changelog), and the
/// sessions that the built-in scrub preset deletes (xtask/src/pipeline/scrub/preset.toml).
const SESSIONS: &str = "public.django_session";

/// The row counts a default clone of a database with `source` counts must have.
fn expected_clone(source: &[(String, i64)], with_changelog: bool) -> Vec<(String, i64)> {
    source
        .iter()
        .map(|(t, n)| {
            let emptied = t == SESSIONS || (t == CHANGELOG && !with_changelog);
            (t.clone(), if emptied { 0 } else { *n })
        })
        .collect()
}

fn count_of(counts: &[(String, i64)], table: &str) -> i64 {
    counts
        .iter()
        .find(|(t, _)| t == table)
        .unwrap_or_else(|| panic!("no table {table} in {counts:?}"))
        .1
}

/// A dev database as a developer would have it: the fixture plus a table only it has.
fn seed_dev_db(pg: &Pg, db: &str) {
    pg.load_fixture(db);
    pg.psql(db, "create table public.dev_only (note text); insert into public.dev_only values ('my local work')");
}

/// A dev media directory with a file only it has.
fn seed_dev_media(dir: &Path) {
    fs::create_dir_all(dir.join("local")).unwrap();
    fs::write(dir.join("local/dev-only.txt"), b"my local upload").unwrap();
}

/// A media tree with the awkward cases: the committed fixtures (nested, a name with a space)
/// plus deep nesting, non-ASCII names, an empty file, an empty directory and a 20 MB file.
fn rich_media(root: &Path) {
    copy_tree(&fixtures().join("media"), root);
    let files: &[(&str, &[u8])] = &[
        ("a/b/c/d/e/deep.txt", b"deep"),
        ("with space/another name with spaces.txt", b"spaces"),
        ("Ünïcødé/日本語 ファイル.png", b"\x89PNG not really"),
        ("café/naïve résumé.txt", b"accents"),
        ("empty.bin", b""),
    ];
    for (rel, bytes) in files {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }
    fs::create_dir_all(root.join("empty dir")).unwrap();
    // 20 MB of incompressible, deterministic bytes (xorshift).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut big = Vec::with_capacity(20 << 20);
    while big.len() < 20 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        big.extend_from_slice(&state.to_le_bytes());
    }
    fs::create_dir_all(root.join("large")).unwrap();
    fs::write(root.join("large/twenty-mb.bin"), &big).unwrap();
}

/// Rewrites the `SHA256SUMS` line of `file` after a deliberate change, as an attacker or a
/// careless hand would, so that only the deeper checks can catch the change.
pub(crate) fn rewrite_sums(bundle: &Path, file: &str) {
    let path = bundle.join("SHA256SUMS");
    let hash = sha256_file(&bundle.join(file));
    let mut found = false;
    let text: String = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| match line.split_once("  ") {
            Some((_, name)) if name == file => {
                found = true;
                format!("{hash}  {file}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(found, "{file} not listed in SHA256SUMS");
    fs::write(path, text).unwrap();
}

/// Runs the real `sha256sum -c --strict LIST` in `dir`; returns its stdout.
#[track_caller]
fn sha256sum_check(dir: &Path, list: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg("--strict")
        .arg(list)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sha256sum -c {} in {} failed:\n{stdout}{}",
        list.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `xtask schema-snapshot` of `url` written to `out`, returned as bytes.
fn schema_snapshot(url: &str, out: &Path) -> Vec<u8> {
    run(xtask(&[
        "schema-snapshot",
        "--source",
        url,
        "--output",
        s(out),
    ]))
    .ok();
    fs::read(out).unwrap()
}

/// Asserts two schema snapshots are byte for byte the same, showing the differing lines if not.
#[track_caller]
fn assert_same_schema(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
        let only_a: Vec<&str> = a.lines().filter(|l| !b.lines().any(|m| m == *l)).collect();
        let only_b: Vec<&str> = b.lines().filter(|l| !a.lines().any(|m| m == *l)).collect();
        panic!(
            "{what}: schema snapshots differ\n- {}\n+ {}",
            only_a.join("\n- "),
            only_b.join("\n+ ")
        );
    }
}

/// Runs a command that must finish within `limit`; kills it and fails the test otherwise.
fn run_within(mut cmd: Command, limit: Duration) -> (Run, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command still running after {limit:?}: {cmd:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, elapsed)
}

/// Waits until no session is connected to a database whose name contains `needle`.
fn wait_no_sessions(pg: &Pg, needle: &str, limit: Duration) {
    let start = Instant::now();
    let sql = format!(
        "select count(*) from pg_stat_activity where datname like '%{needle}%' and pid <> pg_backend_pid()"
    );
    while pg.psql("postgres", &sql) != "0" {
        assert!(
            start.elapsed() < limit,
            "sessions on `{needle}` databases still open after {limit:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn direct_clone_copies_database_schema_and_media_and_leaves_the_changelog_out() {
    let (prod, dev) = servers(None);
    prod.load_prod("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let prod_media = dir.path().join("prod-media");
    rich_media(&prod_media);
    let dev_media = dir.path().join("dev-media");
    seed_dev_media(&dev_media);

    // Into a server without the database yet; the dev media directory, which has files, is
    // replaced (confirmed with --yes).
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&prod_media),
        "--target-media",
        s(&dev_media),
        "--yes",
    ]))
    .ok();

    let source_counts = prod.row_counts_fast("netpoint");
    let source_before = prod.fingerprint("netpoint");
    assert_eq!(
        source_counts,
        prod.row_counts("netpoint"),
        "row_counts_fast agrees with row_counts"
    );
    assert!(
        count_of(&source_counts, CHANGELOG) >= 400,
        "production has a changelog: {source_counts:?}"
    );
    assert!(
        count_of(&source_counts, "public.dcim_site") > 0,
        "{source_counts:?}"
    );
    let target_counts = dev.row_counts_fast("netpoint");
    assert_eq!(
        target_counts,
        expected_clone(&source_counts, false),
        "every table but the changelog (and scrubbed sessions), row for row"
    );
    assert_eq!(count_of(&target_counts, CHANGELOG), 0);

    let source_schema =
        schema_snapshot(&prod.url("netpoint"), &dir.path().join("source-schema.sql"));
    let target_schema =
        schema_snapshot(&dev.url("netpoint"), &dir.path().join("target-schema.sql"));
    assert!(
        String::from_utf8_lossy(&source_schema).contains("CREATE TABLE public.extras_objectchange")
    );
    assert_same_schema(&source_schema, &target_schema, "source and target");

    let source_tree = tree(&prod_media);
    assert!(source_tree
        .iter()
        .any(|(rel, bytes)| rel == "large/twenty-mb.bin" && bytes.len() == 20 << 20));
    assert_eq!(
        tree(&dev_media),
        source_tree,
        "media copied file by file (and the dev-only file gone)"
    );
    assert!(
        dev_media.join("empty dir").is_dir(),
        "empty directories are kept"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // --with-changelog, replacing the clone made above (it has tables: --yes).
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--with-changelog",
        "--yes",
    ]))
    .ok();
    assert_eq!(
        dev.row_counts_fast("netpoint"),
        expected_clone(&source_counts, true),
        "the changelog rows are kept"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    prod.assert_unchanged("netpoint", &source_before, "the source is only read");
}

#[test]
fn export_then_import_matches_the_manual_path_with_standard_tools() {
    let (prod, dev) = servers(None);
    prod.load_prod("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let prod_media = dir.path().join("prod-media");
    rich_media(&prod_media);
    let bundle = dir.path().join("bundle");

    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--out",
        s(&bundle),
        "--source-media",
        s(&prod_media),
    ]))
    .ok();

    let mut files: Vec<String> = fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "SHA256SUMS",
            "manifest.json",
            "media.sha256",
            "netpoint.sql",
            "netpoint_media.tar.gz"
        ]
    );
    let checked = sha256sum_check(&bundle, Path::new("SHA256SUMS"));
    assert_eq!(
        checked.lines().filter(|l| l.ends_with(": OK")).count(),
        4,
        "{checked}"
    );

    // Through the tool, into a third database.
    let tool_media = dir.path().join("tool-media");
    run(xtask(&[
        "clone-prod",
        "--bundle",
        s(&bundle),
        "--trust-unsigned",
        "--target",
        &dev.url("netpoint_tool"),
        "--target-media",
        s(&tool_media),
    ]))
    .ok();

    // By hand: a role that may create databases but is no superuser, psql and tar.
    dev.psql(
        "postgres",
        "create role loader login createdb password 'loader-pw'",
    );
    assert_eq!(
        dev.psql(
            "postgres",
            "select rolsuper::text || rolcreatedb::text from pg_roles where rolname = 'loader'"
        ),
        "falsetrue"
    );
    let as_loader = |db: &str| {
        let mut cmd = dev.psql_cmd(db);
        cmd.env("PGUSER", "loader").env("PGPASSWORD", "loader-pw");
        cmd
    };
    let out = as_loader("postgres")
        .args(["-c", "create database netpoint_manual"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_loader("netpoint_manual")
        .arg("-f")
        .arg(bundle.join("netpoint.sql"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql -v ON_ERROR_STOP=1 -f netpoint.sql as a non-superuser:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dev.psql(
            "postgres",
            "select pg_get_userbyid(datdba) from pg_database where datname = 'netpoint_manual'"
        ),
        "loader"
    );

    let manual = dir.path().join("manual");
    fs::create_dir(&manual).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(bundle.join("netpoint_media.tar.gz"))
        .current_dir(&manual)
        .status()
        .unwrap();
    assert!(status.success(), "tar -xf netpoint_media.tar.gz");
    let top: Vec<String> = fs::read_dir(&manual)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["netpoint"], "the archive holds netpoint/media/ only");
    let manual_media = manual.join("netpoint/media");
    let checked = sha256sum_check(&manual_media, &bundle.join("media.sha256"));
    let source_tree = tree(&prod_media);
    assert_eq!(
        checked.lines().filter(|l| l.ends_with(": OK")).count(),
        source_tree.len(),
        "{checked}"
    );

    // Same rows, same schema, same files either way, and the same as production.
    let expected_counts = expected_clone(&prod.row_counts_fast("netpoint"), false);
    assert_eq!(dev.row_counts_fast("netpoint_tool"), expected_counts);
    assert_eq!(dev.row_counts_fast("netpoint_manual"), expected_counts);
    let tool_schema = schema_snapshot(&dev.url("netpoint_tool"), &dir.path().join("tool.sql"));
    let manual_schema =
        schema_snapshot(&dev.url("netpoint_manual"), &dir.path().join("manual.sql"));
    let prod_schema = schema_snapshot(&prod.url("netpoint"), &dir.path().join("prod.sql"));
    assert_same_schema(&prod_schema, &tool_schema, "production and the import");
    assert_same_schema(
        &tool_schema,
        &manual_schema,
        "the import and the manual restore",
    );
    assert_eq!(tree(&tool_media), source_tree);
    assert_eq!(tree(&manual_media), source_tree);
    assert!(tool_media.join("empty dir").is_dir() && manual_media.join("empty dir").is_dir());

    // The tool as that role, twice: the second load replaces the first, and the checkpoint
    // it asks for once the data is in (superuser or pg_checkpoint only) is refused quietly.
    let as_loader = format!("postgres://loader@127.0.0.1:{}/netpoint_loader", dev.port);
    for round in ["creates", "replaces"] {
        let mut cmd = xtask(&[
            "--jobs",
            "2",
            "clone-prod",
            "--bundle",
            s(&bundle),
            "--trust-unsigned",
            "--target",
            &as_loader,
            "--yes",
        ]);
        cmd.env("PGPASSWORD", "loader-pw");
        let out = run(cmd).ok();
        assert!(!out.stdout.contains("loader-pw"), "{round}: {}", out.stdout);
    }
    assert_eq!(dev.row_counts_fast("netpoint_loader"), expected_counts);
    assert_eq!(
        dev.psql(
            "postgres",
            "select pg_get_userbyid(datdba) from pg_database where datname = 'netpoint_loader'"
        ),
        "loader"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
}

#[test]
fn guards_refuse_before_anything_changes() {
    let (prod, dev) = servers(None);
    prod.load_fixture("netpoint");
    seed_dev_db(&dev, "netpoint");
    let prod_before = prod.fingerprint("netpoint");
    let dev_before = dev.fingerprint("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let dev_media = dir.path().join("dev-media");
    seed_dev_media(&dev_media);
    let dev_media_before = tree(&dev_media);
    let fixture_media = fixtures().join("media");
    let unchanged = |what: &str| {
        prod.assert_unchanged("netpoint", &prod_before, format!("{what}: source changed"));
        dev.assert_unchanged("netpoint", &dev_before, format!("{what}: target changed"));
        assert_eq!(
            tree(&dev_media),
            dev_media_before,
            "{what}: target media changed"
        );
        assert!(
            prod.temp_dbs().is_empty() && dev.temp_dbs().is_empty(),
            "{what}: temporary database left"
        );
        assert!(
            leftovers(dir.path()).is_empty(),
            "{what}: {:?}",
            leftovers(dir.path())
        );
    };

    // The same database, spelled `localhost` and `127.0.0.1`, even with --yes.
    run(xtask(&[
        "clone-prod",
        "--source",
        &localhost_url(&prod, "netpoint"),
        "--target",
        &prod.url("netpoint"),
        "--yes",
    ]))
    .fails_with("same database");
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &localhost_url(&prod, "netpoint"),
        "--yes",
    ]))
    .fails_with("same database");
    unchanged("same source and target");

    // A target with tables, no --yes, and no terminal to ask on.
    let refused = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&fixture_media),
        "--target-media",
        s(&dev_media),
    ]))
    .fails_with("--yes");
    assert!(
        refused.stderr.contains("not a terminal"),
        "{}",
        refused.stderr
    );
    unchanged("no --yes");

    // --dry-run: prints the plan, creates no database, no media directory, no bundle.
    let new_media = dir.path().join("new-media");
    let plan = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("fresh"),
        "--source-media",
        s(&fixture_media),
        "--target-media",
        s(&new_media),
        "--dry-run",
    ]))
    .ok();
    assert!(
        plan.stdout.contains("dry run") && plan.stdout.contains("Plan"),
        "{}",
        plan.output()
    );
    assert!(
        plan.stdout.contains("pg_dump") && plan.stdout.contains("/fresh"),
        "{}",
        plan.output()
    );
    let media_files = format!("{} files", tree(&fixture_media).len());
    assert!(
        plan.stdout.contains(&media_files),
        "the plan counts the media ({media_files}): {}",
        plan.output()
    );
    assert!(!dev.has_db("fresh"), "dry run created the target database");
    assert!(!new_media.exists(), "dry run created the media directory");
    let plan = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--dry-run",
    ]))
    .ok();
    assert!(plan.stdout.contains("Plan"), "{}", plan.output());
    let bundle = dir.path().join("bundle");
    let plan = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--out",
        s(&bundle),
        "--dry-run",
    ]))
    .ok();
    assert!(plan.stdout.contains("Plan"), "{}", plan.output());
    assert!(!bundle.exists(), "dry run wrote the bundle");
    unchanged("dry run");

    // A remote target is refused at once, before any connection (10.255.255.1 never answers).
    let remote = format!(
        "postgres://postgres:{}@10.255.255.1:5432/netpoint",
        prod.password
    );
    for args in [
        vec![
            "clone-prod",
            "--source",
            &prod.url("netpoint"),
            "--target",
            &remote,
            "--yes",
        ],
        vec![
            "clone-prod",
            "--bundle",
            s(&fixtures()),
            "--trust-unsigned",
            "--target",
            &remote,
            "--yes",
        ],
    ] {
        let (refused, took) = run_within(xtask(&args), Duration::from_secs(20));
        refused.fails_with("--allow-remote-target");
        assert!(
            took < Duration::from_secs(5),
            "the remote guard took {took:?}: it must not connect first"
        );
    }
    unchanged("remote target");

    // A target user that may not create databases.
    dev.psql(
        "postgres",
        "create role no_createdb login nocreatedb password 'no-createdb-pw'",
    );
    let weak = format!(
        "postgres://no_createdb:no-createdb-pw@127.0.0.1:{}/netpoint_weak",
        dev.port
    );
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &weak,
        "--yes",
    ]))
    .fails_with("CREATEDB");
    assert!(!dev.has_db("netpoint_weak"));
    unchanged("no CREATEDB");

    // A media symlink pointing outside the media root.
    let linked = dir.path().join("linked-media");
    copy_tree(&fixture_media, &linked);
    fs::write(dir.path().join("outside.txt"), b"not media").unwrap();
    std::os::unix::fs::symlink(
        "../../outside.txt",
        linked.join("devicetype-images/escape.png"),
    )
    .unwrap();
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&linked),
        "--target-media",
        s(&dev_media),
        "--yes",
    ]))
    .fails_with("outside the media root");
    unchanged("symlink out of the media root");
}

#[test]
fn bundle_import_is_verified_first_and_atomic() {
    let (prod, dev) = servers(None);
    prod.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let fixture_media = fixtures().join("media");
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--out",
        s(&bundle),
        "--source-media",
        s(&fixture_media),
    ]))
    .ok();

    seed_dev_db(&dev, "netpoint");
    let dev_media = dir.path().join("dev-media");
    seed_dev_media(&dev_media);
    let dev_before = dev.fingerprint("netpoint");
    let dev_media_before = tree(&dev_media);
    let import = |bundle: &Path| {
        run(xtask(&[
            "clone-prod",
            "--bundle",
            s(bundle),
            "--trust-unsigned",
            "--target",
            &dev.url("netpoint"),
            "--target-media",
            s(&dev_media),
            "--yes",
        ]))
    };
    let unchanged = |what: &str| {
        dev.assert_unchanged("netpoint", &dev_before, format!("{what}: target changed"));
        assert_eq!(
            tree(&dev_media),
            dev_media_before,
            "{what}: target media changed"
        );
        assert!(
            dev.temp_dbs().is_empty(),
            "{what}: temporary database left: {:?}",
            dev.temp_dbs()
        );
        assert!(
            leftovers(dir.path()).is_empty(),
            "{what}: {:?}",
            leftovers(dir.path())
        );
    };
    let variant = |name: &str| {
        let copy = dir.path().join(name);
        copy_tree(&bundle, &copy);
        copy
    };

    // A restore that fails at its very end (checksums regenerated: only the restore can fail),
    // with a statement the last entry, a foreign key's, may hold.
    let failing = variant("fails-at-end");
    let sql_path = failing.join("netpoint.sql");
    let text = fs::read_to_string(&sql_path).unwrap();
    let end = text
        .rfind("--\n-- PostgreSQL database dump complete")
        .unwrap();
    fs::write(
        &sql_path,
        format!(
            "{}ALTER TABLE ONLY public.dcim_site ADD CONSTRAINT never CHECK (1/0 = 1);\n\n{}",
            &text[..end],
            &text[end..]
        ),
    )
    .unwrap();
    rewrite_sums(&failing, "netpoint.sql");
    sha256sum_check(&failing, Path::new("SHA256SUMS"));
    import(&failing).fails_with("division by zero");
    unchanged("restore failing at its end");

    // One byte changed in netpoint.sql.
    let flipped = variant("one-byte");
    let sql_path = flipped.join("netpoint.sql");
    let mut sql = fs::read(&sql_path).unwrap();
    let at = sql.windows(12).position(|w| w == b"CREATE TABLE").unwrap();
    sql[at] = b'X';
    fs::write(&sql_path, sql).unwrap();
    import(&flipped).fails_with("netpoint.sql changed");
    unchanged("one byte changed");

    // media.sha256 lists a file the archive does not hold (SHA256SUMS regenerated).
    let missing = variant("missing-media");
    let mut list = fs::OpenOptions::new()
        .append(true)
        .open(missing.join("media.sha256"))
        .unwrap();
    writeln!(list, "{}  image-attachments/ghost.png", "0".repeat(64)).unwrap();
    rewrite_sums(&missing, "media.sha256");
    sha256sum_check(&missing, Path::new("SHA256SUMS"));
    import(&missing).fails_with("media.sha256 lists 11 media files while manifest.json records 10");
    unchanged("media file missing");

    // A manifest whose media count or size the media do not match (SHA256SUMS regenerated).
    let manifest_text = fs::read_to_string(bundle.join("manifest.json")).unwrap();
    for (what, field, more, expected) in [
        (
            "one media file more in the manifest",
            "files",
            1,
            "media files while manifest.json records",
        ),
        (
            "more media bytes in the manifest",
            "bytes",
            12345,
            "bytes while manifest.json records",
        ),
    ] {
        let mut record: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
        let value = record["media"][field].as_u64().expect("media recorded");
        record["media"][field] = serde_json::json!(value + more);
        let counted = variant(&what.replace(' ', "-"));
        fs::write(
            counted.join("manifest.json"),
            serde_json::to_string_pretty(&record).unwrap(),
        )
        .unwrap();
        rewrite_sums(&counted, "manifest.json");
        import(&counted).fails_with(expected);
        unchanged(what);
    }

    // An archive member that climbs out with `..` (SHA256SUMS regenerated).
    let evil_name = marker("evil");
    let evil = variant("traversal");
    let archive = evil.join("netpoint_media.tar.gz");
    let crafted = dir.path().join("crafted.tar.gz");
    let script = "import io, sys, tarfile\n\
        src, dst, name = sys.argv[1:4]\n\
        with tarfile.open(src, 'r:gz') as i, tarfile.open(dst, 'w:gz', format=tarfile.GNU_FORMAT) as o:\n\
        \x20   for m in i.getmembers():\n\
        \x20       o.addfile(m, i.extractfile(m) if m.isfile() else None)\n\
        \x20   data = name.rsplit('/', 1)[-1].encode()\n\
        \x20   info = tarfile.TarInfo(name)\n\
        \x20   info.size = len(data)\n\
        \x20   o.addfile(info, io.BytesIO(data))\n";
    let member = format!("netpoint/media/../../{evil_name}");
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&archive)
        .arg(&crafted)
        .arg(&member)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "crafting the archive with python3 tarfile"
    );
    fs::rename(&crafted, &archive).unwrap();
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains(&member),
        "the crafted member is in the archive"
    );
    rewrite_sums(&evil, "netpoint_media.tar.gz");
    import(&evil).fails_with("leaves the media root");
    unchanged("archive with ../");
    let mut written = contains_anywhere(dir.path(), &evil_name);
    written.retain(|p| !p.to_string_lossy().ends_with(".tar.gz"));
    assert!(written.is_empty(), "{written:?}");
    for ancestor in dir.path().ancestors().chain(dev_media.ancestors()) {
        assert!(
            !ancestor.join(&evil_name).exists(),
            "written outside: {}",
            ancestor.join(&evil_name).display()
        );
    }

    // The untouched bundle imports: the refusals above came from the corruptions.
    import(&bundle).ok();
    assert_eq!(
        dev.row_counts_fast("netpoint"),
        expected_clone(&prod.row_counts_fast("netpoint"), false)
    );
    assert_eq!(tree(&dev_media), tree(&fixture_media));
    assert!(dev.temp_dbs().is_empty() && leftovers(dir.path()).is_empty());
}

#[test]
fn a_clone_killed_during_the_restore_leaves_the_target_intact() {
    let (prod, dev) = servers(None);
    prod.load_fixture("netpoint");
    // Enough data that the restore takes a few seconds.
    prod.psql(
        "netpoint",
        "create table public.bulk (id bigint primary key, payload text); \
         insert into public.bulk select g, md5(g::text) || repeat('x', 200) from generate_series(1, 300000) g",
    );
    seed_dev_db(&dev, "netpoint");
    let dir = tempfile::tempdir().unwrap();
    let dev_media = dir.path().join("dev-media");
    seed_dev_media(&dev_media);
    let dev_before = dev.fingerprint("netpoint");
    let dev_media_before = tree(&dev_media);
    let fixture_media = fixtures().join("media");
    let args = [
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&fixture_media),
        "--target-media",
        s(&dev_media),
        "--yes",
    ];

    let mut child = xtask(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let loading = loop {
        if let Some(db) = dev
            .databases()
            .into_iter()
            .find(|d| d.starts_with("netpoint__npload_"))
        {
            break db;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the clone ended ({status}) before its temporary database was seen: make the source bigger");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no temporary database appeared"
        );
        thread::sleep(Duration::from_millis(25));
    };
    child.kill().unwrap(); // SIGKILL: no chance to clean up.
    child.wait().unwrap();
    assert_eq!(loading, format!("netpoint__npload_{}", child.id()));

    // pg_dump and psql die with it: their sessions end on both servers.
    wait_no_sessions(&dev, "__np", Duration::from_secs(15));
    wait_no_sessions(&prod, "netpoint", Duration::from_secs(15));
    dev.assert_unchanged_but_temp_dbs("netpoint", &dev_before, "killed run changed the target");
    assert_eq!(
        tree(&dev_media),
        dev_media_before,
        "killed run changed the target media"
    );

    // The next run succeeds and removes what the killed one left, ending a session that a
    // developer's app still holds on the target.
    let mut app = dev
        .psql_cmd("netpoint")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while dev.psql(
        "postgres",
        "select count(*) from pg_stat_activity where datname = 'netpoint'",
    ) == "0"
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the app session did not connect"
        );
        thread::sleep(Duration::from_millis(25));
    }
    let next = run(xtask(&args)).ok();
    assert!(
        next.output().contains("ended 1 other session(s) on"),
        "{}",
        next.output()
    );
    drop(app.stdin.take());
    app.wait().unwrap();
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    let clone = dev.row_counts_fast("netpoint");
    assert_eq!(
        clone,
        expected_clone(&prod.row_counts_fast("netpoint"), false)
    );
    assert_eq!(count_of(&clone, "public.bulk"), 300_000);
    assert_eq!(tree(&dev_media), tree(&fixture_media));
}

#[test]
fn the_password_never_appears_in_output_or_bundles() {
    let password = marker("Pw");
    let (prod, dev) = servers(Some(&password));
    prod.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let fixture_media = fixtures().join("media");
    let bundle = dir.path().join("bundle");
    let (direct_media, imported_media) = (
        dir.path().join("direct-media"),
        dir.path().join("imported-media"),
    );
    let wrong_user = dev
        .url("netpoint")
        .replacen("postgres://postgres:", "postgres://nobody:", 1);
    assert!(wrong_user.contains("//nobody:") && wrong_user.contains(&password));

    let runs: Vec<(&str, Run)> = vec![
        (
            "direct",
            run(xtask(&[
                "-v",
                "clone-prod",
                "--source",
                &prod.url("netpoint"),
                "--target",
                &dev.url("netpoint"),
                "--source-media",
                s(&fixture_media),
                "--target-media",
                s(&direct_media),
            ]))
            .ok(),
        ),
        (
            "export",
            run(xtask(&[
                "-v",
                "clone-prod",
                "--source",
                &prod.url("netpoint"),
                "--out",
                s(&bundle),
                "--source-media",
                s(&fixture_media),
            ]))
            .ok(),
        ),
        (
            "import",
            run(xtask(&[
                "-v",
                "clone-prod",
                "--bundle",
                s(&bundle),
                "--trust-unsigned",
                "--target",
                &dev.url("imported"),
                "--target-media",
                s(&imported_media),
            ]))
            .ok(),
        ),
        (
            "refused import",
            run(xtask(&[
                "-v",
                "clone-prod",
                "--bundle",
                s(&bundle),
                "--trust-unsigned",
                "--target",
                &dev.url("imported"),
            ]))
            .fails_with("--yes"),
        ),
        (
            "unknown user",
            run(xtask(&[
                "-v",
                "clone-prod",
                "--source",
                &prod.url("netpoint"),
                "--target",
                &wrong_user,
                "--yes",
            ])),
        ),
        (
            "schema snapshot",
            run(xtask(&[
                "-v",
                "schema-snapshot",
                "--source",
                &prod.url("netpoint"),
                "--output",
                s(&dir.path().join("schema.sql")),
            ]))
            .ok(),
        ),
    ];
    assert!(
        !runs[4].1.status.success(),
        "a user that does not exist: {}",
        runs[4].1.output()
    );
    for (what, run) in &runs {
        assert!(
            !run.output().contains(&password),
            "{what} printed the password:\n{}",
            run.output()
        );
    }
    let direct = &runs[0].1;
    assert!(
        direct.stderr.contains("pg_dump"),
        "-v shows the commands: {}",
        direct.stderr
    );
    assert!(
        direct.stderr.contains("postgres:***@"),
        "URLs are shown masked: {}",
        direct.stderr
    );

    assert!(bundle.join("manifest.json").exists());
    let manifest = fs::read_to_string(bundle.join("manifest.json")).unwrap();
    assert!(!manifest.contains(&password), "{manifest}");
    let leaks = contains_anywhere(dir.path(), &password);
    assert!(leaks.is_empty(), "the password is in {leaks:?}");
    // The bundle is real, so not finding the password means something.
    assert_eq!(
        dev.row_counts_fast("imported"),
        dev.row_counts_fast("netpoint")
    );
}
