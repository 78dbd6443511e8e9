//! Promises kept under hostile and careless input: the same database under another name,
//! bundles cut short or tampered with, two runs at once, signals, sessions the tool may not
//! end, encodings the target's locale cannot hold, and exclusion patterns read as pg_dump
//! reads them.

use std::{
    fs,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use crate::{
    clone_prod::rewrite_sums,
    harness::{leftovers, output_of, run, tree, wait_for, xtask, Pg},
};

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
/// A source large enough that a clone takes a few seconds on this machine.
fn bulky_source(pg: &Pg, db: &str) {
    pg.load_fixture(db);
    pg.psql(
        db,
        "create table public.bulk (id bigint primary key, payload text); \
         insert into public.bulk select g, md5(g::text) || repeat('x', 200) from generate_series(1, 300000) g",
    );
}

#[test]
fn the_same_database_is_refused_however_its_host_is_spelt() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let before = pg.fingerprint("netpoint");
    let source_rows = pg.row_counts_fast("netpoint");
    let hostname = fs::read_to_string("/etc/hostname").unwrap();
    let bridge = pg.bridge_ip();
    let source = pg.url("netpoint");
    let spelt = |host: &str, port: u16| {
        format!("postgres://postgres:{}@{host}:{port}/netpoint", pg.password)
    };
    let targets = [
        spelt("LOCALHOST", pg.port),
        spelt("localhost.", pg.port),
        spelt("127.1", pg.port),
        spelt("[::ffff:127.0.0.1]", pg.port),
        spelt(hostname.trim(), pg.port),
        // Another address and port of the same server: only the server can tell.
        spelt(&bridge, 5432),
    ];
    for target in &targets {
        let clone = run(xtask(&[
            "clone-prod",
            "--source",
            &source,
            "--target",
            target,
            "--yes",
            "--allow-remote-target",
        ]))
        .fails_with("source and target are the same database");
        assert!(!clone.output().contains(&pg.password), "{}", clone.output());
        pg.assert_unchanged("netpoint", &before, target);
        assert!(pg.temp_dbs().is_empty(), "{target}: {:?}", pg.temp_dbs());
    }
    // A template database is never a target: every CREATE DATABASE copies it.
    run(xtask(&[
        "clone-prod",
        "--source",
        &source,
        "--target",
        &pg.url("template1"),
        "--yes",
    ]))
    .fails_with("is a template database");
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datistemplate and datname like 'template1%'"
        ),
        "1"
    );
    assert_eq!(
        pg.psql(
            "template1",
            "select count(*) from pg_tables where schemaname = 'public'"
        ),
        "0"
    );
    // Another database on the same server is a fine target.
    run(xtask(&[
        "clone-prod",
        "--source",
        &source,
        "--target",
        &spelt(&bridge, 5432).replace("/netpoint", "/devcopy"),
        "--yes",
        "--allow-remote-target",
    ]))
    .ok();
    assert_eq!(
        pg.row_counts_fast("netpoint"),
        source_rows,
        "the source is only read"
    );
    assert!(pg.has_db("devcopy"));
}

/// The table-of-contents entries of a dump, as an export counts them: each `-- Name:` or
/// `-- Data for Name:` header.
fn toc_entries(sql: &[u8]) -> usize {
    String::from_utf8_lossy(sql)
        .lines()
        .filter(|line| line.starts_with("-- Name: ") || line.starts_with("-- Data for Name: "))
        .count()
}

