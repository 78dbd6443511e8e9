//! Loads on several sessions (`--jobs`): the same database as the single stream, one
//! consistent snapshot while production keeps writing, failures that leave the target
//! alone, and `--media-only`.

use std::{
    fs,
    process::{Child, Stdio},
    time::Duration,
};

use crate::harness::{marker, run, tree, wait_for, xtask, Pg};

/// `schema.table → md5 of its rows in a stable order`, for every user table.
fn digests(pg: &Pg, db: &str) -> Vec<(String, String)> {
    pg.psql(
        db,
        "select format('%I.%I', schemaname, tablename), (xpath('/row/d/text()', query_to_xml(format( \
         'select md5(coalesce(string_agg(t::text, E''\\n'' order by t::text), '''')) as d from %I.%I t', \
         schemaname, tablename), false, true, '')))[1]::text \
         from pg_tables where schemaname not in ('pg_catalog', 'information_schema') order by 1",
    )
    .lines()
    .map(|row| {
        let (table, digest) = row.split_once('|').expect("table|digest");
        (table.to_string(), digest.to_string())
    })
    .collect()
}

/// Indexes and constraints of a database, by name and definition.
fn structure(pg: &Pg, db: &str) -> String {
    pg.psql(
        db,
        "select string_agg(d, E'\\n' order by d) from ( \
         select format('%s %s', indexrelid::regclass, pg_get_indexdef(indexrelid)) d from pg_index i \
         join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' \
         union all select format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) from pg_constraint \
         where connamespace = 'public'::regnamespace \
         union all select format('%s %s', tgrelid::regclass, tgname) from pg_trigger where not tgisinternal \
         union all select format('%s = %s', c.oid::regclass, pg_sequence_last_value(c.oid)) from pg_class c \
         where c.relkind = 'S' and c.relnamespace = 'public'::regnamespace) s",
    )
}

#[test]
fn parallel_and_single_stream_loads_build_the_same_database() {
    let pg = Pg::start(15);
    pg.load_prod("prod");
    let source = digests(&pg, "prod");
    let expected: Vec<(String, String)> = digests(&pg, "prod")
        .into_iter()
        .filter(|(table, _)| table != "public.extras_objectchange")
        .collect();
    assert!(source.len() > 30, "{source:?}");
    let clone = |jobs: &str, target: &str| {
        let (from, into) = (pg.url("prod"), pg.url(target));
        run(xtask(&[
            "-v",
            "--jobs",
            jobs,
            "clone-prod",
            "--source",
            &from,
            "--target",
            &into,
            "--no-scrub",
        ]))
        .ok()
    };

    let single = clone("1", "one");
    assert!(!single.stderr.contains("loaded at"), "{}", single.stderr);
    let parallel = clone("3", "three");
    assert!(
        parallel
            .stderr
            .contains("data, indexes and constraints loaded at"),
        "{}",
        parallel.stderr
    );
    assert_eq!(
        parallel.stderr.matches("--data-only").count(),
        1,
        "tables this small share one pg_dump: {}",
        parallel.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        bundle.to_str().unwrap(),
        "--no-scrub",
    ]))
    .ok();
    let import = run(xtask(&[
        "-v",
        "--jobs",
        "4",
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &pg.url("four"),
    ]))
    .ok();
    assert!(
        import
            .stderr
            .contains("data, indexes and constraints loaded at"),
        "{}",
        import.stderr
    );

    let reference = structure(&pg, "one");
    assert!(reference.lines().count() > 150, "{reference}");
    for db in ["one", "three", "four"] {
        let mut got = digests(&pg, db);
        let changelog = got
            .iter()
            .position(|(t, _)| t == "public.extras_objectchange")
            .unwrap();
        let (_, empty) = got.remove(changelog);
        assert_eq!(
            empty, "d41d8cd98f00b204e9800998ecf8427e",
            "{db}: changelog data left out"
        );
        assert_eq!(got, expected, "{db}: same rows as production");
        let got = structure(&pg, db);
        let missing: Vec<&str> = reference
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .collect();
        let extra: Vec<&str> = got
            .lines()
            .filter(|l| !reference.lines().any(|r| r == *l))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{db}: same indexes, constraints, triggers, sequences; missing {missing:?}, extra {extra:?}"
        );
    }

    // Large objects live outside tables: such a source goes in one stream, objects and all.
    pg.psql("prod", "select lo_from_bytea(0, 'rack photo')");
    let with_blob = clone("3", "blob");
    assert!(
        with_blob
            .stderr
            .contains("copying in one stream: the source has large objects"),
        "{}",
        with_blob.stderr
    );
    assert_eq!(
        pg.psql(
            "blob",
            "select convert_from(lo_get(oid), 'UTF8') from pg_largeobject_metadata"
        ),
        "rack photo"
    );
    assert_eq!(digests(&pg, "blob").len(), source.len());
}

