//! Subsets (`subset-plan`, the engine of `--subset`): the exact rows a root brings on real
//! PostgreSQL, its rows as pg_dump's `COPY` blocks loaded into the source's schema with every
//! constraint valid, and each bad input refused in one line.

use std::process::Command;

use serde_json::Value;

use crate::harness::{run, tree, workspace_root, xtask, Pg, Run};

/// The source as pg_dump prints it, without the per-run key of its `\\restrict` lines.
fn dump(pg: &Pg) -> String {
    pg.full_dump("prod")
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn load_schema(pg: &Pg, db: &str) {
    pg.create_db(db);
    pg.psql_file(db, &workspace_root().join("tests/it/sql/subset.sql"));
}

fn plan(pg: &Pg, db: &str, args: &[&str]) -> Run {
    let url = pg.url(db);
    let mut all = vec!["subset-plan", "--source", &url];
    all.extend_from_slice(args);
    run(xtask(&all))
}

/// `table → ids` of a plan, tables kept whole left out.
fn ids(run: &Run) -> Vec<(String, Vec<i64>)> {
    let plan: Value = serde_json::from_str(&run.stdout).expect("a JSON plan");
    plan["tables"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, rows)| rows["whole"] != true)
        .map(|(table, rows)| {
            let ids = rows["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_i64().unwrap())
                .collect();
            (table.clone(), ids)
        })
        .collect()
}

pub(crate) fn expected(rows: &[(&str, &[i64])]) -> Vec<(String, Vec<i64>)> {
    let mut rows: Vec<(String, Vec<i64>)> = rows
        .iter()
        .map(|(t, ids)| (t.to_string(), ids.to_vec()))
        .collect();
    rows.sort();
    rows
}

/// One site: its objects, what they point at, the far end of its cable, and nothing else.
/// What a clone of `rows` holds: the preset's scrub deletes the admin log's rows (they name
/// people and what they did), whatever the subset picked.
pub(crate) fn scrubbed(rows: &[(&str, &[i64])]) -> Vec<(String, Vec<i64>)> {
    let mut rows = expected(rows);
    for (table, ids) in &mut rows {
        if table == "django_admin_log" {
            ids.clear();
        }
    }
    rows
}

pub(crate) const AMS1: &[(&str, &[i64])] = &[
    // Site 1 is the root; site 2 comes with the far end of the cable (device 3), upward only.
    ("dcim_site", &[1, 2]),
    ("tenancy_tenant", &[1, 2]),
    // The whole tree of site 1 (a self-reference), not the other site's hall.
    ("dcim_location", &[1, 2, 3]),
    // Devices 1 and 2 belong to the site; device 3 ends its cable. Not device 4 (which shares
    // a device type) nor 5.
    ("dcim_device", &[1, 2, 3]),
    ("dcim_virtualchassis", &[1]),
    ("dcim_devicetype", &[1, 2]),
    ("dcim_manufacturer", &[1, 2]),
    // The site's interfaces, and the cable's far end; not device 3's other interface.
    ("dcim_interface", &[1, 2, 3, 6]),
    ("dcim_cable", &[1]),
    ("dcim_cabletermination", &[1, 2]),
    // Paths 1 and 2 run between included interfaces; path 5 runs through interface 5.
    ("dcim_cablepath", &[1, 2]),
    // Address 1 is on interface 1 (generic, downward) and device 1's primary; address 2 is
    // device 3's primary (upward), its interface already in.
    ("ipam_ipaddress", &[1, 2]),
    // The tags of every included row: of site 1 and interface 1 (downward), of device 3
    // and site 2 (included only upward); not site 3's.
    ("extras_taggeditem", &[1, 2, 3, 5]),
    // The component templates of the device types included, with the rear port template
    // the front port template names; not device type 3's.
    ("dcim_interfacetemplate", &[1, 2]),
    ("dcim_rearporttemplate", &[1]),
    ("dcim_frontporttemplate", &[1]),
    ("extras_imageattachment", &[1, 3]),
    // Text object ids: '1' of a site and of a device; not '0001', not '2'.
    ("django_admin_log", &[1, 5]),
];

#[test]
fn one_site_brings_exactly_its_rows() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    let before = dump(&pg);
    let site = plan(&pg, "prod", &["--subset", "site=ams1"]).ok();
    assert_eq!(ids(&site), expected(AMS1), "{}", site.stdout);
    let shown: Value = serde_json::from_str(&site.stdout).unwrap();
    for whole in ["django_content_type", "users_user", "extras_tag"] {
        assert_eq!(shown["tables"][whole]["whole"], true, "{whole}");
    }
    assert_eq!(shown["tables"]["extras_tag"]["count"], 3);
    assert_eq!(shown["rebuild"][0]["command"], "manage.py trace_paths");
    // Path 5 runs through interface 5, outside the site: left out, interface 2's reference
    // to it cleared; the search cache emptied; each with its rebuild.
    let paths = &shown["derived"][0];
    assert_eq!(
        (&paths["table"], &paths["kept"], &paths["left_out"]),
        (&"dcim_cablepath".into(), &2.into(), &1.into())
    );
    assert_eq!(paths["cleared"]["dcim_interface._path_id"], 1);
    let cache = &shown["derived"][1];
    assert_eq!(
        (&cache["table"], &cache["kept"], &cache["source_rows"]),
        (&"extras_cachedvalue".into(), &0.into(), &2.into())
    );
    assert_eq!(cache["rebuild"], "manage.py reindex");
    // The condition form gives the same rows; the source is only read.
    let condition = plan_of(&pg, &["--subset", "dcim_site: slug = 'ams1'"]);
    assert_eq!(ids(&condition), expected(AMS1));
    assert_eq!(dump(&pg), before);

    // A subtree of the location tree: its rows downward, its parents and site upward only.
    let room = plan_of(&pg, &["--subset", "dcim_location: name = 'room-a'"]);
    let room = ids(&room);
    let table = |name: &str| room.iter().find(|(t, _)| t == name).unwrap().1.clone();
    assert_eq!(table("dcim_location"), [1, 2, 3]);
    assert_eq!(
        table("dcim_device"),
        [1, 2, 3],
        "device 1 is in row 3; 2 shares its chassis"
    );
    assert_eq!(table("dcim_site"), [1, 2]);

    // A root whose generic reference points at nothing: counted, not followed.
    let lost = plan_of(&pg, &["--subset", "ipam_ipaddress: id = 4"]);
    let lost_plan: Value = serde_json::from_str(&lost.stdout).unwrap();
    assert_eq!(
        lost_plan["dangling"]["ipam_ipaddress.assigned_object_id"],
        1
    );
    assert_eq!(ids(&lost), expected(&[("ipam_ipaddress", &[4])]));

    fn plan_of(pg: &Pg, args: &[&str]) -> Run {
        plan(pg, "prod", args).ok()
    }
}