#[test]
fn a_bundle_cut_short_or_tampered_with_is_refused_before_anything_changes() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    bulky_source(&prod, "netpoint");
    dev.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--out",
        s(&bundle),
    ]))
    .ok();
    let sql = fs::read(bundle.join("netpoint.sql")).unwrap();
    let manifest = fs::read_to_string(bundle.join("manifest.json")).unwrap();
    let post_data = {
        let text = String::from_utf8_lossy(&sql);
        let at = text.find("; Type: CONSTRAINT;").expect("a constraint");
        text[..at].rfind("--\n-- Name:").unwrap()
    };
    let trailer = b"\n--\n-- PostgreSQL database dump complete\n--\n\n";
    let one_row_less = {
        let text = String::from_utf8(sql.clone()).unwrap();
        let copy = text.find("COPY public.bulk ").unwrap();
        let first_row = copy + text[copy..].find('\n').unwrap() + 1;
        let second_row = first_row + text[first_row..].find('\n').unwrap() + 1;
        format!("{}{}", &text[..first_row], &text[second_row..]).into_bytes()
    };
    // psql commands hidden in the script: a shell command in the post-data section, and one
    // after a statement on its line in the pre-data section.
    let pwned = dir.path().join("pwned");
    let injected = |at: usize, command: &str| [&sql[..at], command.as_bytes(), &sql[at..]].concat();
    let pre_data = {
        let text = String::from_utf8_lossy(&sql);
        let at = text.find("; Type: TABLE;").expect("a table");
        at + text[at..].find("\nCREATE TABLE").unwrap() + 1
    };
    let shell = format!("\\! touch {}\n", pwned.display());
    let after_statement = format!("SELECT 1; \\! touch {}\n", pwned.display());
    // SQL where pg_dump writes only session settings, which every load session runs.
    let preamble = {
        let text = String::from_utf8_lossy(&sql);
        text.find("SET row_security = off;\n").unwrap() + "SET row_security = off;\n".len()
    };
    let role = "CREATE ROLE netpoint_injected;\n";
    let role_after_setting = "SET lock_timeout = 0; CREATE ROLE netpoint_injected;\n";
    let with_media = manifest.replacen(
        "\"format\": 3,",
        "\"format\": 3, \"media\": {\"files\": 3, \"bytes\": 10},",
        1,
    );
    // Entries shaped like pg_dump's that act beyond the database: another database of the
    // dev user dropped, spelt over lines and hidden after a statement.
    dev.psql("postgres", "create database victim");
    let before = dev.fingerprint("netpoint");
    let entries = |sql: &[u8]| toc_entries(sql);
    let one_more_entry = |sql: &[u8]| {
        let n = entries(sql);
        manifest.replacen(
            &format!("\"entries\": {n}"),
            &format!("\"entries\": {}", n + 1),
            1,
        )
    };
    let foreign = |body: &str| {
        injected(
            post_data,
            &format!("--\n-- Name: evil; Type: TABLE; Schema: public; Owner: -\n--\n\n{body}\n\n"),
        )
    };
    let drop_victim = foreign("DROP DATABASE IF EXISTS victim WITH (FORCE);");
    let drop_victim_hidden = foreign("/* ; */ drop\n  database\n  \"victim\";");
    type Case<'a> = (&'a str, Vec<u8>, String, &'a [&'a str], &'a str);
    let cases: Vec<Case> = vec![
        (
            "an entry that drops another database",
            drop_victim.clone(),
            one_more_entry(&drop_victim),
            &[],
            "a DROP DATABASE statement, which acts beyond the database",
        ),
        (
            "an entry that drops another database, spelt over lines, one stream",
            drop_victim_hidden.clone(),
            one_more_entry(&drop_victim_hidden),
            &["--jobs", "1"],
            "a DROP DATABASE statement",
        ),
        (
            "SQL in the preamble",
            injected(preamble, role),
            manifest.clone(),
            &[],
            "holds `CREATE ROLE netpoint_injected;` before its first table-of-contents entry",
        ),
        (
            "SQL after a setting in the preamble, one stream",
            injected(preamble, role_after_setting),
            manifest.clone(),
            &["--jobs", "1"],
            "before its first table-of-contents entry",
        ),
        (
            "a manifest recording media the bundle lacks",
            sql.clone(),
            with_media,
            &[],
            "lacks media.sha256 and netpoint_media.tar.gz while manifest.json records 3 media files",
        ),
        (
            "a shell command in the post-data section",
            injected(post_data, &shell),
            manifest.clone(),
            &[],
            "restricted",
        ),
        (
            "a shell command after a statement, one stream",
            injected(pre_data, &after_statement),
            manifest.clone(),
            &["--jobs", "1"],
            "restricted",
        ),
        (
            "a shell command after a statement",
            injected(pre_data, &after_statement),
            manifest.clone(),
            &[],
            "restricted",
        ),
        (
            "cut at 60 %",
            sql[..sql.len() * 6 / 10].to_vec(),
            manifest.clone(),
            &[],
            "is cut short",
        ),
        (
            "cut at 60 %, one stream",
            sql[..sql.len() * 6 / 10].to_vec(),
            manifest.clone(),
            &["--jobs", "1"],
            "is cut short",
        ),
        (
            "cut before the post-data section",
            sql[..post_data].to_vec(),
            manifest.clone(),
            &[],
            "is cut short",
        ),
        (
            "cut before the post-data section, trailer added back",
            [&sql[..post_data], &trailer[..]].concat(),
            manifest.clone(),
            &[],
            "table-of-contents entries",
        ),
        (
            "a row removed",
            one_row_less,
            manifest.clone(),
            &[],
            "rows of public.bulk where manifest.json recorded 300000",
        ),
        (
            "manifest not JSON",
            sql.clone(),
            manifest.replace('{', "("),
            &[],
            "manifest.json is not a manifest this tool can trust",
        ),
        (
            "manifest of an unknown format",
            sql.clone(),
            manifest.replace("\"format\": 3", "\"format\": 99"),
            &[],
            "format 99 is not known",
        ),
        (
            "manifest with a misspelt field",
            sql.clone(),
            manifest.replace("\"rows\":", "\"rowz\":"),
            &[],
            "unknown field `rowz`",
        ),
    ];
    let target = dev.url("netpoint");
    for (what, bad_sql, bad_manifest, extra, expected) in cases {
        let copy = dir.path().join("copy");
        let _ = fs::remove_dir_all(&copy);
        fs::create_dir(&copy).unwrap();
        for name in ["SHA256SUMS", "netpoint.sql", "manifest.json"] {
            fs::copy(bundle.join(name), copy.join(name)).unwrap();
        }
        fs::write(copy.join("netpoint.sql"), &bad_sql).unwrap();
        fs::write(copy.join("manifest.json"), &bad_manifest).unwrap();
        rewrite_sums(&copy, "netpoint.sql");
        rewrite_sums(&copy, "manifest.json");
        let mut args = vec![
            "clone-prod",
            "--bundle",
            s(&copy),
            "--trust-unsigned",
            "--target",
            &target,
            "--yes",
        ];
        args.extend_from_slice(extra);
        let import = run(xtask(&args));
        assert!(
            !import.status.success(),
            "{what}: imported\n{}",
            import.output()
        );
        assert!(
            import.stderr.contains(expected),
            "{what}: expected `{expected}`:\n{}",
            import.output()
        );
        dev.assert_unchanged("netpoint", &before, what);
        assert!(dev.temp_dbs().is_empty(), "{what}: {:?}", dev.temp_dbs());
        assert!(!pwned.exists(), "{what}: a command in the script ran");
        assert_eq!(
            dev.psql(
                "postgres",
                "select count(*) from pg_roles where rolname = 'netpoint_injected'"
            ),
            "0",
            "{what}: SQL in the preamble ran"
        );
        assert!(dev.has_db("victim"), "{what}: another database was dropped");
    }
    // A file the manifest does not account for, even one SHA256SUMS lists, is refused.
    let copy = dir.path().join("extra");
    fs::create_dir(&copy).unwrap();
    for name in ["SHA256SUMS", "netpoint.sql", "manifest.json"] {
        fs::copy(bundle.join(name), copy.join(name)).unwrap();
    }
    fs::write(copy.join("run-me.sh"), "echo hi\n").unwrap();
    let line = format!(
        "{}  run-me.sh\n",
        crate::harness::sha256_file(&copy.join("run-me.sh"))
    );
    let sums = fs::read_to_string(copy.join("SHA256SUMS")).unwrap() + &line;
    fs::write(copy.join("SHA256SUMS"), sums).unwrap();
    run(xtask(&[
        "clone-prod",
        "--bundle",
        s(&copy),
        "--trust-unsigned",
        "--target",
        &target,
        "--yes",
    ]))
    .fails_with("holds run-me.sh while manifest.json records no media");
    dev.assert_unchanged("netpoint", &before, "the target is unchanged");
    // The bundle as written still imports.
    run(xtask(&[
        "clone-prod",
        "--bundle",
        s(&bundle),
        "--trust-unsigned",
        "--target",
        &dev.url("netpoint"),
        "--yes",
    ]))
    .ok();
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.bulk"),
        "300000"
    );
}

