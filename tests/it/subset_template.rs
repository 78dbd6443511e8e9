//! A subset's schema copied from a template on the target server (`npschema_<hash>`): built
//! once per schema, taken when the foreign keys allow the rows to go into keyed tables, the
//! rows then exactly those of a built schema; after each run a ready copy of the template
//! is made in the background, which the next run renames into place; a template or ready
//! copy another role made is never used; a changed schema gets its own template, a server
//! keeps three, and a build an interrupted run left is removed.

use std::time::Duration;

use crate::{
    harness::{wait_for, Pg},
    subset::{clone, load_schema, loaded, scrubbed, valid_fks, AMS1},
};

/// The templates, oldest first, without their ready copies.
fn templates(pg: &Pg) -> String {
    pg.psql(
        "postgres",
        "select coalesce(string_agg(datname, ',' order by oid), '') from pg_database \
         where datname like 'npschema%' and datname not like '%\\_ready'",
    )
}

fn exists(pg: &Pg, database: &str) -> bool {
    pg.databases().iter().any(|d| d == database)
}

/// Waits for the ready copy of `template` a run started in the background, and for the
/// previous target it drops there.
fn wait_for_background(pg: &Pg, template: &str) {
    let ready = format!("{template}_ready");
    wait_for("the template's ready copy", Duration::from_secs(60), || {
        exists(pg, &ready)
    });
    wait_for(
        "the previous target dropped",
        Duration::from_secs(60),
        || pg.temp_dbs().is_empty(),
    );
}

