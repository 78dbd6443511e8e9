//! `cargo xtask schema-snapshot`: deterministic bytes, loading back, `--check` with its diff
//! and summary, one-line errors that leave files alone, and passwords kept out of sight.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::harness::{
    contains_anywhere, fixtures, free_port, marker, run, tree, which, workspace_root, xtask,
    xtask_on_terminal, Pg,
};

fn snapshot_to(url: &str, out: &Path) -> String {
    run(xtask(&[
        "schema-snapshot",
        "--source",
        url,
        "--output",
        out.to_str().unwrap(),
    ]))
    .ok();
    fs::read_to_string(out).unwrap()
}

/// No line that changes from run to run (`\restrict` keys, `-- Dumped from/by` versions).
#[track_caller]
fn assert_normalised(snapshot: &str) {
    for line in snapshot.lines() {
        assert!(
            !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"),
            "restrict key left in the snapshot: {line}"
        );
        assert!(
            !line.starts_with("-- Dumped from") && !line.starts_with("-- Dumped by"),
            "version comment left: {line}"
        );
    }
}

const ESC: char = '\u{1b}';

#[test]
fn snapshots_are_byte_identical_and_load_back() {
    // Two fresh servers, started and loaded side by side.
    let fresh = || {
        let pg = Pg::start(15);
        pg.load_fixture("netpoint");
        pg
    };
    let (first, second) = std::thread::scope(|s| {
        let other = s.spawn(fresh);
        (fresh(), other.join().unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // The same database twice, and a fresh server loaded with the same fixture.
    let a = snapshot_to(&first.url("netpoint"), &path("a.sql"));
    let b = snapshot_to(&first.url("netpoint"), &path("b.sql"));
    let c = snapshot_to(&second.url("netpoint"), &path("c.sql"));
    assert!(
        a.starts_with("-- NetPoint schema snapshot, PostgreSQL 15\n"),
        "{}",
        &a[..a.len().min(200)]
    );
    assert!(a.contains("CREATE TABLE public.dcim_site ("));
    assert_normalised(&a);
    assert!(a == b, "two snapshots of one database differ");
    assert!(
        a == c,
        "snapshots of two servers loaded with the same fixture differ"
    );

    // Round trip: the snapshot loads into an empty database, which snapshots to the same bytes.
    second.create_db("reloaded");
    assert_eq!(
        second.psql(
            "reloaded",
            "select count(*) from pg_tables where schemaname = 'public'"
        ),
        "0"
    );
    second.psql_file("reloaded", &path("c.sql"));
    let tables = second.psql(
        "reloaded",
        "select count(*) from pg_tables where schemaname = 'public'",
    );
    assert_eq!(
        tables,
        second.psql(
            "netpoint",
            "select count(*) from pg_tables where schemaname = 'public'"
        )
    );
    let reloaded = snapshot_to(&second.url("reloaded"), &path("reloaded.sql"));
    assert!(
        reloaded == c,
        "the reloaded schema snapshots differently:\n{}",
        first_difference(&c, &reloaded)
    );
}

fn first_difference(a: &str, b: &str) -> String {
    let line = a
        .lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or(a.lines().count().min(b.lines().count()));
    format!(
        "line {}: {:?} vs {:?}",
        line + 1,
        a.lines().nth(line),
        b.lines().nth(line)
    )
}

#[test]
fn check_names_each_change_and_the_update_command() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let committed = fixtures().join("schema.sql");
    let committed_before = fs::read(&committed).unwrap();
    // As the schema-check workflow runs it: URL from the environment, the committed snapshot.
    let ci_check = || {
        let mut cmd = xtask(&[
            "schema-snapshot",
            "--check",
            "--summary",
            summary.to_str().unwrap(),
        ]);
        cmd.env("NETPOINT_DATABASE_URL", pg.url("netpoint"));
        cmd
    };

    // Unchanged: exit 0, one line on stdout, and a one-line summary.
    let clean = run(ci_check()).ok();
    assert_eq!(clean.stdout, "schema matches fixtures/schema.sql\n");
    let text = fs::read_to_string(&summary).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("fixtures/schema.sql"), "{text}");

    // A copy of the snapshot for the runs that name their own file.
    let copy = dir.path().join("schema.sql");
    fs::copy(&committed, &copy).unwrap();
    let copy_arg = copy.to_str().unwrap().to_string();
    let source = pg.url("netpoint");
    let with_flags = |extra: &[&str]| {
        let mut args = vec![
            "schema-snapshot",
            "--source",
            &source as &str,
            "--output",
            &copy_arg,
            "--check",
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };

    pg.psql(
        "netpoint",
        "alter table dcim_site add column facility_code varchar(50); \
         create index dcim_site_facility_code_idx on dcim_site (facility_code); \
         alter table dcim_site drop constraint dcim_site_latitude_check; \
         alter table dcim_site drop constraint dcim_site_slug_key;",
    );
    let changes = [
        (
            "facility_code",
            "Column `public.dcim_site.facility_code` added",
        ),
        (
            "dcim_site_facility_code_idx",
            "Index `public.dcim_site_facility_code_idx` added",
        ),
        (
            "dcim_site_latitude_check",
            "Constraint `dcim_site_latitude_check` on `public.dcim_site` removed",
        ),
        (
            "dcim_site_slug_key",
            "Constraint `dcim_site_slug_key` on `public.dcim_site` removed",
        ),
    ];

    let changed = run(ci_check()).fails_with("differs from fixtures/schema.sql");
    assert!(
        changed
            .stderr
            .contains("update it with `cargo xtask schema-snapshot`"),
        "the exact update command is missing:\n{}",
        changed.stderr
    );
    assert!(
        changed.stdout.starts_with("--- fixtures/schema.sql\n+++ "),
        "no unified diff:\n{}",
        changed.stdout
    );
    assert!(
        !changed.stdout.contains(ESC),
        "colour without a terminal under NO_COLOR"
    );
    let summary_text = fs::read_to_string(&summary).unwrap();
    for (name, line) in changes {
        assert!(
            changed
                .stdout
                .lines()
                .any(|l| (l.starts_with('+') || l.starts_with('-')) && l.contains(name)),
            "the diff does not show {name}:\n{}",
            changed.stdout
        );
        assert!(
            summary_text.contains(line),
            "the summary lacks `{line}`:\n{summary_text}"
        );
    }
    assert_eq!(
        fs::read(&committed).unwrap(),
        committed_before,
        "--check must not write the snapshot"
    );

    // With --source and --output, the update command repeats them (password masked).
    let masked = format!("postgres://postgres:***@127.0.0.1:{}/netpoint", pg.port);
    let flagged = with_flags(&[]).fails_with("differs from");
    let update = format!("`cargo xtask schema-snapshot --source '{masked}' --output {copy_arg}`");
    assert!(
        flagged.stderr.contains(&update),
        "expected {update} in:\n{}",
        flagged.stderr
    );

    // Colour: forced on through a pipe; off when refused, on a terminal with NO_COLOR, and
    // on by default on a terminal (which shows the terminal check itself works).
    let forced = with_flags(&["--color", "always"]);
    assert!(
        !forced.status.success() && forced.stderr.contains("differs from"),
        "{}",
        forced.output()
    );
    assert!(
        forced
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("{ESC}[")) && l.contains("facility_code")),
        "{}",
        forced.stdout
    );
    let on_terminal = |extra: &[&str], envs: &[(&str, &str)]| {
        let mut args = vec![
            "schema-snapshot",
            "--source",
            &source as &str,
            "--output",
            &copy_arg,
            "--check",
        ];
        args.extend_from_slice(extra);
        let out = xtask_on_terminal(&args, envs);
        assert!(
            !out.status.success() && out.stdout.contains("facility_code"),
            "{}",
            out.stdout
        );
        out.stdout
    };
    assert!(
        on_terminal(&[], &[]).contains(&format!("{ESC}[")),
        "no colour on a terminal"
    );
    assert!(
        !on_terminal(&[], &[("NO_COLOR", "1")]).contains(ESC),
        "NO_COLOR ignored"
    );
    assert!(
        !on_terminal(&["--color", "never"], &[]).contains(ESC),
        "--color never ignored"
    );

    // A missing snapshot: fails, naming the command that creates it.
    let missing = dir.path().join("missing.sql");
    let mut cmd = xtask(&[
        "schema-snapshot",
        "--check",
        "--output",
        missing.to_str().unwrap(),
    ]);
    cmd.env("NETPOINT_DATABASE_URL", pg.url("netpoint"));
    let out = run(cmd).fails_with("does not exist");
    let create = format!(
        "`cargo xtask schema-snapshot --output {}`",
        missing.display()
    );
    assert!(
        out.stderr.contains(&create),
        "expected {create} in:\n{}",
        out.stderr
    );
    assert!(!missing.exists());
}