#[test]
fn a_second_run_into_the_same_target_is_refused_and_names_the_first() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    bulky_source(&prod, "netpoint");
    dev.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    fs::create_dir(&media).unwrap();
    let source_media = crate::harness::fixtures().join("media");
    let clone = |target_db: &str| {
        xtask(&[
            "clone-prod",
            "--source",
            &prod.url("netpoint"),
            "--target",
            &dev.url(target_db),
            "--source-media",
            s(&source_media),
            "--target-media",
            s(&media),
            "--yes",
        ])
    };
    let first = clone("netpoint")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first run holds its lock once its lock session is there.
    let holder = format!("cargo xtask pid {} on %", first.id());
    wait_for("the first run's lock", Duration::from_secs(60), || {
        dev.psql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where application_name like '{holder}'"
            ),
        ) == "1"
    });
    let second = run(clone("netpoint")).fails_with("another run is replacing");
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.output()
    );
    // The media directory alone is locked too.
    run(clone("other")).fails_with("another run is replacing the media directory");
    assert!(!dev.has_db("other"));

    let first = output_of(first);
    assert!(first.status.success(), "{}", first.output());
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.bulk"),
        "300000"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    assert_eq!(tree(&media), tree(&source_media));
    // And once it is done, the lock is free.
    run(clone("netpoint")).ok();
}