#[test]
fn subset_rows_go_into_a_copy_of_the_schema_template() {
    for major in [13, 17] {
        let pg = Pg::start(major);
        load_schema(&pg, "prod");
        // As the fixture stands, a virtual chassis and its master device reference each other
        // through keys that cannot be deferred: no order loads them, the schema is built.
        let built = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            built.output().contains(
                "building the schema anew: foreign keys that cannot be deferred form a cycle"
            ),
            "{}",
            built.output()
        );
        assert_eq!(
            templates(&pg),
            "",
            "no template for a schema that cannot use one"
        );
        let rows = loaded(&pg, "dev");
        assert_eq!(rows, scrubbed(AMS1), "PostgreSQL {major}");

        // Django's keys are DEFERRABLE INITIALLY DEFERRED: the cycle then waits for the commit.
        pg.psql(
            "prod",
            "alter table dcim_virtualchassis alter constraint dcim_virtualchassis_master_id_fkey \
             deferrable initially deferred",
        );
        // A build an interrupted run left behind (its pid is not alive) is removed.
        pg.psql(
            "postgres",
            "create database npschematmp_0123456789ab_4194999",
        );
        let first = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        let shown = first.output();
        assert!(
            shown.contains("schema copied from the new template npschema_"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "removing npschematmp_0123456789ab_4194999, left behind by an interrupted run"
            ),
            "{shown}"
        );
        assert_eq!(
            loaded(&pg, "dev"),
            rows,
            "PostgreSQL {major}: the same rows"
        );
        assert_eq!(valid_fks(&pg, "dev"), valid_fks(&pg, "prod"));
        // The source is only read (the server's databases count in its fingerprint: taken
        // with the template there).
        let before = pg.fingerprint("prod");
        let template = templates(&pg);
        assert!(
            template.starts_with("npschema_") && !template.contains(','),
            "{template}"
        );
        // The run left a ready copy of it, made in the background, which the next run renames
        // into place; that run leaves the next ready copy.
        wait_for_background(&pg, &template);
        let second = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            second.output().contains(&format!(
                "schema from the ready copy of the template {template}"
            )),
            "{}",
            second.output()
        );
        assert_eq!(loaded(&pg, "dev"), rows);
        wait_for_background(&pg, &template);
        // Without a ready copy, the template is copied while the subset is computed; it is
        // never connected to.
        pg.psql("postgres", &format!("drop database {template}_ready"));
        let copied = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            copied.output().contains(&format!(
                "schema copied from the template {template} while the subset was computed"
            )),
            "{}",
            copied.output()
        );
        assert_eq!(loaded(&pg, "dev"), rows);
        wait_for_background(&pg, &template);
        assert_eq!(
            pg.psql(
                "dev",
                "select string_agg(conname, ',') from pg_constraint where contype = 'f' and not convalidated"
            ),
            ""
        );
        // A row the subset leaves out is refused at the commit, as a built schema refuses it
        // when its constraint is added; the target stays as it was.
        let dev = pg.fingerprint("dev");
        let work = tempfile::tempdir().unwrap();
        let rules = work.path().join("subset.toml");
        std::fs::write(
            &rules,
            "version = 1\ncut = [\"dcim_device.device_type_id\"]\n",
        )
        .unwrap();
        clone(
            &pg,
            &[
                "--subset",
                "site=ams1",
                "--subset-rules",
                rules.to_str().unwrap(),
            ],
        )
        .fails_with("violates foreign key constraint");
        // It had taken the ready copy: it started the next one all the same.
        wait_for_background(&pg, &template);
        pg.assert_unchanged("dev", &dev, "a refused subset changes nothing");
        // Neither it nor a refused target nor a dry run leaves a copy of the template.
        clone(&pg, &["--subset", "site=nowhere"]).fails_with("matches no row");
        clone(&pg, &["--subset", "site=ams1", "--dry-run"]).ok();
        assert_eq!(pg.temp_dbs(), Vec::<String>::new());
        assert_eq!(templates(&pg), template);
        assert!(exists(&pg, &format!("{template}_ready")));

        // A template or ready copy of another role (one that may create databases could
        // plant one under the name) is never copied: the schema is built anew.
        pg.psql("postgres", "create role mallory login createdb");
        let ready = format!("{template}_ready");
        pg.psql("postgres", &format!("drop database {ready}"));
        pg.psql(
            "postgres",
            &format!("create database {ready} owner mallory"),
        );
        pg.psql(&ready, "create table planted (id int)");
        let planted = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            planted.output().contains(&format!(
                "schema copied from the template {template} while the subset was computed"
            )),
            "{}",
            planted.output()
        );
        assert_eq!(loaded(&pg, "dev"), rows);
        pg.psql("postgres", &format!("drop database {ready}"));
        pg.psql("postgres", &format!("drop database {template}"));
        pg.psql(
            "postgres",
            &format!("create database {template} owner mallory"),
        );
        pg.psql(&template, "create table planted (id int)");
        let refused = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            refused.output().contains(&format!(
                "warning: the template {template} belongs to the role mallory, not to this run's, so it is never copied and each subset builds its schema anew: ask mallory or a superuser to drop it"
            )),
            "{}",
            refused.output()
        );
        assert_eq!(loaded(&pg, "dev"), rows);
        assert_eq!(pg.psql("dev", "select to_regclass('planted') is null"), "t");
        wait_for(
            "the previous target dropped",
            Duration::from_secs(60),
            || pg.temp_dbs().is_empty(),
        );
        assert!(!exists(&pg, &ready), "no ready copy of a planted template");
        pg.psql("postgres", &format!("drop database {template}"));
        pg.psql("postgres", "drop role mallory");
        clone(&pg, &["--subset", "site=ams1"]).ok();
        wait_for_background(&pg, &template);

        // A changed schema gets a template of its own; past three, the oldest goes.
        pg.assert_unchanged("prod", &before, "the source is only read");
        for name in ["npschema_aaaa", "npschema_bbbb"] {
            pg.psql("postgres", &format!("create database {name}"));
        }
        pg.psql("prod", "alter table dcim_site add column note text");
        let changed = clone(&pg, &["--subset", "site=ams1", "-v"]).ok();
        assert!(
            changed
                .output()
                .contains("schema copied from the new template npschema_"),
            "{}",
            changed.output()
        );
        let now = templates(&pg);
        assert!(!now.split(',').any(|t| t == template), "{now}");
        assert!(
            !exists(&pg, &format!("{template}_ready")),
            "pruned with its template"
        );
        assert_eq!(now.split(',').count(), 3, "{now}");
        assert!(
            now.starts_with("npschema_aaaa,npschema_bbbb,npschema_"),
            "{now}"
        );
        assert_eq!(pg.psql("dev", "select count(note) from dcim_site"), "0");

        // A template is never a target.
        let target = pg.url("npschema_aaaa");
        let refused = crate::harness::run(crate::harness::xtask(&[
            "clone-prod",
            "--source",
            &pg.url("prod"),
            "--target",
            &target,
            "--yes",
            "--subset",
            "site=ams1",
        ]));
        refused.fails_with("name of a temporary database");
    }
}
