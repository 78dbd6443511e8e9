//! The leak scan: credential-shaped values and e-mail addresses in columns no scrub rule
//! covers are reported by column, kind and count after every load and export, never shown;
//! `--strict` fails with the target untouched and no bundle left behind. The scan of rows as
//! they stream and the scan of a loaded database find the same.

use std::{fs, path::Path};

use crate::harness::{marker, run, xtask, Pg};

/// The findings the planted values must give, as the summary and errors name them.
const FINDINGS: &[(&str, u64)] = &[
    ("public.dcim_cable.comments", 1),
    ("public.dcim_device.comments", 2),
    ("public.dcim_rack.custom_field_data", 3),
    ("public.dcim_site.comments", 1),
    ("public.ipam_ipaddress.comments", 1),
    ("public.ipam_prefix.comments", 1),
    ("public.ipam_vlan.comments", 1),
    ("public.ipam_vrf.comments", 1),
    ("public.tenancy_tenant.comments", 1),
];

/// Plants credential-shaped values in uncovered columns and returns the secret parts.
fn plant(pg: &Pg, db: &str) -> Vec<String> {
    let (password, key, api_key) = (marker("hunter2"), marker("rsakey"), marker("apikey"));
    let more: Vec<String> = (0..6).map(|n| marker(&format!("shape{n}"))).collect();
    let first = |table: &str, comments: &str| {
        format!(
            "update {table} set comments = E'{comments}' where id = (select min(id) from {table});"
        )
    };
    // Shapes seen in real deployments: a URL with a password but no user, device
    // configuration, a shared access signature, an incoming-webhook URL, a JWT and an API
    // key by prefix, passphrase and pwd pairs.
    pg.psql(
        db,
        &[
            first("ipam_prefix", &format!("cache at redis://:{}@cache.example:6379/0", more[0])),
            first(
                "dcim_cable",
                &format!("enable secret 5 $1${0}\\nusername admin privilege 15 password 0 {0}\\nsnmp-server community {0} RO", more[1]),
            ),
            first("ipam_vlan", &format!("backup https://b.blob.example/c?sv=2022-11-02&sig={}abcdefgh", more[2])),
            first(
                "ipam_vrf",
                &format!("alerts to https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{}abcdefgh", more[3]),
            ),
            first(
                "tenancy_tenant",
                &format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.{0}abcdefgh and sk-ant-api03-{0}abcdefgh", more[4]),
            ),
            first("ipam_ipaddress", &format!("bmc passphrase={0} pwd={0}", more[5])),
        ]
        .concat(),
    );
    pg.psql(
        db,
        &format!(
            "update dcim_site set comments = 'console at https://admin:{password}@example.com/' where id = (select min(id) from dcim_site);
             update dcim_device set comments = E'-----BEGIN RSA PRIVATE KEY-----\\n{key}\\n-----END RSA PRIVATE KEY-----'
                 where id in (select id from dcim_device order by id limit 2);
             update dcim_rack set custom_field_data = '{{\"api_key\": \"{api_key}\", \"row\": 3}}'
                 where id in (select id from dcim_rack order by id limit 3);"
        ),
    );
    [password, key, api_key].into_iter().chain(more).collect()
}

/// Fails when the run's output shows a planted value, or lacks a finding.
#[track_caller]
fn assert_reported(output: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a value leaked:\n{output}"
        );
    }
    for (column, rows) in FINDINGS {
        let rows = if *rows == 1 {
            "1 row".to_string()
        } else {
            format!("{rows} rows")
        };
        assert!(
            output.contains(&format!("{column} ({rows})")),
            "{column} ({rows}) not reported:\n{output}"
        );
    }
}