/// Production keeps writing parent and child rows in pairs while it is cloned: the two tables
/// go to different sessions, and must still come from one moment.
#[test]
fn sessions_share_one_snapshot_while_production_writes() {
    let pg = Pg::start(15);
    pg.create_db("live");
    pg.psql(
        "live",
        "create table parent (id bigint primary key, pad text); \
         create table child (id bigint primary key, parent_id bigint not null references parent (id), pad text); \
         insert into parent select g, repeat('p', 300) from generate_series(1, 150000) g; \
         insert into child select g, g, repeat('c', 300) from generate_series(1, 150000) g;",
    );
    let mut writer: Child = pg
        .psql_cmd("live")
        .arg("-c")
        .arg(
            "do $$ begin for i in 150001..100000000 loop \
             insert into parent values (i, 'new'); insert into child values (i, i, 'new'); commit; \
             end loop; end $$",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The clone starts once production is writing: rows beyond the first load have committed.
    wait_for("the writer commits rows", Duration::from_secs(30), || {
        pg.psql("live", "select count(*) > 150000 from parent") == "t"
    });
    let cloned = run(xtask(&[
        "-v",
        "--jobs",
        "2",
        "clone-prod",
        "--source",
        &pg.url("live"),
        "--target",
        &pg.url("copy"),
        "--no-scrub",
    ]));
    let written = pg.psql("live", "select count(*) from parent");
    writer.kill().unwrap();
    let _ = writer.wait();
    let cloned = cloned.ok();
    for table in ["parent", "child"] {
        let line = copy_out_line(&cloned.stderr, table);
        assert!(
            line.is_some_and(|l| l.contains("format binary")),
            "{table} goes straight: {}",
            cloned.stderr
        );
    }
    let parents: i64 = pg
        .psql("copy", "select count(*) from parent")
        .parse()
        .unwrap();
    let children: i64 = pg
        .psql("copy", "select count(*) from child")
        .parse()
        .unwrap();
    assert!(
        parents > 150000,
        "production was writing during the clone ({parents} rows)"
    );
    assert!(
        written.parse::<i64>().unwrap() > parents,
        "and after the snapshot"
    );
    assert_eq!(
        parents, children,
        "parent and child rows come from one snapshot"
    );
    assert_eq!(
        pg.psql(
            "copy",
            "select count(*) from pg_constraint where contype = 'f' and convalidated"
        ),
        "1"
    );
}

/// `--jobs 16` on a server that accepts few connections: the job count is lowered to what the
/// server, and then a role's CONNECTION LIMIT, leave room for; the clone and the import
/// succeed, and a step line says why. The roles are not superusers, which may use the slots
/// the server reserves for them and ignore CONNECTION LIMIT.
#[test]
fn jobs_fit_in_the_connections_the_servers_allow() {
    let pg = Pg::start_with_settings(15, &marker("pw"), &["max_connections=20"]);
    pg.load_fixture("prod");
    pg.psql(
        "postgres",
        "create role cloner login createdb password 'cloner-pw'; \
         create role limited login createdb connection limit 9 password 'limited-pw'; \
         grant pg_read_all_data to cloner, limited",
    );
    let expected = digests(&pg, "prod");
    let as_role = |role: &str, db: &str| {
        pg.url(db).replace(
            &format!("postgres:{}@", pg.password),
            &format!("{role}:{role}-pw@"),
        )
    };
    let clone = |role: &str, target: &str| {
        run(xtask(&[
            "--jobs",
            "16",
            "clone-prod",
            "--source",
            &as_role(role, "prod"),
            "--target",
            &as_role(role, target),
            "--with-changelog",
            "--no-scrub",
        ]))
        .ok()
    };
    // The sessions of the test's own psql calls may still be ending on the server: each one
    // counted as in use takes a little from the room.
    let lowered_to = |stderr: &str| -> usize {
        let line = stderr
            .lines()
            .find(|l| l.contains(" jobs instead of 16: "))
            .unwrap_or_else(|| panic!("no line says the job count was lowered:\n{stderr}"));
        line.split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };

    // 20 connections, 3 reserved for superusers: 17 for source and target on one server,
    // which a clone on 3 jobs fits (2 per job and 1 on the source, 3 per job and 1 on the
    // target).
    let cloned = clone("cloner", "copy");
    assert!(
        (2..=3).contains(&lowered_to(&cloned.stderr))
            && cloned.stderr.contains(&format!(
                "instead of 16: 127.0.0.1:{} allows max_connections 20, 3 of them reserved",
                pg.port
            )),
        "{}",
        cloned.stderr
    );
    assert_eq!(digests(&pg, "copy"), expected);

    // An import opens 2 sessions per job and 1 more: 8 jobs.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        bundle.to_str().unwrap(),
        "--with-changelog",
        "--no-scrub",
    ]))
    .ok();
    let imported = run(xtask(&[
        "--jobs",
        "16",
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &as_role("cloner", "imported"),
    ]))
    .ok();
    assert!(
        (6..=8).contains(&lowered_to(&imported.stderr)),
        "{}",
        imported.stderr
    );
    assert_eq!(digests(&pg, "imported"), expected);

    // A role that may open 9 sessions, for source and target together: fewer than a load on
    // 2 jobs needs, so it goes in one stream.
    let limited = clone("limited", "limited_copy");
    assert!(
        limited.stderr.contains(&format!(
            "loading in one stream instead of on 16 jobs: role `limited` on 127.0.0.1:{} has CONNECTION LIMIT 9",
            pg.port
        )),
        "{}",
        limited.stderr
    );
    assert_eq!(digests(&pg, "limited_copy"), expected);
}

