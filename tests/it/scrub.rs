//! Dev copies carry no live secrets: markers planted in every preset column never reach a
//! target database, a bundle or any output, unless --no-scrub is given.

use std::fs;

use crate::harness::{marker, run, Pg};

/// Plants a unique marker in every secret column of the fixture data and returns them.
fn plant_markers(pg: &Pg, db: &str) -> Vec<String> {
    let m = |what: &str| marker(what);
    let (pw, email, token_desc, secret, header, param, url_pw, session, change) = (
        m("pwhash"),
        m("mail"),
        m("tokdesc"),
        m("hooksecret"),
        m("hookheader"),
        m("dsparam"),
        m("urlpw"),
        m("session"),
        m("changelog"),
    );
    // A 40-hex token whose text is unique to this run.
    let token = format!(
        "{:0>40x}",
        u128::from(std::process::id()) * 0x1_0000_0001 + 0xdead_beef
    );
    pg.psql(
        db,
        &format!(
            "update users_user set password = 'pbkdf2_sha256$600000${pw}', email = '{email}@corp.example' where id = (select min(id) from users_user);
             insert into users_token (id, created, key, write_enabled, description, user_id) values (900001, now(), '{token}', true, '{token_desc}', (select min(id) from users_user));
             update extras_webhook set secret = '{secret}', additional_headers = 'Authorization: Bearer {header}';
             update core_datasource set parameters = '{{\"aws_secret_access_key\": \"{param}\", \"region\": \"eu\"}}',
                 source_url = 'https://bot:{url_pw}@git.example.com/x.git' where id = (select min(id) from core_datasource);
             insert into django_session values ('{session}', 'data-{session}', '2099-01-01');
             update extras_objectchange set postchange_data = '{{\"name\": \"x\", \"secret\": \"{change}\"}}' where id = (select min(id) from extras_objectchange);"
        ),
    );
    vec![
        pw, email, token, token_desc, secret, header, param, url_pw, session, change,
    ]
}

fn found<'a>(haystack: &str, markers: &'a [String]) -> Vec<&'a String> {
    markers
        .iter()
        .filter(|m| haystack.contains(m.as_str()))
        .collect()
}

#[test]
fn no_secret_reaches_a_clone_a_bundle_or_the_output() {
    let prod = Pg::start(15);
    let dev = Pg::start(15);
    prod.load_prod("prod");
    let markers = plant_markers(&prod, "prod");
    assert_eq!(
        found(&prod.full_dump("prod"), &markers).len(),
        markers.len(),
        "markers planted"
    );

    let direct = run(crate::harness::xtask(&[
        "-v",
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--target",
        &dev.url("dev"),
        "--with-changelog",
    ]))
    .ok();
    let dump = dev.full_dump("dev");
    assert_eq!(
        found(&dump, &markers),
        Vec::<&String>::new(),
        "secrets in the direct clone"
    );
    assert_eq!(
        found(&direct.output(), &markers),
        Vec::<&String>::new(),
        "secrets in the output"
    );
    assert!(
        direct.stderr.contains("skipped (not in this database)")
            && direct.stderr.contains("vpn_ikepolicy"),
        "{}",
        direct.stderr
    );
    // The rows themselves are still there.
    assert_eq!(dev.psql("dev", "select count(*) from users_token"), "0");
    for table in ["users_user", "extras_webhook", "core_datasource"] {
        assert_eq!(
            dev.psql("dev", &format!("select count(*) from {table}")),
            prod.psql("prod", &format!("select count(*) from {table}"))
        );
    }
    assert_eq!(dev.psql("dev", "select count(*) from django_session"), "0");
    assert!(dev
        .psql("dev", "select password from users_user order by id limit 1")
        .starts_with('!'));
    assert_eq!(
        dev.psql("dev", "select email from users_user order by id limit 1"),
        format!(
            "user-{}@example.invalid",
            prod.psql("prod", "select min(id) from users_user")
        )
    );
    assert_eq!(
        dev.psql(
            "dev",
            "select parameters ->> 'region' from core_datasource order by id limit 1"
        ),
        "eu"
    );

    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let export = run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--out",
        bundle.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(found(&export.output(), &markers), Vec::<&String>::new());
    for entry in fs::read_dir(&bundle).unwrap() {
        let text = String::from_utf8_lossy(&fs::read(entry.unwrap().path()).unwrap()).into_owned();
        assert_eq!(
            found(&text, &markers),
            Vec::<&String>::new(),
            "secrets in the bundle"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    let rules = manifest["scrub"]["rules"].as_array().unwrap();
    let session_rule = rules
        .iter()
        .find(|r| r["rule"] == "public.django_session: delete-rows")
        .unwrap();
    assert_eq!(
        session_rule["rows"].as_u64().unwrap(),
        prod.psql("prod", "select count(*) from django_session")
            .parse::<u64>()
            .unwrap()
    );
    let token_rule = rules
        .iter()
        .find(|r| r["rule"] == "public.users_token: delete-rows")
        .unwrap();
    assert_eq!(token_rule["rows"].as_u64(), Some(1), "the planted token");
    // The tables delete-rows empties are left out of the dump rather than read and dropped,
    // and their sequences are still set.
    let sql = fs::read_to_string(bundle.join("netpoint.sql")).unwrap();
    for table in ["django_session", "users_token"] {
        assert!(
            !sql.contains(&format!("COPY public.{table} ")),
            "rows of {table} in the bundle"
        );
    }
    assert!(sql.contains("setval('public.users_token_id_seq', 7, true)"));

    run(crate::harness::xtask(&[
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &dev.url("imported"),
    ]))
    .ok();
    assert_eq!(
        found(&dev.full_dump("imported"), &markers),
        Vec::<&String>::new()
    );

    // Same rows scrub to the same bytes: a second export is identical.
    let again = work.path().join("again");
    run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--out",
        again.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(
        fs::read(bundle.join("netpoint.sql")).unwrap(),
        fs::read(again.join("netpoint.sql")).unwrap()
    );

    // Without scrubbing the markers do arrive, so the checks above can fail.
    let verbatim = run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--target",
        &dev.url("verbatim"),
        "--no-scrub",
        "--with-changelog",
    ]))
    .ok();
    assert!(
        verbatim.stderr.contains("--no-scrub"),
        "a warning: {}",
        verbatim.stderr
    );
    assert_eq!(
        found(&dev.full_dump("verbatim"), &markers).len(),
        markers.len()
    );
}