fn databases_besides(pg: &Pg, known: &[&str]) -> Vec<String> {
    pg.databases()
        .into_iter()
        .filter(|db| !known.contains(&db.as_str()) && !db.starts_with("template"))
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn findings_are_named_by_column_and_count_and_strict_changes_nothing() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let secrets = plant(&pg, "prod");
    let (prod, dev) = (pg.url("prod"), pg.url("dev"));
    let clone = |extra: &[&str]| {
        let mut args = vec!["clone-prod", "--source", &prod, "--target", &dev, "--yes"];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };

    // A direct clone warns of each column, and names them all in its summary.
    let direct = clone(&[]).ok();
    assert_reported(&direct.output(), &secrets);
    for (column, _) in FINDINGS {
        assert!(
            direct
                .stderr
                .lines()
                .any(|l| l.starts_with("warning: leak scan: ") && l.contains(column)),
            "no warning for {column}:\n{}",
            direct.stderr
        );
    }
    let warnings = direct.stderr.matches("warning: leak scan: ").count();
    assert_eq!(warnings, FINDINGS.len(), "{}", direct.stderr);

    // --strict: one error line, the old database still in place, no temporary one left.
    pg.psql("dev", "create table old_data_marker (x int)");
    let counts = pg.row_counts_fast("dev");
    let strict = clone(&["--strict"]).fails_with("leak scan (strict)");
    assert_reported(&strict.output(), &secrets);
    let error = strict
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        error.contains("the target is untouched")
            && error.contains("--scrub-rules")
            && error.contains("drop --strict"),
        "{error}"
    );
    assert_eq!(pg.row_counts_fast("dev"), counts, "the target changed");
    assert_eq!(
        databases_besides(&pg, &["postgres", "prod", "dev"]),
        Vec::<String>::new()
    );

    // Rules for those columns cover them: the strict clone goes through and finds nothing.
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules.toml");
    fs::write(
        &rules,
        "[[rule]]\ntable = \"dcim_site\"\ncolumn = \"comments\"\naction = \"empty\"\n\
         [[rule]]\ntable = \"dcim_device\"\ncolumn = \"comments\"\naction = \"empty\"\n\
         [[rule]]\ntable = \"dcim_rack\"\ncolumn = \"custom_field_data\"\naction = \"jsonb-remove-keys\"\nkeys = [\"key\"]\n\
         [[rule]]\ntable = \"dcim_cable\"\ncolumn = \"comments\"\naction = \"empty\"\n\
         [[rule]]\ntable = \"ipam_ipaddress\"\ncolumn = \"comments\"\naction = \"redact-secrets\"\n\
         [[rule]]\ntable = \"ipam_prefix\"\ncolumn = \"comments\"\naction = \"redact-secrets\"\n\
         [[rule]]\ntable = \"ipam_vlan\"\ncolumn = \"comments\"\naction = \"redact-secrets\"\n\
         [[rule]]\ntable = \"ipam_vrf\"\ncolumn = \"comments\"\naction = \"redact-secrets\"\n\
         [[rule]]\ntable = \"tenancy_tenant\"\ncolumn = \"comments\"\naction = \"redact-secrets\"\n",
    )
    .unwrap();
    let covered = clone(&["--strict", "--scrub-rules", s(&rules)]).ok();
    assert!(
        covered.stderr.contains("leak scan: nothing found in ")
            && !covered.stderr.contains("warning: leak scan"),
        "{}",
        covered.stderr
    );

    // An export records the findings in its manifest; --strict leaves no bundle behind.
    let bundle = work.path().join("bundle");
    let export = run(xtask(&[
        "clone-prod",
        "--source",
        &prod,
        "--out",
        s(&bundle),
    ]))
    .ok();
    assert_reported(&export.output(), &secrets);
    let manifest = fs::read_to_string(bundle.join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let expected: Vec<serde_json::Value> = FINDINGS
        .iter()
        .map(|(column, rows)| serde_json::json!({"column": column, "rows": rows, "kind": "credential"}))
        .collect();
    assert_eq!(manifest["leaks"], serde_json::Value::Array(expected));
    let refused = work.path().join("refused");
    run(xtask(&[
        "clone-prod",
        "--source",
        &prod,
        "--out",
        s(&refused),
        "--strict",
    ]))
    .fails_with("no bundle was written");
    let mut left: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bundle", "rules.toml"], "a strict export left files");

    // An import of that bundle scans what it loaded, and --strict keeps the target as it was.
    pg.psql("dev", "create table old_data_marker (x int)");
    let counts = pg.row_counts_fast("dev");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "clone-prod",
            "--bundle",
            s(&bundle),
            "--trust-unsigned",
            "--target",
            &dev,
            "--yes",
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    let strict = import(&["--strict"]).fails_with("leak scan (strict)");
    assert_reported(&strict.output(), &secrets);
    assert_eq!(pg.row_counts_fast("dev"), counts, "the target changed");
    assert_eq!(
        databases_besides(&pg, &["postgres", "prod", "dev"]),
        Vec::<String>::new()
    );
    let imported = import(&[]).ok();
    assert_reported(&imported.output(), &secrets);
}