/// Every kind of object pg_dump writes shows in `--check --summary`: a check that fails never
/// comes with a summary saying there are no changes.
#[test]
fn check_summary_names_every_kind_of_change() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let committed = fixtures().join("schema.sql");
    let committed_before = fs::read(&committed).unwrap();
    let check = |db: &str, output: &Path| {
        let mut cmd = xtask(&[
            "schema-snapshot",
            "--check",
            "--output",
            output.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ]);
        cmd.env("NETPOINT_DATABASE_URL", pg.url(db));
        run(cmd)
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "policy",
            "create policy site_reader on dcim_site for select using (true)",
            &["- Policy `site_reader` on `public.dcim_site` added"],
        ),
        (
            "row-level security",
            "alter table dcim_site enable row level security",
            &["- Row-level security enabled on `public.dcim_site`"],
        ),
        (
            "forced row-level security",
            "alter table dcim_site force row level security",
            &["- Table `public.dcim_site`: `ALTER TABLE ONLY public.dcim_site FORCE ROW LEVEL SECURITY;` added"],
        ),
        (
            "rule",
            "create rule dcim_site_keep as on delete to dcim_site do instead nothing",
            &["- Rule `dcim_site_keep` on `public.dcim_site` added"],
        ),
        (
            "trigger and its function",
            "create function public.touch() returns trigger language plpgsql as $$ begin return new; end $$; \
             create trigger dcim_site_touch before update on dcim_site for each row execute function touch()",
            &[
                "- Function `public.touch()` added",
                "- Trigger `dcim_site_touch` on `public.dcim_site` added",
            ],
        ),
        (
            "publication",
            "create publication netpoint_pub for table dcim_site",
            &[
                "- Publication `netpoint_pub` added",
                "- Table `public.dcim_site` added to publication `netpoint_pub`",
            ],
        ),
        (
            "changed function",
            "create or replace function public.dcim_rack_units_free(p_rack bigint) returns integer \
             language sql stable as $$ select 0 $$",
            &["- Function `public.dcim_rack_units_free(bigint)` changed"],
        ),
        (
            "type and domain",
            "create type public.rack_face as enum ('front', 'rear'); \
             create domain public.positive_units as integer check (value > 0)",
            &[
                "- Type `public.rack_face` added",
                "- Domain `public.positive_units` added",
            ],
        ),
        (
            "extension",
            "create extension pg_trgm",
            &["- Extension `pg_trgm` added"],
        ),
        (
            "comments",
            "comment on table dcim_site is 'Where racks stand.'; \
             comment on column dcim_site.facility is 'Building code'",
            &[
                "- Comment on table `public.dcim_site` changed",
                "- Comment on column `public.dcim_site.facility` added",
            ],
        ),
        (
            "extended statistics and materialized view",
            "create statistics dcim_site_place on status, facility from dcim_site; \
             create materialized view public.site_names as select name from dcim_site",
            &[
                "- Extended statistics `public.dcim_site_place` added",
                "- Materialized view `public.site_names` added",
            ],
        ),
    ];
    for (i, (what, sql, expected)) in cases.iter().enumerate() {
        let db = format!("kind{i}");
        pg.psql(
            "postgres",
            &format!("create database {db} template netpoint"),
        );
        pg.psql(&db, sql);
        let out = check(&db, &committed).fails_with("differs from fixtures/schema.sql");
        let text = fs::read_to_string(&summary).unwrap();
        assert!(
            !text.contains("No schema changes"),
            "{what}: the check failed but the summary says nothing changed:\n{text}\n{}",
            out.stdout
        );
        for line in *expected {
            assert!(
                text.lines().any(|l| l == *line),
                "{what}: the summary lacks `{line}`:\n{text}"
            );
        }
    }
    assert_eq!(
        fs::read(&committed).unwrap(),
        committed_before,
        "--check must not write the snapshot"
    );

    // A snapshot that differs from the live schema only in its layout (one blank line more)
    // fails the check, and the summary says so too.
    let relaid = dir.path().join("schema.sql");
    let text = String::from_utf8(committed_before.clone()).unwrap();
    let at = text.find("\n--\n-- Name: dcim_site;").unwrap();
    fs::write(&relaid, format!("{}\n{}", &text[..at], &text[at..])).unwrap();
    check("netpoint", &relaid).fails_with("differs from");
    let text = fs::read_to_string(&summary).unwrap();
    assert!(
        text.contains("- Other changes (layout or order of the dump): see the diff"),
        "{text}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_keep_the_output() {
    let pg = Pg::start(15);
    pg.create_db("netpoint");
    pg.psql("netpoint", "create table kept (id int primary key)");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("schema.sql");
    fs::write(&output, "-- the previous snapshot\n").unwrap();
    let before = tree(dir.path());
    let out_arg = output.to_str().unwrap();
    let no_tools = tempfile::tempdir().unwrap();
    let closed = free_port();

    let snapshot = |url: &str| xtask(&["schema-snapshot", "--source", url, "--output", out_arg]);
    let cases: Vec<(&str, std::process::Command, Vec<String>)> = vec![
        (
            "malformed URL",
            snapshot("postgres//netpoint"),
            vec!["malformed database URL".into()],
        ),
        (
            "closed port",
            snapshot(&format!(
                "postgres://postgres:pw@127.0.0.1:{closed}/netpoint"
            )),
            vec![format!("127.0.0.1:{closed}"), "connection refused".into()],
        ),
        (
            "unknown host",
            snapshot("postgres://postgres:pw@nonexistent.invalid/netpoint"),
            vec!["unknown host".into(), "nonexistent.invalid".into()],
        ),
        (
            "wrong password",
            snapshot(&format!(
                "postgres://postgres:wrong@127.0.0.1:{}/netpoint",
                pg.port
            )),
            vec![format!(
                "wrong password for user `postgres` at 127.0.0.1:{}",
                pg.port
            )],
        ),
        (
            "missing database",
            snapshot(&pg.url("no_such_db")),
            vec![format!(
                "database `no_such_db` does not exist at 127.0.0.1:{}",
                pg.port
            )],
        ),
        (
            "missing client tools",
            {
                let mut cmd = snapshot(&pg.url("netpoint"));
                cmd.env("PATH", no_tools.path());
                cmd
            },
            vec!["no psql on PATH".into(), "postgresql-client".into()],
        ),
        (
            "no database given",
            xtask(&["schema-snapshot", "--output", out_arg]),
            vec!["no database given: pass --source URL or set NETPOINT_DATABASE_URL".into()],
        ),
        (
            "output under a missing directory",
            snapshot_cmd(&pg.url("netpoint"), &dir.path().join("missing/schema.sql")),
            vec![format!(
                "directory {} does not exist",
                dir.path().join("missing").display()
            )],
        ),
        (
            "output under a regular file",
            snapshot_cmd(&pg.url("netpoint"), &output.join("schema.sql")),
            vec![format!("{out_arg} is not a directory")],
        ),
        (
            "output is a directory",
            snapshot_cmd(&pg.url("netpoint"), dir.path()),
            vec![format!(
                "--output {} is a directory: give a file path, such as {}",
                dir.path().display(),
                dir.path().join("schema.sql").display()
            )],
        ),
        (
            "summary is a directory",
            check_with_summary(&pg.url("netpoint"), out_arg, dir.path()),
            vec![format!(
                "--summary {} is a directory: give a file path",
                dir.path().display()
            )],
        ),
        (
            "summary is the snapshot",
            check_with_summary(&pg.url("netpoint"), out_arg, &output),
            vec![format!(
                "--summary {out_arg} is the snapshot itself, which the summary would replace"
            )],
        ),
        (
            "summary is the snapshot by another path",
            check_with_summary(
                &pg.url("netpoint"),
                out_arg,
                &dir.path()
                    .join("..")
                    .join(dir.path().file_name().unwrap())
                    .join("schema.sql"),
            ),
            vec!["is the snapshot itself".into()],
        ),
    ];
    for (what, cmd, needles) in cases {
        eprintln!("case: {what}");
        // Non-zero exit, exactly one `error:` line, saying what is wrong.
        let out = run(cmd).fails_with(&needles[0]);
        for needle in &needles[1..] {
            assert!(
                out.stderr.contains(needle),
                "{what}: expected `{needle}` in:\n{}",
                out.stderr
            );
        }
        assert_eq!(
            tree(dir.path()),
            before,
            "{what}: the output directory changed"
        );
    }

    // A read-only directory. Tests may run as root, which ignores mode 0555, so use sysfs:
    // nobody, root included, can create a file in /sys.
    let probe = Path::new("/sys").join(marker("probe"));
    assert!(
        fs::write(&probe, "x").is_err(),
        "/sys is writable here; the read-only case needs another place"
    );
    let readonly = Path::new("/sys").join(format!("{}.sql", marker("schema")));
    run(snapshot_cmd(&pg.url("netpoint"), &readonly))
        .fails_with("cannot write to /sys: check that it is writable");
    assert!(!readonly.exists());

    // The same server and output work once the input is right.
    run(snapshot_cmd(&pg.url("netpoint"), &output)).ok();
    assert!(fs::read_to_string(&output)
        .unwrap()
        .contains("CREATE TABLE public.kept"));
}

