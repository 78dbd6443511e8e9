//! Attacks on the ready copy of a subset's schema template (`npschema_<hash>_ready`): a
//! database planted or left under the name a run gives its copy of the template, and objects
//! another role leaves in the ready copy. Each test fails until the take checks what it takes.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    harness::{run, wait_for, workspace_root, xtask_bin, Pg, Run},
    subset::{clone, load_schema, loaded, scrubbed, AMS1},
};

/// Django's keys are deferrable: the fixture's schema can then use a template.
fn templatable(pg: &Pg) {
    load_schema(pg, "prod");
    pg.psql(
        "prod",
        "alter table dcim_virtualchassis alter constraint dcim_virtualchassis_master_id_fkey \
         deferrable initially deferred",
    );
}

fn template(pg: &Pg) -> String {
    pg.psql(
        "postgres",
        "select datname from pg_database where datname ~ '^npschema_[0-9a-f]+$'",
    )
}

fn owner(pg: &Pg, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!("select pg_get_userbyid(datdba) from pg_database where datname = '{db}'"),
    )
}

/// Waits for what a subset run leaves to the background: the template's ready copy, and
/// the drop of the target it replaced.
fn settled(pg: &Pg, ready: &str) {
    wait_for("the ready copy", Duration::from_secs(60), || {
        pg.has_db(ready)
    });
    wait_for(
        "the previous target dropped",
        Duration::from_secs(60),
        || pg.temp_dbs().is_empty(),
    );
}

/// `clone-prod --subset` from `prod` into `dev` after `sql` ran on the server, in the same
/// process: `@PID@` in `sql` is the pid the run has (bash `exec`s xtask in its place).
fn clone_after(pg: &Pg, sql: &str, args: &[&str]) -> Run {
    let script = r#"psql -X -q -v ON_ERROR_STOP=1 -c "${NP_SQL//@PID@/$$}" || exit 99
exec env -u PGHOST -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE -u NP_SQL "$0" "$@""#;
    let (source, target) = (pg.url("prod"), pg.url("dev"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .arg(xtask_bin())
        .args([
            "clone-prod",
            "--source",
            &source,
            "--target",
            &target,
            "--yes",
        ])
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .env("NP_SQL", sql)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", &pg.password)
        .env("PGDATABASE", "postgres");
    for (key, _) in std::env::vars() {
        if key.starts_with("NETPOINT_") {
            cmd.env_remove(key);
        }
    }
    run(cmd)
}

/// The take of the ready copy answers `ready` when a database of the run's own temporary
/// name exists, whether or not it renamed the ready copy to it: a database another role
/// planted under that name (the template's hash is in `pg_database`, the run's pid in `ps`)
/// becomes the dev database, with its owner and what it holds.
#[test]
fn a_database_planted_under_the_runs_copy_name_is_never_taken() {
    let pg = Pg::start(15);
    templatable(&pg);
    clone(&pg, &["--subset", "site=ams1"]).ok();
    let template = template(&pg);
    let ready = format!("{template}_ready");
    settled(&pg, &ready);
    // No ready copy yet (the run before is still making it, or the template is new), and a
    // role that may create databases has built the same schema under the name this run
    // will give its copy of the template.
    pg.psql("postgres", &format!("drop database {ready}"));
    pg.psql("postgres", "create role mallory login createdb");
    pg.psql(
        "postgres",
        &format!("create database planted template {template} owner mallory"),
    );
    pg.psql(
        "planted",
        "create table planted (id int); alter table planted owner to mallory",
    );
    let hash = &template["npschema_".len()..][..12];
    let out = clone_after(
        &pg,
        &format!("alter database planted rename to npschematmp_{hash}_@PID@"),
        &["--subset", "site=ams1", "-v"],
    );
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1), "{}", out.output());
    assert_eq!(owner(&pg, "dev"), "postgres", "{}", out.output());
    assert_eq!(
        pg.psql("dev", "select to_regclass('planted') is null"),
        "t",
        "{}",
        out.output()
    );
}

/// With a ready copy there, the same name makes the take's rename fail with a duplicate
/// name, which its block does not catch: the run stops on a message about a database it
/// never asked for, instead of copying the template.
#[test]
fn a_database_under_the_runs_copy_name_does_not_stop_the_run() {
    let pg = Pg::start(15);
    templatable(&pg);
    clone(&pg, &["--subset", "site=ams1"]).ok();
    let template = template(&pg);
    settled(&pg, &format!("{template}_ready"));
    // A build a killed run left under a pid this run now has (pids repeat in containers).
    let hash = &template["npschema_".len()..][..12];
    let out = clone_after(
        &pg,
        &format!("create database npschematmp_{hash}_@PID@"),
        &["--subset", "site=ams1", "-v"],
    );
    assert!(out.status.success(), "{}", out.output());
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1));
}

/// A new database is open to every role (CONNECT to PUBLIC), and on PostgreSQL 13 and 14
/// so is its `public` schema (CREATE to PUBLIC): a role that may only log in leaves a table
/// in the ready copy, owned by the run's role as the take requires, and the next subset
/// renames it in as the dev database.
#[test]
fn on_postgres_13_nobody_plants_objects_in_the_ready_copy() {
    let pg = Pg::start(13);
    templatable(&pg);
    clone(&pg, &["--subset", "site=ams1"]).ok();
    let template = template(&pg);
    let ready = format!("{template}_ready");
    settled(&pg, &ready);
    pg.psql("postgres", "create role mallory login password 'mallory'");
    // Whether it may or not, it tries.
    let _ = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("create table public.planted (id int)")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", pg.port.to_string())
        .env("PGUSER", "mallory")
        .env("PGPASSWORD", "mallory")
        .env("PGDATABASE", &ready)
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    let out = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1));
    assert_eq!(
        pg.psql("dev", "select to_regclass('planted') is null"),
        "t",
        "{}",
        out.output()
    );
}