#[test]
fn a_clean_database_gives_no_finding_and_refreshes_record_findings_deterministically() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let export = run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        s(&bundle),
        "--strict",
    ]))
    .ok();
    assert!(
        export.stderr.contains("leak scan: nothing found in ")
            && !export.stderr.contains("warning: leak scan"),
        "{}",
        export.stderr
    );
    let manifest = fs::read_to_string(bundle.join("manifest.json")).unwrap();
    assert!(!manifest.contains("\"leaks\""), "{manifest}");

    // Fixtures record findings by column and count only: two refreshes, the same bytes.
    let secrets = plant(&pg, "prod");
    let fixtures = work.path().join("fixtures");
    let refresh = || {
        run(xtask(&[
            "seed-dev",
            "--refresh",
            "--source",
            &pg.url("prod"),
            "--fixtures",
            s(&fixtures),
        ]))
        .ok()
    };
    let first = refresh();
    assert_reported(&first.output(), &secrets);
    let once = fs::read(fixtures.join("manifest.json")).unwrap();
    refresh();
    assert_eq!(fs::read(fixtures.join("manifest.json")).unwrap(), once);
    let manifest: serde_json::Value = serde_json::from_slice(&once).unwrap();
    assert_eq!(
        manifest["leaks"].as_array().map(Vec::len),
        Some(FINDINGS.len())
    );
}

/// Values and the kinds of finding each must give: `c` credential, `e` e-mail address.
const CORPUS: &[(&str, &str)] = &[
    ("noc@carrier.net", "e"),
    ("Contact: Jane.Doe+noc@Mail.Carrier-One.co.uk.", "e"),
    ("{\"email\": \"ops@corp.io\"}", "e"),
    ("mailto:OPS@CORP.IO", "e"),
    ("https://example.com/form?email=ops@corp.io&x=1", "e"),
    ("a@b.example, c@d.org", "e"),
    ("write to ops@corp.io: now", "e"),
    ("<ops@corp.io>", "e"),
    ("ops@example.org.corp.io", "e"),
    ("first line\nops@corp.io\tthen a tab", "e"),
    ("token=abcdef ops@corp.io", "ce"),
    ("https://admin:hunter2@corp.io/", "c"),
    ("git@github.com:netpoint/app.git", ""),
    ("ssh://git@github.com/netpoint/app.git", ""),
    ("https://deploy@gitlab.corp.io/x", ""),
    ("user@10.0.0.1", ""),
    ("registry/app@sha256:0123abcd", ""),
    ("left-pad@1.3.0", ""),
    ("user-3@example.invalid", ""),
    ("noc@northwind.example", ""),
    ("ci@example.com and ops@mail.example.org", ""),
    ("dev@box.localhost; qa@ci.test", ""),
    ("ops@corp.io2", ""),
    ("ops@corp.com.example.org", ""),
];

