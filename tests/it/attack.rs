//! An attacker with write access to a bundle's directory, but not to the signing key: the
//! files an import checked are the files it loads, whatever is renamed, linked or rewritten
//! after the check.

use std::{
    fs,
    io::{Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    harness::{run, sh_quote, wait_for, workspace_root, xtask, xtask_bin, Pg, Run},
    signing::{keygen, public_key, signers},
};

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A statement the guard would refuse, first in the file, so that psql runs it at once.
const PAYLOAD: &[u8] = b"ALTER ROLE postgres SET work_mem = '7MB';\n";

/// A signed bundle of the `prod` database, and the allowed signers file that trusts it.
fn signed_bundle(pg: &Pg, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let bundle = dir.join("bundle");
    let key = keygen(dir, "ci", "");
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        s(&bundle),
        "--sign-key",
        s(&key),
    ]))
    .ok();
    let allowed = signers(
        dir,
        "allowed_signers",
        &[format!("ci@netpoint {}", public_key(&key))],
    );
    (bundle, allowed)
}

/// Imports `bundle` on a pseudo-terminal without `--yes`, runs `meddle` while the import
/// waits for its confirmation (after every check of the bundle), then confirms.
fn import_meddled(bundle: &Path, allowed: &Path, target: &str, meddle: impl FnOnce()) -> Run {
    let line: Vec<String> = [
        s(xtask_bin()),
        "clone-prod",
        "--bundle",
        s(bundle),
        "--allowed-signers",
        s(allowed),
        "--target",
        target,
        "--jobs",
        "2",
    ]
    .iter()
    .map(|w| sh_quote(w))
    .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("NETPOINT_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("running script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_for("the confirmation prompt", Duration::from_secs(120), || {
        let text = seen.lock().unwrap();
        text.contains("[y/N]") || text.contains("error:")
    });
    meddle();
    stdin.write_all(b"y\n").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let stdout = seen.lock().unwrap().clone();
    Run {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn a_bundle_file_replaced_linked_or_rewritten_after_its_check_is_never_loaded() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let (bundle, allowed) = signed_bundle(&pg, dir.path());
    let target = pg.url("netpoint");
    let signed = fs::read(bundle.join("netpoint.sql")).unwrap();
    let evil = [PAYLOAD, &signed].concat();
    let before = pg.fingerprint("netpoint");

    // A netpoint.sql renamed into place after the check: the import loads what it checked.
    let planted = dir.path().join("evil.sql");
    fs::write(&planted, &evil).unwrap();
    let renamed = import_meddled(&bundle, &allowed, &target, || {
        fs::rename(&planted, bundle.join("netpoint.sql")).unwrap();
    });
    pg.assert_unchanged(
        "netpoint",
        &before,
        format!("renamed: {}", renamed.output()),
    );
    assert!(
        renamed.status.success() || renamed.output().contains("nothing was changed"),
        "renamed: {}",
        renamed.output()
    );
    fs::write(bundle.join("netpoint.sql"), &signed).unwrap();

    // The same file rewritten in place: refused before anything runs.
    let rewritten = import_meddled(&bundle, &allowed, &target, || {
        fs::write(bundle.join("netpoint.sql"), &evil).unwrap();
    });
    assert!(!rewritten.status.success(), "{}", rewritten.output());
    assert!(
        rewritten
            .output()
            .contains("netpoint.sql changed after it was checked"),
        "{}",
        rewritten.output()
    );
    pg.assert_unchanged(
        "netpoint",
        &before,
        format!("rewritten: {}", rewritten.output()),
    );
    fs::write(bundle.join("netpoint.sql"), &signed).unwrap();

    // Links: each checked file must be one of the bundle's own, not a link to another.
    for name in ["netpoint.sql", "SHA256SUMS", "manifest.json"] {
        let real = dir.path().join(format!("real-{name}"));
        fs::rename(bundle.join(name), &real).unwrap();
        std::os::unix::fs::symlink(&real, bundle.join(name)).unwrap();
        let linked = run(xtask(&[
            "clone-prod",
            "--bundle",
            s(&bundle),
            "--allowed-signers",
            s(&allowed),
            "--target",
            &target,
            "--yes",
        ]));
        linked.fails_with(&format!("{name} is a symbolic link"));
        pg.assert_unchanged("netpoint", &before, format!("{name} linked"));
        fs::remove_file(bundle.join(name)).unwrap();
        fs::rename(&real, bundle.join(name)).unwrap();
    }
}