fn check_with_summary(url: &str, output: &str, summary: &Path) -> std::process::Command {
    xtask(&[
        "schema-snapshot",
        "--source",
        url,
        "--output",
        output,
        "--check",
        "--summary",
        summary.to_str().unwrap(),
    ])
}

fn snapshot_cmd(url: &str, output: &Path) -> std::process::Command {
    xtask(&[
        "schema-snapshot",
        "--source",
        url,
        "--output",
        output.to_str().unwrap(),
    ])
}

/// Fake `pg_dump` and `psql` that record their argv and environment, then run the real tools.
fn recording_tools(dir: &Path) -> (PathBuf, PathBuf) {
    let (argv_log, env_log) = (dir.join("argv.log"), dir.join("env.log"));
    for tool in ["pg_dump", "psql"] {
        let real = which(tool);
        let script = format!(
            "#!/bin/sh\n\
             {{ printf '%s' \"$0\"; for arg in \"$@\"; do printf ' %s' \"$arg\"; done; echo; }} >> '{argv}'\n\
             {{ echo \"== $0\"; env; }} >> '{env}'\n\
             exec '{real}' \"$@\"\n",
            argv = argv_log.display(),
            env = env_log.display(),
            real = real.display(),
        );
        let path = dir.join(tool);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    (argv_log, env_log)
}

#[test]
fn the_password_stays_in_the_environment() {
    let secret = marker("secret");
    let pg = Pg::start_with_password(15, &secret);
    pg.load_fixture("netpoint");
    let bin = tempfile::tempdir().unwrap();
    let (argv_log, env_log) = recording_tools(bin.path());
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("schema.sql");
    let tampered = out_dir.path().join("tampered.sql");
    let summary = out_dir.path().join("summary.md");
    let url = pg.url("netpoint");
    assert!(url.contains(&secret));

    // Host tools only: the recording ones come first on PATH.
    let xtask_recorded = |args: &[&str]| {
        let mut full = vec!["--pg-tools", "host", "schema-snapshot", "--source"];
        full.extend_from_slice(args);
        let mut cmd = xtask(&full);
        cmd.env("PATH", &path);
        run(cmd)
    };
    let out = output.to_str().unwrap();
    let mut runs = vec![("write", xtask_recorded(&[&url, "--output", out]).ok())];
    fs::write(
        &tampered,
        fs::read_to_string(&output).unwrap().replace(
            "CREATE TABLE public.dcim_site (",
            "CREATE TABLE public.dcim_site_old (",
        ),
    )
    .unwrap();
    runs.push((
        "check",
        xtask_recorded(&[&url, "--output", out, "--check"]).ok(),
    ));
    runs.push((
        "verbose",
        xtask_recorded(&[&url, "--output", out, "--check", "-v"]).ok(),
    ));
    let tampered_arg = tampered.to_str().unwrap();
    let summary_arg = summary.to_str().unwrap();
    runs.push((
        "check with a diff",
        xtask_recorded(&[
            &url,
            "--output",
            tampered_arg,
            "--check",
            "--summary",
            summary_arg,
            "-v",
        ])
        .fails_with("differs from"),
    ));
    let wrong_db = pg.url("no_such_db");
    runs.push((
        "wrong database",
        xtask_recorded(&[&wrong_db, "--output", out, "-v"]).fails_with("does not exist"),
    ));

    // The runs did show the connection (masked), and verbose mode showed the commands.
    let masked = format!("postgres://postgres:***@127.0.0.1:{}", pg.port);
    assert!(
        runs[3].1.output().contains(&masked),
        "{}",
        runs[3].1.output()
    );
    assert!(
        runs[2].1.stderr.contains("--schema-only"),
        "verbose shows no pg_dump command:\n{}",
        runs[2].1.stderr
    );
    for (what, run) in &runs {
        assert!(
            !run.output().contains(&secret),
            "{what}: the password is in the output:\n{}",
            run.output()
        );
    }
    assert!(
        contains_anywhere(out_dir.path(), &secret).is_empty(),
        "the password is in a written file"
    );

    // Every tool invocation was recorded, none with the password in argv, each with it in
    // its environment (which is where libpq takes it from).
    let argv = fs::read_to_string(&argv_log).unwrap();
    let env = fs::read_to_string(&env_log).unwrap();
    assert!(
        argv.lines()
            .any(|l| l.contains("/pg_dump ") && l.contains("--schema-only")),
        "pg_dump not recorded:\n{argv}"
    );
    assert!(
        argv.lines()
            .any(|l| l.contains("/psql ") && l.contains(" -c ")),
        "psql not recorded:\n{argv}"
    );
    assert!(
        !argv.contains(&secret),
        "the password is in a command line:\n{argv}"
    );
    assert!(
        env.contains(&format!("PGPASSWORD={secret}\n")),
        "the recording shows no PGPASSWORD"
    );
}

#[test]
fn help_lists_each_command_on_one_line() {
    let help = run(xtask(&["--help"])).ok().stdout;
    for command in ["schema-snapshot", "clone-prod", "seed-dev"] {
        let lines: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{command} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{command} should have one line in:\n{help}");
        let description = lines[0].trim_start()[command.len()..].trim();
        assert!(
            description.len() > 10,
            "{command} has no description: {}",
            lines[0]
        );
        // The line is complete: the next one is another command or the end of the list.
        let next = help
            .lines()
            .skip_while(|l| *l != lines[0])
            .nth(1)
            .unwrap_or("");
        assert!(
            next.is_empty() || (next.starts_with("  ") && !next.starts_with("   ")),
            "{command}'s entry wraps: {next:?}"
        );
    }
    // Through the cargo alias, as the README tells developers to run it.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["xtask", "--help"])
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), help);
}