#[test]
fn signals_in_every_phase_leave_the_target_as_it_was() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    bulky_source(&prod, "netpoint");
    dev.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    fs::create_dir(&media).unwrap();
    fs::write(media.join("kept.png"), b"the dev copy's own file").unwrap();
    let source_media = crate::harness::fixtures().join("media");
    let before = dev.fingerprint("netpoint");
    let media_before = tree(&media);
    let bundle = dir.path().join("bundle");
    let direct = [
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&source_media),
        "--target-media",
        s(&media),
        "--yes",
    ];
    let export = [
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--out",
        s(&bundle),
        "--source-media",
        s(&source_media),
    ];
    let loading = || {
        dev.databases()
            .iter()
            .any(|d| d.starts_with("netpoint__npload_"))
    };
    let dumping = || {
        prod.psql(
            "postgres",
            "select count(*) > 0 from pg_stat_activity where datname = 'netpoint' and application_name = 'pg_dump'",
        ) == "t"
    };
    type Phase<'a> = (&'a str, &'a [&'a str], i32, Box<dyn Fn() -> bool + 'a>);
    let phases: Vec<Phase> = vec![
        (
            "SIGTERM while loading",
            &direct,
            libc::SIGTERM,
            Box::new(loading),
        ),
        (
            "SIGINT while loading",
            &direct,
            libc::SIGINT,
            Box::new(loading),
        ),
        (
            "SIGHUP while loading",
            &direct,
            libc::SIGHUP,
            Box::new(loading),
        ),
        (
            "SIGTERM while exporting",
            &export,
            libc::SIGTERM,
            Box::new(dumping),
        ),
    ];
    for (what, args, signal, ready) in phases {
        let child = xtask(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        wait_for(what, Duration::from_secs(60), &*ready);
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(pid, signal) };
        let ended = output_of(child);
        assert_eq!(
            ended.status.code(),
            Some(128 + signal),
            "{what}:\n{}",
            ended.output()
        );
        assert_eq!(
            ended
                .stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "{what}:\n{}",
            ended.output()
        );
        // Every session of the run is gone: its tools stopped with it.
        wait_for(
            &format!("{what}: sessions ended"),
            Duration::from_secs(15),
            || {
                dev.psql(
                "postgres",
                "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
            ) == "0"
                && prod.psql(
                    "postgres",
                    "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
                ) == "0"
            },
        );
        dev.assert_unchanged("netpoint", &before, what);
        assert_eq!(tree(&media), media_before, "{what}");
        assert!(dev.temp_dbs().is_empty(), "{what}: {:?}", dev.temp_dbs());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{what}: {:?}",
            leftovers(dir.path())
        );
        assert!(!bundle.exists(), "{what}: a bundle was left");
    }

    // A query of the run that waits on a lock production holds stops at once too: the
    // signal does not wait for the lock.
    let mut holder = prod
        .psql_cmd("netpoint")
        .args([
            "-c",
            "begin; lock table public.bulk in access exclusive mode; select pg_sleep(120); commit;",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the lock taken", Duration::from_secs(30), || {
        prod.psql(
            "netpoint",
            "select count(*) from pg_locks where relation = 'public.bulk'::regclass and mode = 'AccessExclusiveLock' and granted",
        ) == "1"
    });
    let child = xtask(&direct)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    wait_for(
        "a query waiting on the lock",
        Duration::from_secs(60),
        || {
            prod.psql(
            "postgres",
            "select count(*) > 0 from pg_stat_activity where wait_event_type = 'Lock' and datname = 'netpoint'",
        ) == "t"
        },
    );
    let signalled = Instant::now();
    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let ended = output_of(child);
    let took = signalled.elapsed();
    // The lock's holder goes (its backend would sleep on without its client); the run's
    // query, cut off from its client, ends as soon as it gets the lock.
    prod.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where query like 'begin; lock table public.bulk%'",
    );
    let _ = holder.wait();
    assert_eq!(ended.status.code(), Some(143), "{}", ended.output());
    assert!(
        took < Duration::from_secs(10),
        "a run waiting on a lock took {took:?} to stop:\n{}",
        ended.output()
    );
    wait_for(
        "sessions ended after the lock",
        Duration::from_secs(15),
        || {
            prod.psql(
            "postgres",
            "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()",
        ) == "0"
        },
    );
    dev.assert_unchanged("netpoint", &before, "after the lock");
    assert_eq!(tree(&media), media_before, "after the lock");
    assert!(
        dev.temp_dbs().is_empty(),
        "after the lock: {:?}",
        dev.temp_dbs()
    );
}