#[test]
fn a_custom_rules_file_is_applied() {
    let prod = Pg::start(15);
    let dev = Pg::start(15);
    prod.load_fixture("prod");
    prod.psql(
        "prod",
        "update users_user set email = 'someone-' || id || '@corp.example'",
    );
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules.toml");
    fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"description\"\naction = \"value\"\nvalue = \"site {pk}\"\n\n\
         [[rule]]\ntable = \"tenancy_tenant\"\naction = \"delete-rows\"\n",
    )
    .unwrap();
    // Tenants are referenced by foreign keys: deleting their rows must fail the load
    // atomically, leaving no database behind.
    run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--target",
        &dev.url("dev"),
        "--scrub-rules",
        rules.to_str().unwrap(),
    ]))
    .fails_with("restore into");
    assert!(!dev.has_db("dev"));

    fs::write(&rules, "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"description\"\naction = \"value\"\nvalue = \"site {pk}\"\n").unwrap();
    run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--target",
        &dev.url("dev"),
        "--scrub-rules",
        rules.to_str().unwrap(),
    ]))
    .ok();
    let wrong = dev.psql(
        "dev",
        "select count(*) from dcim_site where description <> 'site ' || id",
    );
    assert_eq!(wrong, "0");
    assert!(
        dev.psql("dev", "select count(*) from dcim_site")
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert_eq!(
        dev.psql(
            "dev",
            "select count(*) from users_user where email like '%corp.example'"
        ),
        "0",
        "the preset still applies"
    );

    fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_site\"\naction = \"shred\"\n",
    )
    .unwrap();
    run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &prod.url("prod"),
        "--target",
        &dev.url("other"),
        "--scrub-rules",
        rules.to_str().unwrap(),
    ]))
    .fails_with("line 3: unknown action `shred`");
}

/// A source role that may hold one session only: the export cannot keep a snapshot open
/// beside its pg_dump, so the rows of the tables delete-rows empties stream and are dropped
/// on the way, as they always were; the bundle and its counts are the same.
#[test]
fn an_export_on_one_connection_still_drops_the_deleted_rows() {
    let pg = Pg::start(15);
    pg.load_prod("prod");
    let markers = plant_markers(&pg, "prod");
    pg.psql(
        "postgres",
        "create role lone login connection limit 1 password 'lone-pw'; \
         grant pg_read_all_data to lone",
    );
    let url = pg
        .url("prod")
        .replace(&format!("postgres:{}@", pg.password), "lone:lone-pw@");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let export = run(crate::harness::xtask(&[
        "clone-prod",
        "--source",
        &url,
        "--out",
        bundle.to_str().unwrap(),
    ]))
    .ok();
    let sql = fs::read_to_string(bundle.join("netpoint.sql")).unwrap();
    assert!(
        sql.contains("COPY public.users_token "),
        "streamed, not left out"
    );
    assert_eq!(found(&sql, &markers), Vec::<&String>::new());
    assert_eq!(found(&export.output(), &markers), Vec::<&String>::new());
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    let token_rule = manifest["scrub"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "public.users_token: delete-rows")
        .unwrap()
        .clone();
    assert_eq!(token_rule["rows"].as_u64(), Some(1), "the planted token");
}