#[test]
fn subset_rows_load_into_the_schema_with_every_constraint_valid() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("rows.sql");
    plan(
        &pg,
        "prod",
        &["--subset", "site=ams1", "--copy", copy.to_str().unwrap()],
    )
    .ok();
    let blocks = std::fs::read_to_string(&copy).unwrap();
    assert!(
        blocks.contains(
            "COPY public.dcim_interface (id, name, device_id, cable_id, _path_id) FROM stdin;\n"
        ),
        "{blocks}"
    );
    // The schema before the data and the constraints after it, as pg_dump lays them out:
    // each foreign key is checked against the loaded rows when it is created.
    let section = |name: &str| {
        let out = Command::new("pg_dump")
            .args(["--schema-only", "--section", name, "--no-owner"])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", pg.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &pg.password)
            .env("PGDATABASE", "prod")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = work.path().join(format!("{name}.sql"));
        std::fs::write(&path, out.stdout).unwrap();
        path
    };
    let (pre, post) = (section("pre-data"), section("post-data"));
    pg.create_db("dev");
    pg.psql_file("dev", &pre);
    pg.psql_file("dev", &copy);
    pg.psql_file("dev", &post);
    let counts = pg.psql(
        "dev",
        "select (select count(*) from dcim_device) || ' ' || (select count(*) from dcim_interface) \
         || ' ' || (select count(*) from extras_tag) || ' ' || (select count(*) from dcim_cablepath)",
    );
    assert_eq!(counts, "3 4 3 2");
    // Interface 2's path ran through a port outside the subset: cleared; interface 1's kept.
    assert_eq!(
        pg.psql(
            "dev",
            "select id || ':' || coalesce(_path_id::text, '-') from dcim_interface order by id"
        ),
        "1:1\n2:-\n3:2\n6:-"
    );
    // No generic reference points at a missing row.
    let dangling = pg.psql(
        "dev",
        "select count(*) from ipam_ipaddress a where not exists \
         (select from dcim_interface i where i.id = a.assigned_object_id)",
    );
    assert_eq!(dangling, "0");
    let files = pg.psql(
        "dev",
        "select image from extras_imageattachment union all select front_image from dcim_devicetype order by 1",
    );
    assert_eq!(
        files,
        "devicetype-images/cat.png\ndevicetype-images/mx.png\nimage-attachments/ams-r1.jpg\nimage-attachments/ams1.jpg"
    );
}

