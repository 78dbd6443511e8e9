//! Careless and hostile command lines, run the way developers and CI run them: through
//! `cargo xtask`. A password given in a URL on the command line shows nowhere: not in
//! cargo's own output, not in `--verbose`, not in clap's errors, not in the tool's messages.

use std::{
    fs,
    process::{Command, Stdio},
};

use crate::harness::{free_port, marker, run, tree, workspace_root, xtask_bin, Pg, Run};

/// `cargo xtask ...` from the workspace root, through the alias in `.cargo/config.toml`,
/// with no NETPOINT_* or PG* variables and no terminal.
fn cargo_xtask(args: &[&str]) -> Command {
    // Built once up front, so that no run waits on cargo's build lock.
    xtask_bin();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("xtask")
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("NETPOINT_") || key.starts_with("PG") || key.starts_with("CARGO_TERM_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

#[track_caller]
fn assert_hidden(what: &str, out: &Run, secret: &str) {
    assert!(
        !out.output().contains(secret),
        "{what}: the password is in the output:\n{}",
        out.output()
    );
    assert!(
        !out.stderr.contains("Running `"),
        "{what}: cargo printed the command line:\n{}",
        out.stderr
    );
}

#[test]
fn passwords_on_the_command_line_never_reach_the_output() {
    let secret = marker("cli-secret");
    let pg = Pg::start_with_password(15, &secret);
    pg.load_fixture("netpoint");
    let url = pg.url("netpoint");
    let masked = format!("postgres://postgres:***@127.0.0.1:{}/netpoint", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("schema.sql");
    let out_arg = output.to_str().unwrap();

    // Runs that work, verbose: every command echoed, the URL masked.
    let wrote = run(cargo_xtask(&[
        "-v",
        "schema-snapshot",
        "--source",
        &url,
        "--output",
        out_arg,
    ]))
    .ok();
    assert_hidden("write", &wrote, &secret);
    assert!(wrote.stderr.contains("--schema-only"), "{}", wrote.stderr);
    assert!(wrote.stderr.contains(&masked), "{}", wrote.stderr);
    // Cargo configured to be verbose still runs the alias quietly.
    let mut check = cargo_xtask(&[
        "-v",
        "schema-snapshot",
        &format!("--source={url}"),
        "--output",
        out_arg,
        "--check",
    ]);
    check.env("CARGO_TERM_VERBOSE", "true");
    let checked = run(check).ok();
    assert_hidden("check", &checked, &secret);
    let planned = run(cargo_xtask(&[
        "-v",
        "clone-prod",
        "--source",
        &url,
        "--target",
        &pg.url("copy"),
        "--dry-run",
    ]))
    .ok();
    assert_hidden("dry run", &planned, &secret);
    assert!(planned.stdout.contains("Plan:"), "{}", planned.stdout);

    // Runs that fail: exit code, what the one error line must say, and the password nowhere.
    let before = tree(dir.path());
    let closed = format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/netpoint",
        free_port()
    );
    let scheme_without_slashes = format!("postgres:postgres:{secret}@127.0.0.1/netpoint");
    let cases: Vec<(&str, Vec<String>, i32, String)> = vec![
        (
            "closed port",
            owned(&[
                "-v",
                "schema-snapshot",
                "--source",
                &closed,
                "--output",
                out_arg,
            ]),
            1,
            "connection refused".into(),
        ),
        (
            "URL without --source",
            owned(&["schema-snapshot", &url, "--output", out_arg]),
            2,
            format!("unexpected argument '{masked}' found"),
        ),
        (
            "URL with its password as a parameter, without --source",
            owned(&[
                "schema-snapshot",
                &format!(
                    "postgres://postgres@127.0.0.1:{}/netpoint?password={secret}",
                    pg.port
                ),
            ]),
            2,
            "?password=***' found".into(),
        ),
        (
            "unknown flag after a URL",
            owned(&["schema-snapshot", "--source", &url, "--bogus"]),
            2,
            "unexpected argument '--bogus' found".into(),
        ),
        (
            "URL given to --jobs",
            owned(&["--jobs", &url, "schema-snapshot"]),
            2,
            format!("invalid value '{masked}' for '--jobs <N>'"),
        ),
        (
            "URL given to --color",
            owned(&["--color", &url, "schema-snapshot"]),
            2,
            format!("invalid value '{masked}' for '--color <WHEN>'"),
        ),
        (
            "URL given to --output",
            owned(&["schema-snapshot", "--source", &url, "--output", &url]),
            1,
            format!("writing {masked}: directory postgres://postgres:***@127.0.0.1:"),
        ),
        (
            "scheme without //",
            owned(&[
                "schema-snapshot",
                "--source",
                &scheme_without_slashes,
                "--output",
                out_arg,
            ]),
            1,
            "database name `postgres:***@127.0.0.1/netpoint` contains `/`".into(),
        ),
    ];
    for (what, args, code, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(cargo_xtask(&args));
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: exit code\n{}",
            out.output()
        );
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert!(
            errors.len() == 1 && errors[0].contains(&needle),
            "{what}: expected one error line with `{needle}`:\n{}",
            out.stderr
        );
        assert_hidden(what, &out, &secret);
        assert_eq!(tree(dir.path()), before, "{what}: the output changed");
    }
    // The same malformed URL from the environment.
    let mut from_env = cargo_xtask(&["schema-snapshot", "--output", out_arg]);
    from_env.env("NETPOINT_DATABASE_URL", &scheme_without_slashes);
    let out = run(from_env).fails_with("database name `postgres:***@127.0.0.1/netpoint`");
    assert_hidden("malformed URL in the environment", &out, &secret);
    assert_eq!(tree(dir.path()), before);

    assert!(
        fs::read_to_string(&output)
            .unwrap()
            .contains("CREATE TABLE public.dcim_site ("),
        "the snapshot written first is still whole"
    );
}