/// A unique index that cannot be built (duplicate rows in the bundle) fails the load while
/// other sessions are busy; the target and the server are left as they were.
#[test]
fn a_failing_index_build_leaves_the_target_alone() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.load_fixture("dev");
    let before = pg.fingerprint("dev");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        bundle.to_str().unwrap(),
    ]))
    .ok();
    let sql = bundle.join("netpoint.sql");
    let text = fs::read_to_string(&sql).unwrap();
    let copy = text
        .find("COPY public.dcim_site (")
        .expect("dcim_site data");
    let first_row = copy + text[copy..].find('\n').unwrap() + 1;
    let row_end = first_row + text[first_row..].find('\n').unwrap() + 1;
    let duplicated = format!("{}{}", &text[..row_end], &text[first_row..]);
    fs::write(&sql, duplicated).unwrap();
    // The manifest is made to agree, so that only the index build can fail.
    let manifest = bundle.join("manifest.json");
    let recorded = fs::read_to_string(&manifest).unwrap();
    let count = "\"public.dcim_site\": ";
    let at = recorded.find(count).unwrap() + count.len();
    let len = recorded[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let rows: u64 = recorded[at..at + len].parse().unwrap();
    fs::write(
        &manifest,
        format!("{}{}{}", &recorded[..at], rows + 1, &recorded[at + len..]),
    )
    .unwrap();
    crate::clone_prod::rewrite_sums(&bundle, "netpoint.sql");
    crate::clone_prod::rewrite_sums(&bundle, "manifest.json");

    run(xtask(&[
        "--jobs",
        "2",
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &pg.url("dev"),
        "--yes",
    ]))
    .fails_with("could not create unique index");
    pg.assert_unchanged("dev", &before, "the target is untouched");
    let left: Vec<String> = pg
        .databases()
        .into_iter()
        .filter(|d| d.contains("__np"))
        .collect();
    assert!(left.is_empty(), "temporary databases left: {left:?}");
}

/// The verbose line that started the source side of a straight copy of `table`.
fn copy_out_line<'a>(stderr: &'a str, table: &str) -> Option<&'a str> {
    let name = format!(r#"\"public\".\"{table}\" ("#);
    stderr
        .lines()
        .find(|line| line.contains(&name) && line.contains(" to stdout"))
}