/// The tables of the diagram test before its migration.
const DIAGRAM_BEFORE: &str = "\
create table dcim_site (id bigint primary key, name varchar(100) not null, \"legacy-code\" varchar(150), created timestamptz);
create table dcim_rack (id bigint primary key, site_id bigint not null references dcim_site (id), name varchar(100) not null);
create index dcim_rack_site_idx on dcim_rack (site_id);
create table dcim_device (id bigint primary key, rack_id bigint references dcim_rack (id), name text);";

/// A table added with a foreign key, a column dropped, a unique constraint added, an index renamed.
const DIAGRAM_MIGRATION: &str = "\
create table dcim_cable (id bigint primary key, device_id bigint references dcim_device (id), \"end\" varchar(150) not null);
alter table dcim_site drop column \"legacy-code\";
alter table dcim_rack add constraint dcim_rack_site_name_uniq unique (site_id, name);
alter index dcim_rack_site_idx rename to dcim_rack_site_id_idx;";

/// Mermaid's CLI as `scripts/test-prereqs.sh` installs it, driving Debian's chromium.
fn mermaid_cli() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("NETPOINT_MERMAID_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/netpoint-mermaid"));
    let (mmdc, config) = (
        dir.join("node_modules/.bin/mmdc"),
        dir.join("puppeteer.json"),
    );
    assert!(
        mmdc.exists() && config.exists(),
        "no Mermaid CLI in {}: run scripts/test-prereqs.sh (or set NETPOINT_MERMAID_DIR)",
        dir.display()
    );
    (mmdc, config)
}