#[test]
fn sessions_the_owner_may_not_end_are_waited_for_then_named() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    prod.load_fixture("netpoint");
    dev.psql(
        "postgres",
        "create role owner login password 'owner-pw' createdb",
    );
    dev.psql("postgres", "create database netpoint owner owner");
    dev.psql(
        "netpoint",
        "create table public.kept (id int); insert into public.kept values (1)",
    );
    let target = format!("postgres://owner:owner-pw@127.0.0.1:{}/netpoint", dev.port);
    let clone = || {
        xtask(&[
            "clone-prod",
            "--source",
            &prod.url("netpoint"),
            "--target",
            &target,
            "--yes",
        ])
    };
    // A superuser's session, which an ordinary owner may not end.
    let hold = |seconds: u32| {
        let child = dev
            .psql_cmd("netpoint")
            .args(["-c", &format!("select pg_sleep({seconds})")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the superuser session", Duration::from_secs(30), || {
            dev.psql(
                "postgres",
                "select count(*) from pg_stat_activity where datname = 'netpoint' and query like 'select pg_sleep%'",
            ) == "1"
        });
        child
    };

    let mut holder = hold(120);
    let refused =
        run(clone()).fails_with("other sessions use it and may not be ended by user `owner`");
    assert!(
        refused.stderr.contains("user postgres"),
        "{}",
        refused.output()
    );
    assert!(!refused.stderr.contains("owner-pw"));
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.kept"),
        "1"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());

    // An interrupt during that wait ends it at once, with nothing changed.
    let child = clone()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the load, then the wait", Duration::from_secs(60), || {
        let loaded = dev.psql(
            "postgres",
            "select count(*) from pg_database d where datname like 'netpoint\\_\\_npload\\_%' \
             and not exists (select from pg_stat_activity a where a.datname = d.datname)",
        );
        loaded == "1"
    });
    let signalled = Instant::now();
    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let ended = output_of(child);
    assert_eq!(ended.status.code(), Some(143), "{}", ended.output());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the wait held the signal for {:?}:\n{}",
        signalled.elapsed(),
        ended.output()
    );
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.kept"),
        "1"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    dev.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where query like 'select pg_sleep%'",
    );
    let _ = holder.wait();

    // A session that leaves within the wait is simply waited for.
    let mut holder = hold(8);
    run(clone()).ok();
    holder.wait().unwrap();
    assert!(!dev
        .psql("netpoint", "select count(*) from public.dcim_site")
        .is_empty());
    assert_eq!(
        dev.psql("netpoint", "select to_regclass('public.kept') is null"),
        "t"
    );
    assert_eq!(
        dev.psql(
            "postgres",
            "select pg_get_userbyid(datdba) from pg_database where datname = 'netpoint'"
        ),
        "owner"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
}