/// `(column, kind)` of each `warning: leak scan:` line.
fn warned(stderr: &str) -> Vec<(String, &'static str)> {
    let mut found: Vec<(String, &'static str)> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("warning: leak scan: "))
        .filter_map(|l| {
            let (column, rest) = l.split_once(": ")?;
            let kind = match rest.contains(" with e-mail addresses ") {
                true => "e",
                false => "c",
            };
            Some((column.to_string(), kind))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn email_addresses_are_their_own_kind_and_both_scans_find_the_same() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let columns: Vec<String> = (0..CORPUS.len()).map(|n| format!("c{n:02}")).collect();
    let quote = |v: &str| {
        format!(
            "E'{}'",
            v.replace('\\', "\\\\")
                .replace('\'', "\\'")
                .replace('\n', "\\n")
                .replace('\t', "\\t")
        )
    };
    pg.psql(
        "prod",
        &format!(
            "create table public.corpus (id int primary key, {}, data jsonb, tags text[]);
             insert into public.corpus values (1, {}, '{{\"contact\": {{\"mail\": \"ops@corp.io\"}}}}', array['a', 'ops@corp.io']);",
            columns.iter().map(|c| format!("{c} text")).collect::<Vec<_>>().join(", "),
            CORPUS.iter().map(|(v, _)| quote(v)).collect::<Vec<_>>().join(", ")
        ),
    );
    let mut expected: Vec<(String, &'static str)> = vec![
        ("public.corpus.data".to_string(), "e"),
        ("public.corpus.tags".to_string(), "e"),
    ];
    for (column, (_, kinds)) in columns.iter().zip(CORPUS) {
        for kind in ["c", "e"] {
            if kinds.contains(kind) {
                expected.push((format!("public.corpus.{column}"), kind));
            }
        }
    }
    expected.sort();

    // The rows as they stream (a direct clone and an export), and the loaded database (an
    // import of that export): the same findings, each of its kind.
    let direct = run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--target",
        &pg.url("dev"),
        "--yes",
    ]))
    .ok();
    assert_eq!(warned(&direct.stderr), expected, "{}", direct.stderr);
    assert!(
        direct
            .stderr
            .contains("e-mail addresses in public.corpus.c00 (1 row), "),
        "{}",
        direct.stderr
    );
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let export = run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        s(&bundle),
    ]))
    .ok();
    assert_eq!(warned(&export.stderr), expected, "{}", export.stderr);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    let mut recorded: Vec<(String, &'static str)> = manifest["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|leak| {
            assert_eq!(leak["rows"], 1, "{leak}");
            let kind = match leak["kind"].as_str().unwrap() {
                "credential" => "c",
                "email" => "e",
                other => panic!("kind {other}"),
            };
            (leak["column"].as_str().unwrap().to_string(), kind)
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, expected);
    // In one stream (`--jobs 1`), an import scans the database it loaded, in SQL.
    let import = run(xtask(&[
        "clone-prod",
        "--jobs",
        "1",
        "--trust-unsigned",
        "--bundle",
        s(&bundle),
        "--target",
        &pg.url("imported"),
        "--yes",
    ]))
    .ok();
    assert_eq!(warned(&import.stderr), expected, "{}", import.stderr);
    assert!(
        !import.stderr.contains("scanned as the rows streamed"),
        "{}",
        import.stderr
    );

    // --strict refuses e-mail addresses as it does credentials, and changes nothing.
    let rules = work.path().join("rules.toml");
    let credentials: Vec<&String> = columns
        .iter()
        .zip(CORPUS)
        .filter(|(_, (_, kinds))| kinds.contains('c'))
        .map(|(c, _)| c)
        .collect();
    fs::write(
        &rules,
        credentials
            .iter()
            .map(|c| {
                format!(
                    "[[rule]]\ntable = \"corpus\"\ncolumn = \"{c}\"\naction = \"redact-secrets\"\n"
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    // The corpus is kept on purpose, so that the scan (not the coverage gate) refuses it.
    let kept = rules.with_file_name("coverage.toml");
    fs::write(&kept, "version = 1\n[keep]\n\"corpus.*\" = \"test data\"\n").unwrap();
    pg.psql("dev", "create table old_data_marker (x int)");
    let counts = pg.row_counts_fast("dev");
    let strict = run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--target",
        &pg.url("dev"),
        "--yes",
        "--strict",
        "--scrub-rules",
        s(&rules),
        "--scrub-coverage",
        s(&kept),
    ]))
    .fails_with("leak scan (strict): e-mail addresses in public.corpus.c00 (1 row), ");
    assert!(
        !strict.stderr.contains("credential-shaped"),
        "{}",
        strict.stderr
    );
    assert_eq!(pg.row_counts_fast("dev"), counts, "the target changed");
    assert_eq!(
        databases_besides(&pg, &["postgres", "prod", "dev", "imported"]),
        Vec::<String>::new()
    );
}

/// A column that can hold text, with neither a scrub rule nor a coverage entry, is counted by
/// a clone, and refused by a strict one before anything changes.
#[test]
fn strict_refuses_columns_no_rule_or_coverage_entry_accounts_for() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.psql(
        "prod",
        "alter table dcim_site add column manager_phone text",
    );
    let (prod, dev) = (pg.url("prod"), pg.url("dev"));
    let clone = |extra: &[&str]| {
        let mut args = vec!["clone-prod", "--source", &prod, "--target", &dev, "--yes"];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    pg.create_db("dev");
    pg.psql("dev", "create table old_data_marker (x int)");
    let counts = pg.row_counts_fast("dev");
    let strict = clone(&["--strict"]).fails_with("public.dcim_site.manager_phone");
    assert!(
        strict.stderr.contains("1 column(s) of ")
            && strict.stderr.contains("fixtures/scrub-coverage.toml")
            && strict.stderr.contains("drop --strict"),
        "{}",
        strict.stderr
    );
    assert_eq!(pg.row_counts_fast("dev"), counts, "the target changed");
    assert_eq!(
        databases_besides(&pg, &["postgres", "prod", "dev"]),
        Vec::<String>::new()
    );

    // Without --strict the clone says how many, and copies.
    let copied = clone(&[]).ok();
    assert!(
        copied
            .stderr
            .lines()
            .any(|l| l.starts_with("warning: 1 column(s) of ")
                && l.contains("dcim_site.manager_phone")),
        "{}",
        copied.stderr
    );
}