/// Tables large enough go straight from a source session into a target session: in binary
/// form between servers of one major version, as text across versions and for types of the
/// database's own. Every value arrives as it was, generated and dropped columns included; a
/// scrubbed table still goes through the scrubber; a straight copy the source refuses fails
/// the clone and leaves nothing behind.
#[test]
fn large_tables_go_straight_and_arrive_intact() {
    let pg = Pg::start(15);
    pg.create_db("big");
    pg.psql(
        "big",
        r#"create type mood as enum ('ok', 'odd');
        create table wide (
            id bigint generated by default as identity primary key,
            doomed int,
            data jsonb, addr inet, net cidr, at timestamptz, day date, span interval,
            amount numeric(12, 3), ratio float8, tags text[], blob bytea, note text,
            flag boolean, ident uuid,
            twice bigint generated always as (id * 2) stored);
        alter table wide drop column doomed;
        insert into wide (data, addr, net, at, day, span, amount, ratio, tags, blob, note, flag, ident)
        select jsonb_build_object('n', g, 'ü', 'ß', 'deep', jsonb_build_array(g, null, true)),
               ('10.' || (g % 250) || '.' || (g % 199) || '.7/24')::inet, '10.1.0.0/16',
               '2024-02-29 23:59:59.123456+05:30'::timestamptz + g * interval '1 minute',
               date '1999-12-31' + g, make_interval(secs => g / 7.0), g / 3.0, g / 7.0,
               array['a', E'tab	here', null], decode(md5(g::text), 'hex'),
               case when g % 10 = 0 then null else E'line ' || g || E'
back\slash ✓ ' || repeat('x', 40) end,
               g % 2 = 0, md5(g::text)::uuid
        from generate_series(1, 40000) g;
        create table moods (id bigint primary key, mood mood not null, note text);
        insert into moods select g, case when g % 3 = 0 then 'odd' else 'ok' end::mood, repeat('m', 100)
        from generate_series(1, 60000) g;
        create table users_user (id bigint primary key, email text, password text);
        insert into users_user select g, 'person' || g || '@prod.example', 'pbkdf2_sha256$' || md5(g::text) || repeat('p', 80)
        from generate_series(1, 40000) g;
        create table pins (id int primary key, wide_id bigint references wide (id));
        insert into pins select g, g from generate_series(1, 100) g;"#,
    );
    // Credentials in columns no rule covers, in each kind of value a straight copy carries;
    // a JSON null is no credential.
    pg.psql(
        "big",
        r#"update wide set note = 'console https://admin:pw-wide@x.example/' where id in (1, 2, 3);
        update wide set data = data || '{"api_key": "k-1234567"}' where id in (4, 5);
        update wide set data = data || '{"password": null}' where id = 6;
        update wide set tags = array['ok', 'Authorization: Bearer abcdefgh12345678'] where id = 7;
        update moods set note = 'PASSWORD=hunter22' where id = 9;"#,
    );
    let findings = [
        "public.moods.note (1 row)",
        "public.wide.data (2 rows)",
        "public.wide.note (3 rows)",
        "public.wide.tags (1 row)",
    ];
    let assert_found = |stderr: &str| {
        for finding in findings {
            assert!(
                stderr.contains(finding),
                "{finding} not reported:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("pw-wide") && !stderr.contains("hunter22"),
            "{stderr}"
        );
    };
    let sizes = pg.psql(
        "big",
        "select string_agg(pg_table_size(c)::text, ' ' order by c) from unnest(array['wide', 'moods', 'users_user']::regclass[]) c",
    );
    assert!(
        sizes
            .split(' ')
            .all(|s| s.parse::<u64>().unwrap() > 4 << 20),
        "the large tables are larger than the straight copy's threshold: {sizes}"
    );
    let expected = digests(&pg, "big");
    let clone_into = |target: String| {
        run(xtask(&[
            "-v",
            "--jobs",
            "2",
            "clone-prod",
            "--source",
            &pg.url("big"),
            "--target",
            &target,
        ]))
        .ok()
    };
    let assert_intact = |got: Vec<(String, String)>, on: &str| {
        for table in ["public.wide", "public.moods", "public.pins"] {
            let find = |d: &[(String, String)]| d.iter().find(|(t, _)| t == table).cloned();
            assert_eq!(
                find(&got),
                find(&expected),
                "{table} arrives intact on {on}"
            );
        }
    };

    let same = clone_into(pg.url("same"));
    let wide = copy_out_line(&same.stderr, "wide").expect("wide goes straight");
    assert!(wide.contains("format binary"), "{wide}");
    assert_found(&same.stderr);
    let moods = copy_out_line(&same.stderr, "moods").expect("moods goes straight");
    assert!(
        !moods.contains("format binary"),
        "an enum of the database's own goes as text: {moods}"
    );
    assert!(
        copy_out_line(&same.stderr, "users_user").is_none(),
        "{}",
        same.stderr
    );
    assert!(
        same.stderr.contains(r#"--table="public"."users_user""#),
        "{}",
        same.stderr
    );
    assert_intact(digests(&pg, "same"), "the same server");
    assert_eq!(
        structure(&pg, "same"),
        structure(&pg, "big"),
        "indexes, keys, sequences"
    );
    assert_eq!(
        pg.psql(
            "same",
            "select count(*), count(*) filter (where email like '%@prod.example') from users_user"
        ),
        "40000|0",
        "the scrubbed table is scrubbed"
    );

    let newer = Pg::start(17);
    let across = clone_into(newer.url("copy"));
    let wide = copy_out_line(&across.stderr, "wide").expect("wide goes straight");
    assert!(
        !wide.contains("format binary"),
        "text across major versions: {wide}"
    );
    assert_found(&across.stderr);
    assert_intact(digests(&newer, "copy"), "PostgreSQL 17");

    // A reader that row security would filter: the straight copy of `moods` fails, as
    // pg_dump would, instead of copying part of the table.
    pg.psql(
        "big",
        "create role reader login createdb password 'reader-secret'; \
         grant select on all tables in schema public to reader; \
         grant select on all sequences in schema public to reader; \
         alter table moods enable row level security; \
         create policy only_ok on moods for select using (mood = 'ok');",
    );
    let as_reader = |db: &str| {
        pg.url(db).replace(
            &format!("postgres:{}@", pg.password),
            "reader:reader-secret@",
        )
    };
    let failed = run(xtask(&[
        "--jobs",
        "2",
        "clone-prod",
        "--source",
        &as_reader("big"),
        "--target",
        &as_reader("partial"),
    ]))
    .fails_with("row-level security hides rows of a table from user `reader`");
    assert!(
        failed
            .stderr
            .contains("copying public.moods from postgres://reader:***@"),
        "{}",
        failed.stderr
    );
    assert!(
        !failed.stderr.contains("reader-secret"),
        "{}",
        failed.stderr
    );
    let left: Vec<String> = pg
        .databases()
        .into_iter()
        .filter(|d| d.contains("__np") || d == "partial")
        .collect();
    assert!(left.is_empty(), "databases left: {left:?}");
}

#[test]
fn media_only_clones_the_tree_and_guards_it() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("prod-media"), dir.path().join("dev-media"));
    fs::create_dir_all(source.join("image-attachments")).unwrap();
    fs::write(
        source.join("image-attachments/rack.png"),
        vec![7u8; 300_000],
    )
    .unwrap();
    fs::write(source.join("notes.txt"), "hello\n").unwrap();
    fs::write(source.join("old.txt"), "gone soon\n").unwrap();
    let (s, t) = (source.to_str().unwrap(), target.to_str().unwrap());

    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s,
        "--target-media",
        t,
    ]))
    .ok();
    assert_eq!(tree(&target), tree(&source));

    fs::write(source.join("notes.txt"), "changed\n").unwrap();
    fs::remove_file(source.join("old.txt")).unwrap();
    let ino = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let rack = ino(&target.join("image-attachments/rack.png"));
    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s,
        "--target-media",
        t,
    ]))
    .fails_with("pass --yes");
    assert_eq!(
        fs::read_to_string(target.join("notes.txt")).unwrap(),
        "hello\n"
    );
    let again = run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s,
        "--target-media",
        t,
        "--yes",
    ]))
    .ok();
    assert_eq!(tree(&target), tree(&source));
    // The unchanged file came from the earlier copy (linked), the changed one was copied.
    assert_eq!(ino(&target.join("image-attachments/rack.png")), rack);
    assert!(
        again
            .stderr
            .contains("1 new or changed (8 B) copied and verified, 1 unchanged since the previous copy linked from it"),
        "{}",
        again.stderr
    );

    run(xtask(&["clone-prod", "--media-only", "--source-media", s])).fails_with("--target-media");
    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--target",
        "postgres://x@localhost/db",
    ]))
    .fails_with("cannot be used with");
}
