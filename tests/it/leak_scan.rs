//! The leak scan: credential-shaped values in columns no scrub rule covers are reported by
//! column and count after every load and export, never shown; `--strict` fails with the
//! target untouched and no bundle left behind.

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
    let strict = clone(&["--strict"]).fails_with("leak scan (--strict)");
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
        .map(|(column, rows)| serde_json::json!({"column": column, "rows": rows}))
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
    let strict = import(&["--strict"]).fails_with("leak scan (--strict)");
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