#[test]
fn subsets_agree_on_postgresql_13_and_17() {
    for major in [13, 17] {
        let pg = Pg::start(major);
        load_schema(&pg, "prod");
        let site = plan(&pg, "prod", &["--subset", "site=ams1"]).ok();
        assert_eq!(ids(&site), expected(AMS1), "PostgreSQL {major}");
        clone(&pg, &["--subset", "site=ams1"]).ok();
        assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1), "PostgreSQL {major}");
        assert_eq!(valid_fks(&pg, "dev"), valid_fks(&pg, "prod"));
    }
}

#[test]
fn bad_subsets_are_one_line_each() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    let before = dump(&pg);
    let fails = |args: &[&str], needle: &str| {
        plan(&pg, "prod", args).fails_with(needle);
    };
    fails(
        &["--subset", "dcim_nope: true"],
        "unknown table `dcim_nope`",
    );
    fails(
        &["--subset", "dcim_site: slgu = 'x'"],
        "column \"slgu\" does not exist",
    );
    fails(
        &["--subset", "dcim_site: slug = = 'x'"],
        "syntax error at or near \"=\"",
    );
    fails(
        &["--subset", "site=nowhere"],
        "matches no row of `dcim_site`",
    );
    fails(
        &["--subset", "dcim_site: nextval('dcim_site_id_seq') > 0"],
        "cannot execute nextval() in a read-only transaction",
    );
    fails(
        &[
            "--subset",
            "dcim_site: true); delete from dcim_site; select (1",
        ],
        "the condition holds a `;`",
    );
    fails(&["--subset", "galaxy=m31"], "no named subset `galaxy`");
    fails(
        &["--subset", "dcim_site: true", "--sample", "0%"],
        "--sample",
    );
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules.toml");
    let with_rules = |text: &str, needle: &str| {
        std::fs::write(&rules, text).unwrap();
        let args = [
            "--subset",
            "site=ams1",
            "--subset-rules",
            rules.to_str().unwrap(),
        ];
        plan(&pg, "prod", &args).fails_with(needle);
    };
    with_rules("version = 1\nwhole = []\nholw = []\n", "line 3");
    with_rules(
        "version = 1\n[[pair]]\ntable = \"dcim_site\"\ntype_column = \"kind_type_id\"\nid_column = \"kind_id\"\n",
        "`dcim_site.kind_type_id`, which the source does not have",
    );
    with_rules(
        "version = 1\ncut = [\"dcim_nope.x\"]\n",
        "unknown table `dcim_nope`",
    );
    assert_eq!(dump(&pg), before, "nothing changed");
}

#[test]
fn rules_cut_edges_and_samples_are_deterministic() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules.toml");
    // With the terminations' generic edge cut, the cable comes (its interface points at it)
    // with both terminations, but not the far end they name, nor the path through it.
    std::fs::write(
        &rules,
        "version = 1\ncut = [\"dcim_cabletermination.termination_id\"]\n",
    )
    .unwrap();
    let cut = plan(
        &pg,
        "prod",
        &[
            "--subset",
            "site=ams1",
            "--subset-rules",
            rules.to_str().unwrap(),
        ],
    )
    .ok();
    let cut = ids(&cut);
    let table = |name: &str| {
        cut.iter()
            .find(|(t, _)| t == name)
            .map(|(_, ids)| ids.clone())
    };
    assert_eq!(table("dcim_interface"), Some(vec![1, 2, 6]));
    assert_eq!(table("dcim_cable"), Some(vec![1]));
    assert_eq!(table("dcim_cabletermination"), Some(vec![1, 2]));
    assert_eq!(table("dcim_device"), Some(vec![1, 2]));
    assert_eq!(table("dcim_cablepath"), None);
    let sample = |pct: &str| {
        ids(&plan(
            &pg,
            "prod",
            &["--subset", "dcim_device: true", "--sample", pct],
        )
        .ok())
    };
    assert_eq!(sample("50%"), sample("50%"));
    let all = sample("100%");
    let devices = all.iter().find(|(t, _)| t == "dcim_device").unwrap();
    assert_eq!(devices.1, [1, 2, 3, 4, 5]);
}

