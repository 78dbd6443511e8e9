//! Client tools chosen by server major, clones across majors, and no host tools at all.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use crate::harness::{fixtures, run, tree, xtask, Pg};

/// Row counts of every table, with the changelog's left out of the comparison.
fn rows_without_changelog(pg: &Pg, db: &str) -> Vec<(String, i64)> {
    pg.row_counts(db)
        .into_iter()
        .filter(|(t, _)| t != "public.extras_objectchange")
        .collect()
}

/// Direct, export and import from `source` to `target`; every mode gives the source's rows
/// and media.
fn clone_every_mode(source: &Pg, target: &Pg) {
    source.load_prod("prod");
    let expected = rows_without_changelog(source, "prod");
    let work = tempfile::tempdir().unwrap();
    let media = |name: &str| work.path().join(name);
    let media_src = fixtures().join("media");

    run(xtask(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--target",
        &target.url("direct"),
        "--source-media",
        media_src.to_str().unwrap(),
        "--target-media",
        media("direct").to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        rows_without_changelog(target, "direct"),
        expected,
        "direct {} → {}",
        source.major,
        target.major
    );
    assert_eq!(tree(&media("direct")), tree(&media_src));

    let bundle = work.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--out",
        bundle.to_str().unwrap(),
        "--source-media",
        media_src.to_str().unwrap(),
    ]))
    .ok();
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source"]["server_major"], source.major);
    run(xtask(&[
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &target.url("imported"),
        "--target-media",
        media("imported").to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        rows_without_changelog(target, "imported"),
        expected,
        "import {} → {}",
        source.major,
        target.major
    );
    assert_eq!(tree(&media("imported")), tree(&media_src));
    assert_eq!(
        target.psql("imported", "select count(*) from extras_objectchange"),
        "0"
    );
}

#[test]
fn upgrade_13_to_15_in_every_mode() {
    clone_every_mode(&Pg::start(13), &Pg::start(15));
}

#[test]
fn upgrade_15_to_17_in_every_mode() {
    clone_every_mode(&Pg::start(15), &Pg::start(17));
}

#[test]
fn same_major_17_and_guarded_downgrade_to_15() {
    let source = Pg::start(17);
    let same = Pg::start(17);
    source.load_prod("prod");
    let expected = rows_without_changelog(&source, "prod");
    run(xtask(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--target",
        &same.url("dev"),
    ]))
    .ok();
    assert_eq!(rows_without_changelog(&same, "dev"), expected);

    let older = Pg::start(15);
    older.load_fixture("dev");
    let before = older.fingerprint("dev");
    let refused = run(xtask(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--target",
        &older.url("dev"),
        "--yes",
    ]))
    .fails_with("--allow-downgrade");
    assert!(
        refused.stderr.contains("PostgreSQL 17") && refused.stderr.contains("PostgreSQL 15"),
        "{}",
        refused.stderr
    );
    older.assert_unchanged(
        "dev",
        &before,
        "a refused downgrade leaves the target as it was",
    );

    run(xtask(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--target",
        &older.url("dev"),
        "--yes",
        "--allow-downgrade",
    ]))
    .ok();
    assert_eq!(rows_without_changelog(&older, "dev"), expected);
    assert!(
        older.databases().iter().all(|d| !d.contains("__np")),
        "no temporary database left"
    );
}

