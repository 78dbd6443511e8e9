//! The one mode type: every command that writes takes `--dry-run` and changes nothing with
//! it, and every `--check` names the exact command that fixes what it found.

use std::fs;

use crate::harness::{copy_tree, fixtures, run, tree, xtask, Pg};

#[test]
fn every_writing_command_dry_runs_without_changing_anything() {
    let pg = Pg::start(15);
    pg.load_fixture("source");
    pg.create_db("dev");
    let tmp = tempfile::tempdir().unwrap();
    let source = pg.url("source");
    let dev = pg.url("dev");
    let fx = tmp.path().join("fx");
    copy_tree(&fixtures(), &fx);
    let fixtures_before = tree(&fx);
    let media = tmp.path().join("media");
    let databases_before = pg.databases();
    let planned = |args: &[&str]| {
        let out = run(xtask(args)).ok();
        assert!(
            out.stdout
                .starts_with("dry run, nothing will be changed. Plan:\n"),
            "{args:?} printed no plan:\n{}",
            out.output()
        );
        out
    };

    // seed-dev: the fixtures are verified, the target and the media directory stay as they were.
    let seed = planned(&[
        "seed-dev",
        "--dry-run",
        "--fixtures",
        fx.to_str().unwrap(),
        "--target",
        &dev,
        "--target-media",
        media.to_str().unwrap(),
    ]);
    assert!(seed.stdout.contains("checksums of"), "{}", seed.output());
    assert!(
        !seed.stdout.contains("NETPOINT_DATABASE_URL="),
        "{}",
        seed.output()
    );
    assert_eq!(
        pg.row_counts("dev"),
        Vec::new(),
        "a dry run loaded the dev database"
    );
    assert!(!media.exists(), "a dry run created the media directory");

    // Without a database configured, the plan names the container and none is started.
    let container = planned(&[
        "seed-dev",
        "--dry-run",
        "--fixtures",
        fx.to_str().unwrap(),
        "--target-media",
        media.to_str().unwrap(),
    ]);
    assert!(
        container.stdout.contains("  1. ") && container.stdout.contains("container"),
        "{}",
        container.output()
    );
    assert!(!media.exists(), "a dry run created the media directory");

    // seed-dev --refresh: the source is read, the fixtures are not written, nothing is staged.
    let refresh = planned(&[
        "seed-dev",
        "--refresh",
        "--dry-run",
        "--source",
        &source,
        "--fixtures",
        fx.to_str().unwrap(),
    ]);
    assert!(
        refresh.stdout.contains("PostgreSQL 15"),
        "{}",
        refresh.output()
    );
    assert!(
        tree(&fx) == fixtures_before,
        "a dry refresh changed the fixtures"
    );
    let mut beside: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["fx"],
        "a dry refresh left files beside the fixtures"
    );

    // schema-snapshot: says whether the file would change, and leaves it as it is.
    let snapshot = tmp.path().join("fx/schema.sql");
    let unchanged = planned(&[
        "schema-snapshot",
        "--dry-run",
        "--source",
        &source,
        "--output",
        snapshot.to_str().unwrap(),
    ]);
    assert!(
        unchanged.stdout.contains("unchanged"),
        "{}",
        unchanged.output()
    );
    pg.psql(
        "source",
        "alter table public.dcim_site add column mode_test int",
    );
    let changed = planned(&[
        "schema-snapshot",
        "--dry-run",
        "--source",
        &source,
        "--output",
        snapshot.to_str().unwrap(),
    ]);
    assert!(changed.stdout.contains(", changed"), "{}", changed.output());
    assert!(
        tree(&fx) == fixtures_before,
        "a dry snapshot changed the file"
    );

    // The checks name the exact command that brings the files up to date.
    let stale = run(xtask(&[
        "seed-dev",
        "--refresh",
        "--check",
        "--source",
        &source,
        "--fixtures",
        fx.to_str().unwrap(),
    ]))
    .fails_with("out of date");
    let fix = format!(
        "update it with `cargo xtask seed-dev --refresh --source '{}' --fixtures {}`",
        pg.url("source")
            .replace(&format!(":{}@", pg.password), ":***@"),
        fx.display()
    );
    assert!(
        stale.stderr.contains(&fix),
        "`{fix}` missing:\n{}",
        stale.output()
    );
    assert!(!stale.output().contains(&pg.password), "{}", stale.output());
    assert!(
        tree(&fx) == fixtures_before,
        "a failing check changed the fixtures"
    );

    // --check and --dry-run are one mode at a time.
    run(xtask(&["schema-snapshot", "--check", "--dry-run"])).fails_with("cannot be used with");
    assert_eq!(
        pg.databases(),
        databases_before,
        "a dry run created a database"
    );
}