/// `clone-prod` from `prod` into `dev` on the same server, confirmed.
pub(crate) fn clone(pg: &Pg, args: &[&str]) -> Run {
    let (source, target) = (pg.url("prod"), pg.url("dev"));
    let mut all = vec![
        "clone-prod",
        "--source",
        &source,
        "--target",
        &target,
        "--yes",
    ];
    all.extend_from_slice(args);
    run(xtask(&all))
}

/// `table → ids` of `db`, for the tables `AMS1` names.
pub(crate) fn loaded(pg: &Pg, db: &str) -> Vec<(String, Vec<i64>)> {
    let mut rows: Vec<(String, Vec<i64>)> = AMS1
        .iter()
        .map(|(table, _)| {
            let ids = pg.psql(
                db,
                &format!("select coalesce(string_agg(id::text, ',' order by id), '') from {table}"),
            );
            let ids = ids
                .split(',')
                .filter(|id| !id.is_empty())
                .map(|id| id.parse().unwrap())
                .collect();
            (table.to_string(), ids)
        })
        .collect();
    rows.sort();
    rows
}

/// The foreign keys of `db`: how many, and how many of them valid.
pub(crate) fn valid_fks(pg: &Pg, db: &str) -> String {
    pg.psql(
        db,
        "select count(*) || ' ' || count(*) filter (where convalidated) from pg_constraint where contype = 'f'",
    )
}

#[test]
fn clone_prod_subset_loads_exactly_its_rows_scrubbed_and_checked() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    // A changelog entry about the site (reached downward through its generic pair): the
    // changelog's data is left out of a subset as out of a full clone.
    pg.psql(
        "prod",
        "create table extras_objectchange (id bigint primary key, \
           changed_object_type_id int references django_content_type, changed_object_id bigint, action text); \
         insert into extras_objectchange values (1, 1, 1, 'update'), (2, 2, 5, 'create'); \
         select setval('dcim_site_id_seq', 42); analyze",
    );
    // A dev database with data of its own, replaced.
    pg.create_db("dev");
    pg.psql(
        "dev",
        "create table old (id int); insert into old values (1)",
    );
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("scrub.toml");
    std::fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_device\"\ncolumn = \"name\"\naction = \"value\"\nvalue = \"device {pk}\"\n",
    )
    .unwrap();
    let before = pg.fingerprint("prod");
    let out = clone(
        &pg,
        &[
            "--subset",
            "site=ams1",
            "--scrub-rules",
            rules.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1), "{}", out.output());
    let count = |table: &str| pg.psql("dev", &format!("select count(*) from {table}"));
    // Tables kept whole, the changelog left out, the old table gone.
    assert_eq!(count("extras_tag"), "3");
    assert_eq!(count("django_content_type"), "6");
    assert_eq!(count("users_user"), "2");
    assert_eq!(count("extras_objectchange"), "0");
    assert_eq!(
        pg.psql(
            "dev",
            "select count(*) from pg_tables where tablename = 'old'"
        ),
        "0"
    );
    // Every foreign key re-created and valid; the sequences as the source has them.
    assert_eq!(valid_fks(&pg, "dev"), valid_fks(&pg, "prod"));
    assert_eq!(valid_fks(&pg, "prod"), "28 28");
    assert_eq!(
        pg.psql("dev", "select last_value from dcim_site_id_seq"),
        "42"
    );
    // Scrubbed by the rules file as the rows passed.
    assert_eq!(
        pg.psql(
            "dev",
            "select string_agg(name, ',' order by id) from dcim_device"
        ),
        "device 1,device 2,device 3"
    );
    // No generic reference points at a missing row.
    assert_eq!(
        pg.psql(
            "dev",
            "select count(*) from extras_taggeditem t where t.content_type_id = 1 \
             and not exists (select from dcim_site s where s.id = t.object_id)"
        ),
        "0"
    );
    // The closing summary gives the subset's share of the source.
    let shown = out.output();
    // 49 rows of the source's 78 (the changelog's two among those left out).
    assert!(
        shown.contains("subset: 49 rows of about 78 (62.8%)"),
        "{shown}"
    );
    // One line per derived table changed, with what was left out and its rebuild.
    assert!(
        shown.contains("derived: `dcim_cablepath` 2 rows kept, 1 left out as they run through rows outside the subset, 1 references to them cleared (dcim_interface._path_id 1); rebuild with `manage.py trace_paths`"),
        "{shown}"
    );
    assert!(
        shown.contains("derived: `extras_cachedvalue` emptied (2 rows in the source); rebuild with `manage.py reindex`"),
        "{shown}"
    );
    assert_eq!(count("extras_cachedvalue"), "0");
    assert_eq!(
        pg.psql(
            "dev",
            "select _path_id is null from dcim_interface where id = 2"
        ),
        "t"
    );
    pg.assert_unchanged("prod", &before, "the source is only read");
}