#[test]
fn a_latin1_database_clones_into_a_utf8_server_as_createdb_would() {
    let pg = Pg::start(15);
    pg.psql(
        "postgres",
        "create database latin template template0 encoding 'LATIN1' lc_collate 'C' lc_ctype 'C'",
    );
    // convert_from builds the text whatever the client encoding of this psql.
    pg.psql(
        "latin",
        "create table public.t (id int primary key, name text); \
         insert into public.t values (1, convert_from('\\x636166e9', 'LATIN1')), (2, convert_from('\\xc672f8', 'LATIN1')); \
         create table public.big as select g as id, convert_from('\\x6e61ef7665', 'LATIN1') || g as name from generate_series(1, 200000) g",
    );
    for jobs in ["1", "2"] {
        let clone = run(xtask(&[
            "clone-prod",
            "--source",
            &pg.url("latin"),
            "--target",
            &pg.url("copy"),
            "--yes",
            "--jobs",
            jobs,
            "--no-scrub",
        ]))
        .ok();
        assert!(
            clone.output().contains("the copy is UTF8"),
            "{}",
            clone.output()
        );
        assert_eq!(
            pg.psql(
                "copy",
                "select string_agg((name = case id when 1 then convert_from('\\x636166e9', 'LATIN1') \
                 else convert_from('\\xc672f8', 'LATIN1') end)::text, ',' order by id) from public.t"
            ),
            "true,true"
        );
        assert_eq!(
            pg.psql(
                "copy",
                "select count(*) from public.big where name = convert_from('\\x6e61ef7665', 'LATIN1') || id"
            ),
            "200000"
        );
    }
}