/// Renders Mermaid source to SVG with Mermaid itself; panics on any error it reports.
fn render_mermaid(source: &str, dir: &Path, name: &str) -> PathBuf {
    let (mmdc, config) = mermaid_cli();
    let (input, svg) = (
        dir.join(format!("{name}.mmd")),
        dir.join(format!("{name}.svg")),
    );
    fs::write(&input, source).unwrap();
    let out = std::process::Command::new(mmdc)
        .arg("--puppeteerConfigFile")
        .arg(config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&svg)
        .arg("--quiet")
        .output()
        .expect("running mmdc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "mmdc failed on\n{source}\n{stderr}"
    );
    let drawn = fs::read_to_string(&svg).unwrap();
    assert!(
        drawn.contains("<svg") && !drawn.contains("Syntax error"),
        "{drawn}"
    );
    svg
}

#[test]
fn summary_diagram_of_a_migration_renders_with_mermaid() {
    let pg = Pg::start(15);
    pg.create_db("netpoint");
    pg.psql("netpoint", DIAGRAM_BEFORE);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("schema.sql");
    let before = snapshot_to(&pg.url("netpoint"), &output);
    pg.psql("netpoint", DIAGRAM_MIGRATION);
    let summary = dir.path().join("summary.md");
    run(check_with_summary(
        &pg.url("netpoint"),
        output.to_str().unwrap(),
        &summary,
    ))
    .fails_with("differs from");
    let markdown = fs::read_to_string(&summary).unwrap();
    let source = markdown
        .split_once("```mermaid\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .map(|(source, _)| source)
        .unwrap_or_else(|| panic!("no diagram in\n{markdown}"));
    for expected in [
        "dcim_cable[\"dcim_cable (new)\"] {",
        "varchar(150) legacy-code \"removed\"",
        "unique dcim_rack_site_name_uniq \"added\"",
        "index dcim_rack_site_id_idx \"renamed from dcim_rack_site_idx\"",
        "dcim_device |o--o{ dcim_cable : \"device_id (added)\"",
    ] {
        assert!(
            source.contains(expected),
            "{expected:?} missing in\n{source}"
        );
    }
    // The list stays below the diagram.
    assert!(markdown.find("```mermaid").unwrap() < markdown.find("- ").unwrap());
    let svg = render_mermaid(source, dir.path(), "migration");
    if let Some(keep) = std::env::var_os("NETPOINT_KEEP_DIAGRAM") {
        fs::copy(&svg, keep).unwrap();
    }

    // `--diagram` draws the committed file the same way, with no database at all.
    let drawn = dir.path().join("tables.mmd");
    let diagram = |extra: &[&str]| {
        let mut args = vec![
            "schema-snapshot",
            "--output",
            output.to_str().unwrap(),
            "--diagram",
            drawn.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        xtask(&args)
    };
    run(diagram(&["--tables", "dcim_r*"])).ok();
    let text = fs::read_to_string(&drawn).unwrap();
    assert!(
        text.contains("dcim_rack {") && text.contains("dcim_site {"),
        "{text}"
    );
    assert!(
        !text.contains("(changed)") && !text.contains("(new)"),
        "{text}"
    );
    render_mermaid(&text, dir.path(), "tables");
    run(diagram(&["--tables", "dcim_r*", "--check"])).ok();
    run(diagram(&["--check"])).fails_with("update it with");
    run(diagram(&["--tables", "nothing_here"])).fails_with("--tables");
    assert_eq!(fs::read_to_string(&drawn).unwrap(), text);
    drop(before);
}

/// The scrub-coverage gate: a migration's new text column fails `--check` by name until a
/// rule scrubs it or an entry keeps it with a reason; TODO reasons and stale entries fail.
#[test]
fn check_gates_each_column_no_rule_or_entry_covers() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, coverage) = (
        dir.path().join("schema.sql"),
        dir.path().join("coverage.toml"),
    );
    let (summary, rules) = (dir.path().join("summary.md"), dir.path().join("rules.toml"));
    fs::copy(fixtures().join("scrub-coverage.toml"), &coverage).unwrap();
    let url = pg.url("netpoint");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let check = |extra: &[&str]| {
        let (snapshot, coverage) = (arg(&snapshot), arg(&coverage));
        let mut args = vec!["schema-snapshot", "--source", &url, "--output", &snapshot];
        args.extend(["--check", "--scrub-coverage", &coverage]);
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    let migrate = |sql: &str| {
        pg.psql("netpoint", sql);
        run(snapshot_cmd(&url, &snapshot)).ok();
    };

    // The project's schema passes as committed.
    migrate("select 1");
    check(&[]).ok();

    // A migration adds a column for a person's phone number: named, with both fixes.
    migrate("alter table dcim_site add column manager_phone varchar(40)");
    let failed = check(&["--summary", &arg(&summary)]).fails_with("scrub coverage");
    let line = failed
        .stdout
        .lines()
        .find(|l| l.contains("public.dcim_site.manager_phone (character varying(40))"))
        .unwrap_or_else(|| panic!("{}", failed.output()));
    assert!(
        line.contains("--scrub-rules") && line.contains("\"dcim_site.manager_phone\" = "),
        "{line}"
    );
    assert_eq!(
        failed.stdout.matches("scrub coverage:").count(),
        1,
        "{}",
        failed.stdout
    );
    let text = fs::read_to_string(&summary).unwrap();
    let heading = text
        .find("### Scrub coverage")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text[heading..].contains("dcim_site.manager_phone"),
        "{text}"
    );

    // A rule scrubs it.
    fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"manager_phone\"\naction = \"empty\"\n",
    )
    .unwrap();
    check(&["--scrub-rules", &arg(&rules)]).ok();

    // --write-coverage adds an entry whose TODO reason the check refuses.
    let before = fs::read_to_string(&coverage).unwrap();
    run(xtask(&[
        "schema-snapshot",
        "--output",
        &arg(&snapshot),
        "--scrub-coverage",
        &arg(&coverage),
        "--write-coverage",
    ]))
    .ok();
    let written = fs::read_to_string(&coverage).unwrap();
    assert_eq!(
        written,
        format!("{before}\"dcim_site.manager_phone\" = \"TODO: why may this be copied?\"\n")
    );
    let todo = check(&[]).fails_with("scrub coverage");
    assert!(
        todo.stdout
            .contains("\"dcim_site.manager_phone\" (coverage file"),
        "{}",
        todo.stdout
    );
    assert!(todo.stdout.contains("has no reason yet"), "{}", todo.stdout);

    // A reason keeps it.
    fs::write(
        &coverage,
        written.replace(
            "TODO: why may this be copied?",
            "the site's front desk line, reviewed: no person's number",
        ),
    )
    .unwrap();
    check(&[]).ok();

    // The column goes: its entry is stale.
    migrate("alter table dcim_site drop column manager_phone");
    let stale = check(&[]).fails_with("scrub coverage");
    assert!(
        stale.stdout.contains("\"dcim_site.manager_phone\"")
            && stale.stdout.contains("names no column"),
        "{}",
        stale.stdout
    );
}