#[test]
fn a_subset_that_fails_its_checks_or_bad_input_leaves_the_target_untouched() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    pg.create_db("dev");
    pg.psql(
        "dev",
        "create table old (id int); insert into old values (1)",
    );
    let (prod, dev) = (pg.fingerprint("prod"), pg.fingerprint("dev"));
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("subset.toml");
    let with_rules = |text: &str, needle: &str| {
        std::fs::write(&rules, text).unwrap();
        let args = [
            "--subset",
            "site=ams1",
            "--subset-rules",
            rules.to_str().unwrap(),
        ];
        clone(&pg, &args).fails_with(needle);
        pg.assert_unchanged("dev", &dev, needle);
    };
    // The terminations' generic edge cut: termination 2 names interface 3, which exists
    // in the source but is left out. Found before the swap.
    with_rules(
        "version = 1\ncut = [\"dcim_cabletermination.termination_id\"]\n",
        "`dcim_cabletermination.termination_id` names 1 row of `dcim_interface` that exist in the source but were left out",
    );
    // A foreign key edge cut: the device types are left out, and re-creating the constraint
    // after the rows fails.
    with_rules(
        "version = 1\ncut = [\"dcim_device.device_type_id\"]\n",
        "violates foreign key constraint",
    );
    let fails = |args: &[&str], needle: &str| {
        clone(&pg, args).fails_with(needle);
        pg.assert_unchanged("dev", &dev, needle);
    };
    fails(
        &["--subset", "site=nowhere"],
        "matches no row of `dcim_site`",
    );
    fails(&["--sample", "5%"], "name its roots with --subset");
    fails(&["--subset", "site=ams1", "--sample", "0%"], "such as 5%");
    // A bundle holds the subset it was exported with: none is chosen on import.
    let dir = work.path().join("bundle");
    std::fs::create_dir(&dir).unwrap();
    let dev_url = pg.url("dev");
    run(xtask(&[
        "clone-prod",
        "--bundle",
        dir.to_str().unwrap(),
        "--target",
        &dev_url,
        "--subset",
        "site=ams1",
    ]))
    .fails_with("--subset does not work with --bundle");
    pg.assert_unchanged("dev", &dev, "a subset on import");
    pg.assert_unchanged("prod", &prod, "the source is only read");
}