/// A directory holding only a `docker` that forwards to the real one, except that it
/// pretends the images in `missing` do not exist.
fn path_without_pg_tools(dir: &Path, missing: &[u32]) -> String {
    let real = crate::harness::which("docker");
    let real = real.to_str().unwrap();
    let mut script = String::from("#!/bin/sh\n");
    for major in missing {
        script.push_str(&format!(
            "case \"$*\" in *\"image inspect postgres:{major}\"*|*\"pull --quiet postgres:{major}\"*) exit 1;; esac\n"
        ));
    }
    script.push_str(&format!("exec {real} \"$@\"\n"));
    let docker = dir.join("docker");
    fs::write(&docker, script).unwrap();
    fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn every_command_works_without_host_client_tools() {
    let source = Pg::start(15);
    let target = Pg::start(15);
    source.load_prod("prod");
    let bin = tempfile::tempdir().unwrap();
    let path = path_without_pg_tools(bin.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let hidden = |args: &[&str]| {
        let mut cmd = xtask(args);
        cmd.env("PATH", &path);
        cmd
    };
    let no_tools = run(hidden(&[
        "--pg-tools",
        "host",
        "schema-snapshot",
        "--source",
        &source.url("prod"),
        "--output",
        "/dev/null",
    ]))
    .fails_with("no psql on PATH");
    assert!(
        no_tools.stderr.contains("postgresql-client"),
        "{}",
        no_tools.stderr
    );

    let docker_snapshot = work.path().join("docker.sql");
    let host_snapshot = work.path().join("host.sql");
    let verbose = run(hidden(&[
        "-v",
        "schema-snapshot",
        "--source",
        &source.url("prod"),
        "--output",
        docker_snapshot.to_str().unwrap(),
    ]))
    .ok();
    assert!(
        verbose
            .stderr
            .contains("using pg_dump from docker image postgres:15"),
        "{}",
        verbose.stderr
    );
    run(xtask(&[
        "schema-snapshot",
        "--source",
        &source.url("prod"),
        "--output",
        host_snapshot.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        fs::read(&docker_snapshot).unwrap(),
        fs::read(&host_snapshot).unwrap(),
        "same bytes from host and Docker tools"
    );
    run(hidden(&[
        "schema-snapshot",
        "--source",
        &source.url("prod"),
        "--output",
        docker_snapshot.to_str().unwrap(),
        "--check",
    ]))
    .ok();

    let expected = rows_without_changelog(&source, "prod");
    run(hidden(&[
        "clone-prod",
        "--source",
        &source.url("prod"),
        "--target",
        &target.url("cloned"),
    ]))
    .ok();
    assert_eq!(rows_without_changelog(&target, "cloned"), expected);

    let media = work.path().join("media");
    run(hidden(&[
        "seed-dev",
        "--target",
        &target.url("seeded"),
        "--target-media",
        media.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(tree(&media), tree(&fixtures().join("media")));
    assert!(
        target
            .psql("seeded", "select count(*) from dcim_site")
            .parse::<i64>()
            .unwrap()
            > 0
    );
}

/// Docker Desktop, colima and OrbStack run containers in a VM, where host networking does
/// not reach this machine's loopback: there the tools connect to `host.docker.internal`
/// (on Linux, the bridge's gateway, which reaches a published port all the same), while
/// the URL's host still picks the passfile's entry.
#[test]
fn docker_tools_reach_a_loopback_server_through_the_gateway() {
    let pg = Pg::start(15);
    pg.load_prod("prod");
    let bin = tempfile::tempdir().unwrap();
    let path = path_without_pg_tools(bin.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    // No password in the URL: only a passfile entry for the host as the URL spells it.
    let passfile = work.path().join("pgpass");
    fs::write(
        &passfile,
        format!("localhost:{}:*:postgres:{}\n", pg.port, pg.password),
    )
    .unwrap();
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    let url = |db: &str| {
        format!(
            "postgres://postgres@localhost:{}/{db}?passfile={}",
            pg.port,
            passfile.display()
        )
    };
    let gateway = |args: &[&str]| {
        let mut cmd = xtask(args);
        cmd.env("PATH", &path)
            .env("NETPOINT_DOCKER_NETWORK", "gateway");
        cmd
    };
    let snapshot = work.path().join("schema.sql");
    let ran = run(gateway(&[
        "-v",
        "schema-snapshot",
        "--source",
        &url("prod"),
        "--output",
        snapshot.to_str().unwrap(),
    ]))
    .ok();
    assert!(
        ran.stderr
            .contains("--add-host=host.docker.internal:host-gateway")
            && !ran.stderr.contains("--network host"),
        "{}",
        ran.stderr
    );
    assert!(fs::read_to_string(&snapshot)
        .unwrap()
        .contains("CREATE TABLE public.dcim_site ("));
    run(gateway(&[
        "clone-prod",
        "--source",
        &url("prod"),
        "--target",
        &url("cloned"),
    ]))
    .ok();
    assert_eq!(
        rows_without_changelog(&pg, "cloned"),
        rows_without_changelog(&pg, "prod")
    );

    let mut wrong = gateway(&[
        "schema-snapshot",
        "--source",
        &url("prod"),
        "--output",
        "/dev/null",
    ]);
    wrong.env("NETPOINT_DOCKER_NETWORK", "bridge");
    run(wrong).fails_with("NETPOINT_DOCKER_NETWORK is `bridge`: set it to `host`");
}

#[test]
fn a_server_major_without_tools_or_image_is_a_clear_error() {
    let pg = Pg::start(15);
    pg.load_fixture("netpoint");
    let bin = tempfile::tempdir().unwrap();
    let path = path_without_pg_tools(bin.path(), &[15]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("schema.sql");
    let mut cmd = xtask(&[
        "schema-snapshot",
        "--source",
        &pg.url("netpoint"),
        "--output",
        file.to_str().unwrap(),
    ]);
    cmd.env("PATH", &path);
    let failed = run(cmd).fails_with("PostgreSQL 15 needs pg_dump 15");
    for remedy in ["postgresql-client-15", "postgres:15"] {
        assert!(
            failed.stderr.contains(remedy),
            "remedy {remedy} missing: {}",
            failed.stderr
        );
    }
    assert!(!file.exists(), "nothing written");
}

#[test]
fn snapshot_check_refuses_a_server_of_another_major() {
    let old = Pg::start(15);
    let new = Pg::start(17);
    old.load_fixture("netpoint");
    new.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schema.sql");
    run(xtask(&[
        "schema-snapshot",
        "--source",
        &old.url("netpoint"),
        "--output",
        file.to_str().unwrap(),
    ]))
    .ok();
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("-- NetPoint schema snapshot, PostgreSQL 15\n"),
        "{}",
        &text[..80]
    );
    run(xtask(&[
        "schema-snapshot",
        "--source",
        &new.url("netpoint"),
        "--output",
        file.to_str().unwrap(),
        "--check",
    ]))
    .fails_with("made from PostgreSQL 15 but");
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}