#[test]
fn exclusion_patterns_mean_what_pg_dump_makes_of_them_on_every_path() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    prod.load_fixture("netpoint");
    // Large enough to go straight from table to table.
    prod.psql(
        "netpoint",
        "create table public.audit_log (id bigint primary key, entry text); \
         insert into public.audit_log select g, repeat('x', 100) from generate_series(1, 60000) g; \
         create table public.\"Audit_Keep\" (id int); insert into public.\"Audit_Keep\" values (1); \
         analyze",
    );
    let clone = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--exclude-table-data",
        "Audit*",
        "--exclude-table-data",
        "nothing_like_this*",
    ]))
    .ok();
    let output = clone.output();
    assert!(
        output.contains("table pattern `nothing_like_this*` (data left out) matches no table"),
        "{output}"
    );
    assert!(output.contains("public.audit_log"), "{output}");
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.audit_log"),
        "0"
    );
    // Unquoted patterns fold to lower case, as in pg_dump: "Audit_Keep" keeps its rows.
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.\"Audit_Keep\""),
        "1"
    );
    // A quoted pattern matches the name exactly.
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--exclude-table-data",
        "public.\"Audit_Keep\"",
        "--yes",
    ]))
    .ok();
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.\"Audit_Keep\""),
        "0"
    );
    assert_eq!(
        dev.psql("netpoint", "select count(*) from public.audit_log"),
        "60000"
    );
}

#[test]
fn a_swap_cut_short_by_a_kill_is_put_back_by_the_next_run() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start(15))
    });
    prod.load_fixture("netpoint");
    dev.load_fixture("netpoint");
    // What a run killed between its database swap and its media swap leaves: the previous
    // database aside, the new one in place, the new media still staged, and its journal.
    dev.psql(
        "netpoint",
        "create table public.which (copy text); insert into public.which values ('previous')",
    );
    dev.psql(
        "postgres",
        "create database netpoint__npold_7 template netpoint",
    );
    dev.psql("netpoint", "update public.which set copy = 'new'");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    fs::create_dir(&media).unwrap();
    fs::write(media.join("previous.png"), b"previous").unwrap();
    let staging = dir.path().join(".media.staging-7");
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("new.png"), b"new").unwrap();
    fs::write(
        dir.path().join(".media.lock"),
        format!(
            "cargo xtask pid 7 on elsewhere\n{{\"target\":\"127.0.0.1:{}/netpoint\",\"aside\":\"netpoint__npold_7\",\"staging\":\"{}\"}}\n",
            dev.port,
            staging.display()
        ),
    )
    .unwrap();

    // The next run puts the previous database back before it even asks to replace it.
    let next = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--source-media",
        s(&crate::harness::fixtures().join("media")),
        "--target-media",
        s(&media),
    ]))
    .fails_with("pass --yes");
    assert!(
        next.stderr.contains("putting the previous database back"),
        "{}",
        next.output()
    );
    assert_eq!(
        dev.psql("netpoint", "select copy from public.which"),
        "previous"
    );
    assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    assert_eq!(
        tree(&media),
        vec![("previous.png".to_string(), b"previous".to_vec())]
    );
}

#[test]
fn a_target_disk_that_fills_up_is_named_and_the_target_kept() {
    let (prod, dev) = thread::scope(|scope| {
        let prod = scope.spawn(|| Pg::start(15));
        (prod.join().unwrap(), Pg::start_on_small_disk(15, "80m"))
    });
    bulky_source(&prod, "netpoint");
    dev.load_fixture("netpoint");
    let before = dev.fingerprint("netpoint");
    let clone = run(xtask(&[
        "clone-prod",
        "--source",
        &prod.url("netpoint"),
        "--target",
        &dev.url("netpoint"),
        "--yes",
    ]));
    assert_eq!(clone.status.code(), Some(1), "{}", clone.output());
    assert_eq!(
        clone
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{}",
        clone.output()
    );
    // Where the data files fill first the server stays up; where its write-ahead log does,
    // it stops, and the message says where to look.
    let disk_full = clone.stderr.contains("ran out of disk space");
    let stopped = clone.stderr.contains("stopped or restarted while loading");
    assert!(disk_full || stopped, "{}", clone.output());
    // A full disk can still stop the server after the run reported it (its write-ahead log
    // fills as the temporary database is dropped); what is left to check then is the message.
    let up = || {
        dev.psql_cmd("postgres")
            .args(["-c", "select 1"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if disk_full && up() {
        dev.assert_unchanged("netpoint", &before, "the target is unchanged");
        assert!(dev.temp_dbs().is_empty(), "{:?}", dev.temp_dbs());
    }
}