/// Writes `files` (relative path → content) below `root`.
fn write_files(root: &std::path::Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn a_subset_brings_only_the_media_its_rows_name() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    // A file column of the project's own, declared in the rules file; site 2 (in upward,
    // through the cable's far end) names a path that climbs out of the media root.
    pg.psql(
        "prod",
        "alter table dcim_site add column logo varchar(100) not null default ''; \
         update dcim_site set logo = case id when 1 then 'logos/ams1.svg' else '../outside.txt' end",
    );
    let work = tempfile::tempdir().unwrap();
    let (source, target) = (
        work.path().join("prod-media"),
        work.path().join("dev-media"),
    );
    write_files(
        &source,
        &[
            ("image-attachments/ams1.jpg", "ams1"),
            ("image-attachments/fra1.jpg", "fra1"),
            ("devicetype-images/mx.png", "mx"),
            ("devicetype-images/cat.png", "cat"),
            ("devicetype-images/unused.png", "unused"),
            ("logos/ams1.svg", "logo"),
            ("other/unrelated.txt", "other"),
        ],
    );
    // Named by an included image attachment, but not in the source media.
    assert!(!source.join("image-attachments/ams-r1.jpg").exists());
    write_files(work.path(), &[("outside.txt", "secret")]);
    write_files(&target, &[("old.txt", "old")]);
    let rules = work.path().join("subset.toml");
    std::fs::write(&rules, "version = 1\nfiles = [\"dcim_site.logo\"]\n").unwrap();
    let clone_media = || {
        clone(
            &pg,
            &[
                "--subset",
                "site=ams1",
                "--subset-rules",
                rules.to_str().unwrap(),
                "--source-media",
                source.to_str().unwrap(),
                "--target-media",
                target.to_str().unwrap(),
            ],
        )
        .ok()
    };
    let out = clone_media();
    let files: Vec<(String, Vec<u8>)> = [
        ("devicetype-images/cat.png", "cat"),
        ("devicetype-images/mx.png", "mx"),
        ("image-attachments/ams1.jpg", "ams1"),
        ("logos/ams1.svg", "logo"),
    ]
    .iter()
    .map(|(rel, text)| (rel.to_string(), text.as_bytes().to_vec()))
    .collect();
    assert_eq!(tree(&target), files, "{}", out.output());
    let shown = out.output();
    assert!(
        shown.contains("2 media files the subset names are not in"),
        "{shown}"
    );
    assert!(
        shown.contains("2 media files it names missing from the source media"),
        "{shown}"
    );
    // A source never analysed has no row estimates: said so, with no share of them.
    assert!(
        shown.contains("subset: 49 rows (source estimate unknown"),
        "{shown}"
    );
    assert!(!shown.contains("rows of about 0"), "{shown}");
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1));
    // Incremental: a second run links the unchanged files from the copy in place.
    let again = clone_media();
    assert_eq!(tree(&target), files);
    assert!(
        again
            .output()
            .contains("4 unchanged since the previous copy"),
        "{}",
        again.output()
    );
    // A rules file naming a file column the source lacks: refused before anything changes.
    std::fs::write(&rules, "version = 1\nfiles = [\"dcim_site.photo\"]\n").unwrap();
    clone(
        &pg,
        &[
            "--subset",
            "site=ams1",
            "--subset-rules",
            rules.to_str().unwrap(),
            "--source-media",
            source.to_str().unwrap(),
            "--target-media",
            target.to_str().unwrap(),
        ],
    )
    .fails_with("has no column `photo`");
    assert_eq!(tree(&target), files);
}

#[test]
fn a_subset_bundle_loads_through_the_import_and_through_psql() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    pg.psql("prod", "select setval('dcim_site_id_seq', 42); analyze");
    let work = tempfile::tempdir().unwrap();
    let media = work.path().join("prod-media");
    write_files(
        &media,
        &[
            ("image-attachments/ams1.jpg", "ams1"),
            ("image-attachments/fra1.jpg", "fra1"),
            ("devicetype-images/mx.png", "mx"),
            ("devicetype-images/unused.png", "unused"),
        ],
    );
    let rules = work.path().join("scrub.toml");
    std::fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_device\"\ncolumn = \"name\"\naction = \"value\"\nvalue = \"device {pk}\"\n",
    )
    .unwrap();
    let bundle = work.path().join("bundle");
    let source = pg.url("prod");
    let before = pg.fingerprint("prod");
    let export = run(xtask(&[
        "clone-prod",
        "--source",
        &source,
        "--out",
        bundle.to_str().unwrap(),
        "--source-media",
        media.to_str().unwrap(),
        "--subset",
        "site=ams1",
        "--scrub-rules",
        rules.to_str().unwrap(),
    ]))
    .ok();
    pg.assert_unchanged("prod", &before, "the source is only read");
    assert!(
        export
            .output()
            .contains("2 media files the subset names are not in"),
        "{}",
        export.output()
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["subset"]["roots"][0], "site=ams1");
    assert_eq!(manifest["media"]["files"], 2);
    assert_eq!(manifest["rows"]["public.dcim_device"], 3);
    let sql = std::fs::read_to_string(bundle.join("netpoint.sql")).unwrap();
    assert!(
        sql.contains("-- Data for Name: dcim_device; Type: TABLE DATA; Schema: public; Owner: -")
    );
    assert!(sql.contains("-- Name: dcim_site_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -"));
    assert!(
        sql.ends_with("-- PostgreSQL database dump complete\n--\n\n"),
        "{}",
        &sql[sql.len() - 200..]
    );
    assert!(
        !sql.contains("fra1.jpg"),
        "rows outside the subset stay out"
    );

    // The import: the guard and the table of contents accept it.
    let (dev, dev_media) = (pg.url("dev"), work.path().join("dev-media"));
    let import = run(xtask(&[
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &dev,
        "--target-media",
        dev_media.to_str().unwrap(),
        "--yes",
    ]))
    .ok();
    assert_eq!(loaded(&pg, "dev"), scrubbed(AMS1), "{}", import.output());
    assert_eq!(valid_fks(&pg, "dev"), valid_fks(&pg, "prod"));
    assert_eq!(
        pg.psql("dev", "select last_value from dcim_site_id_seq"),
        "42"
    );
    assert_eq!(
        pg.psql(
            "dev",
            "select string_agg(name, ',' order by id) from dcim_device"
        ),
        "device 1,device 2,device 3"
    );
    let files: Vec<String> = tree(&dev_media).into_iter().map(|(rel, _)| rel).collect();
    assert_eq!(
        files,
        ["devicetype-images/mx.png", "image-attachments/ams1.jpg"]
    );

    // The manual procedure: psql alone loads it into an empty database.
    pg.create_db("manual");
    pg.psql_file("manual", &bundle.join("netpoint.sql"));
    assert_eq!(loaded(&pg, "manual"), scrubbed(AMS1));
    assert_eq!(valid_fks(&pg, "manual"), valid_fks(&pg, "prod"));
}

#[test]
fn seed_dev_refresh_makes_fixtures_from_a_subset_and_checks_them() {
    let pg = Pg::start(15);
    load_schema(&pg, "prod");
    let work = tempfile::tempdir().unwrap();
    let media = work.path().join("prod-media");
    write_files(
        &media,
        &[
            ("image-attachments/ams1.jpg", "ams1"),
            ("image-attachments/fra1.jpg", "fra1"),
            ("devicetype-images/cat.png", "cat"),
        ],
    );
    let (fx, source) = (work.path().join("fx"), pg.url("prod"));
    let refresh = |extra: &[&str]| {
        let mut args = vec![
            "seed-dev",
            "--refresh",
            "--source",
            &source,
            "--source-media",
            media.to_str().unwrap(),
            "--fixtures",
            fx.to_str().unwrap(),
            "--subset",
            "site=ams1",
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    let made = refresh(&[]).ok();
    let files: Vec<String> = tree(&fx.join("media"))
        .into_iter()
        .map(|(rel, _)| rel)
        .collect();
    assert_eq!(
        files,
        ["devicetype-images/cat.png", "image-attachments/ams1.jpg"],
        "{}",
        made.output()
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["subset"]["roots"][0], "site=ams1");
    pg.create_db("seeded");
    pg.psql_file("seeded", &fx.join("netpoint.sql"));
    assert_eq!(loaded(&pg, "seeded"), scrubbed(AMS1));
    assert_eq!(valid_fks(&pg, "seeded"), valid_fks(&pg, "prod"));

    // Deterministic: the same source gives the same fixtures, and a change outside the
    // subset changes nothing.
    let first = tree(&fx);
    pg.psql(
        "prod",
        "update dcim_device set name = 'elsewhere' where id = 5",
    );
    let current = refresh(&["--check"]).ok();
    assert!(
        current.stdout.contains("up to date"),
        "{}",
        current.output()
    );
    refresh(&[]).ok();
    assert!(tree(&fx) == first, "a second refresh changed the fixtures");
    // A change inside it is caught, and the command that fixes it names the subset.
    pg.psql(
        "prod",
        "update dcim_device set name = 'renamed' where id = 1",
    );
    let stale = refresh(&["--check"]).fails_with("out of date");
    assert!(
        stale
            .output()
            .contains("table public.dcim_device: rows changed (+1 -1)"),
        "{}",
        stale.output()
    );
    assert!(
        stale
            .output()
            .contains("cargo xtask seed-dev --refresh --source 'postgres://")
            && stale.output().contains(" --subset site=ams1"),
        "{}",
        stale.output()
    );
    assert!(tree(&fx) == first, "--check changed the fixtures");
    // Subset flags shape a refresh only.
    run(xtask(&["seed-dev", "--subset", "site=ams1", "--dry-run"]))
        .fails_with("--subset shapes the fixtures a refresh makes");
}
