//! Signed bundles: `clone-prod --out --sign-key` signs `SHA256SUMS` with an SSH key (a key
//! file, or a public key whose private half is in ssh-agent); `--bundle` loads only what an
//! allowed signer signed, or an unsigned bundle with `--trust-unsigned`, and refuses the rest
//! with the target untouched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    clone_prod::rewrite_sums,
    harness::{free_port, run, workspace_root, xtask, Pg, Run},
};

const PRINCIPAL: &str = "ci@netpoint.example";

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A new ed25519 key pair `dir/name` (and `name.pub`), with `passphrase` ("" for none).
pub fn keygen(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen");
    path
}

pub fn public_key(key: &Path) -> String {
    fs::read_to_string(format!("{}.pub", key.display()))
        .unwrap()
        .trim()
        .to_string()
}

/// `SHA256:…`, as `ssh-keygen -l` prints it.
fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", key.display()))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// An allowed signers file of `lines`.
pub fn signers(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `ssh-keygen -Y verify` of the bundle's signature, by hand, as README shows it.
fn verified_by_ssh_keygen(bundle: &Path, allowed: &Path, principal: &str) -> bool {
    Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-n",
            "netpoint-bundle",
            "-I",
            principal,
            "-f",
        ])
        .arg(allowed)
        .arg("-s")
        .arg(bundle.join("SHA256SUMS.sig"))
        .stdin(fs::File::open(bundle.join("SHA256SUMS")).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn export(pg: &Pg, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let source = pg.url("prod");
    let mut args = vec!["clone-prod", "--source", &source, "--out", s(out)];
    args.extend_from_slice(extra);
    let mut cmd = xtask(&args);
    cmd.env_remove("SSH_AUTH_SOCK").envs(envs.iter().copied());
    run(cmd)
}

fn import(pg: &Pg, bundle: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Run {
    let target = pg.url("dev");
    let mut args = vec![
        "clone-prod",
        "--bundle",
        s(bundle),
        "--target",
        &target,
        "--yes",
    ];
    args.extend_from_slice(extra);
    let mut cmd = xtask(&args);
    cmd.envs(envs.iter().copied());
    run(cmd)
}

/// Whether the closing summary (the line naming the tables loaded) says `text`.
fn summary_says(run: &Run, text: &str) -> bool {
    run.output()
        .lines()
        .any(|line| line.contains(" tables, ") && line.contains(text))
}

/// A copy of `bundle` at `to`, for tampering with.
fn copy_bundle(bundle: &Path, to: &Path) -> PathBuf {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(bundle).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to.to_path_buf()
}

/// A server with `prod` (the fixture) and `dev` (a database a developer has, one table).
fn prod_and_dev() -> Pg {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.create_db("dev");
    pg.psql(
        "dev",
        "create table mine (id int); insert into mine values (1), (2)",
    );
    pg
}

#[test]
fn a_bundle_signed_with_a_key_file_imports_and_names_its_signer() {
    let pg = prod_and_dev();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "ci", "");
    let allowed = signers(
        dir.path(),
        "allowed_signers",
        &[
            "# the export job".into(),
            format!(
                "{PRINCIPAL} namespaces=\"netpoint-bundle\" {}",
                public_key(&key)
            ),
        ],
    );

    // By flag, then by environment.
    let bundle = dir.path().join("bundle");
    let exported = export(&pg, &bundle, &["--sign-key", s(&key)], &[]).ok();
    assert!(
        exported.output().contains("signed with ED25519 key"),
        "{}",
        exported.output()
    );
    let by_env = dir.path().join("bundle-env");
    export(
        &pg,
        &by_env,
        &[],
        &[("NETPOINT_BUNDLE_SIGNING_KEY", s(&key))],
    )
    .ok();
    for bundle in [&bundle, &by_env] {
        let sig = fs::read_to_string(bundle.join("SHA256SUMS.sig")).unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----\n"), "{sig}");
        assert!(verified_by_ssh_keygen(bundle, &allowed, PRINCIPAL));
        assert!(!verified_by_ssh_keygen(bundle, &allowed, "someone@else"));
        let manifest = fs::read_to_string(bundle.join("manifest.json")).unwrap();
        assert!(manifest.contains("\"format\": 3,"), "{manifest}");
    }

    let imported = import(&pg, &bundle, &["--allowed-signers", s(&allowed)], &[]).ok();
    let signer = format!("signed by {PRINCIPAL} (ED25519 key {})", fingerprint(&key));
    assert!(summary_says(&imported, &signer), "{}", imported.output());
    assert_eq!(pg.psql("dev", "select count(*) from dcim_site"), "7");

    pg.psql("dev", "drop table dcim_site cascade");
    let imported = import(
        &pg,
        &by_env,
        &[],
        &[("NETPOINT_ALLOWED_SIGNERS", s(&allowed))],
    )
    .ok();
    assert!(summary_says(&imported, &signer), "{}", imported.output());
    assert_eq!(pg.psql("dev", "select count(*) from dcim_site"), "7");
}

/// A private ssh-agent on a socket of the test's own, ended with the test.
struct Agent {
    pid: String,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-s")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .output()
            .expect("running ssh-agent (openssh-client)");
        assert!(out.status.success(), "ssh-agent");
        let text = String::from_utf8(out.stdout).unwrap();
        let pid = text
            .split(';')
            .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
            .expect("ssh-agent prints its pid")
            .to_string();
        Agent { pid, socket }
    }

    /// `ssh-add KEY`, the passphrase typed by an askpass program.
    fn add(&self, key: &Path, passphrase: &str, dir: &Path) {
        let askpass = dir.join("askpass.sh");
        fs::write(&askpass, format!("#!/bin/sh\necho '{passphrase}'\n")).unwrap();
        let status = Command::new("chmod")
            .arg("700")
            .arg(&askpass)
            .status()
            .unwrap();
        assert!(status.success());
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

#[test]
fn a_key_with_a_passphrase_signs_through_ssh_agent() {
    let pg = prod_and_dev();
    let dir = tempfile::tempdir().unwrap();
    let passphrase = "correct horse battery";
    let key = keygen(dir.path(), "release", passphrase);
    let pub_key = PathBuf::from(format!("{}.pub", key.display()));
    let allowed = signers(
        dir.path(),
        "allowed_signers",
        &[format!("{PRINCIPAL} {}", public_key(&key))],
    );
    let bundle = dir.path().join("bundle");

    // The key file itself is refused, with the advice that the rest of this test follows.
    let refused = export(&pg, &bundle, &["--sign-key", s(&key)], &[]).fails_with(
        "is protected by a passphrase, which this tool never asks for: add it to ssh-agent (`ssh-add",
    );
    assert!(
        refused.stderr.contains("release.pub) instead"),
        "{}",
        refused.stderr
    );
    assert!(!bundle.exists());
    // Its public key needs an agent, and one that holds the key.
    export(&pg, &bundle, &["--sign-key", s(&pub_key)], &[]).fails_with("SSH_AUTH_SOCK is not set");
    let agent = Agent::start(dir.path());
    let sock = s(&agent.socket).to_string();
    let agent_env = [("SSH_AUTH_SOCK", sock.as_str())];
    export(&pg, &bundle, &["--sign-key", s(&pub_key)], &agent_env)
        .fails_with("ssh-agent does not hold the private key of");
    assert!(!bundle.exists());

    agent.add(&key, passphrase, dir.path());
    let exported = export(&pg, &bundle, &["--sign-key", s(&pub_key)], &agent_env).ok();
    assert!(
        exported.output().contains("in ssh-agent"),
        "{}",
        exported.output()
    );
    assert!(verified_by_ssh_keygen(&bundle, &allowed, PRINCIPAL));
    let imported = import(&pg, &bundle, &["--allowed-signers", s(&allowed)], &[]).ok();
    let signer = format!("signed by {PRINCIPAL} (ED25519 key {})", fingerprint(&key));
    assert!(summary_says(&imported, &signer), "{}", imported.output());
    assert_eq!(pg.psql("dev", "select count(*) from dcim_site"), "7");
    assert!(!imported.output().contains(passphrase));
}

#[test]
fn unsigned_unknown_and_changed_bundles_are_refused_and_nothing_changes() {
    let pg = prod_and_dev();
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "ci", "");
    let stranger = keygen(dir.path(), "stranger", "");
    let allowed = signers(
        dir.path(),
        "allowed_signers",
        &[format!(
            "{PRINCIPAL} namespaces=\"netpoint-bundle\" {}",
            public_key(&key)
        )],
    );
    let signed = dir.path().join("signed");
    export(&pg, &signed, &["--sign-key", s(&key)], &[]).ok();
    let before = pg.fingerprint("dev");
    let bundle_copy = |name: &str| copy_bundle(&signed, &dir.path().join(name));

    let unsigned = bundle_copy("unsigned");
    fs::remove_file(unsigned.join("SHA256SUMS.sig")).unwrap();

    let by_stranger = dir.path().join("by-stranger");
    export(&pg, &by_stranger, &["--sign-key", s(&stranger)], &[]).ok();

    // SHA256SUMS edited after signing: one more line.
    let sums_changed = bundle_copy("sums-changed");
    let mut sums = fs::read_to_string(sums_changed.join("SHA256SUMS")).unwrap();
    sums.push_str(&format!("{}  extra.sql\n", "0".repeat(64)));
    fs::write(sums_changed.join("SHA256SUMS"), sums).unwrap();

    // netpoint.sql edited and SHA256SUMS recomputed to match, as an attacker would.
    let sql_changed = bundle_copy("sql-changed");
    let mut sql = fs::read_to_string(sql_changed.join("netpoint.sql")).unwrap();
    sql = sql.replacen(
        "SET row_security = off;\n",
        "SET row_security = off;\nCREATE ROLE netpoint_injected;\n",
        1,
    );
    fs::write(sql_changed.join("netpoint.sql"), sql).unwrap();
    rewrite_sums(&sql_changed, "netpoint.sql");

    // A signature by the allowed key, but made for git.
    let for_git = bundle_copy("for-git");
    fs::remove_file(for_git.join("SHA256SUMS.sig")).unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "git", "-f"])
        .arg(&key)
        .arg(for_git.join("SHA256SUMS"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let malformed = bundle_copy("malformed");
    fs::write(
        malformed.join("SHA256SUMS.sig"),
        "-----BEGIN SSH SIGNATURE-----\nnot base64\n",
    )
    .unwrap();

    let with_file = ["--allowed-signers", s(&allowed)];
    let trusting = ["--allowed-signers", s(&allowed), "--trust-unsigned"];
    let stranger_fp = fingerprint(&stranger);
    let not_listed = format!(
        "is signed by ED25519 key {stranger_fp}, which {} does not list",
        allowed.display()
    );
    let cases: Vec<(&str, &Path, &[&str], String)> = vec![
        (
            "unsigned",
            &unsigned,
            &with_file,
            "is not signed (it has no SHA256SUMS.sig), nothing was changed: export it with `--sign-key KEY`, or pass --trust-unsigned if you made it yourself".into(),
        ),
        ("by a key not allowed", &by_stranger, &with_file, not_listed.clone()),
        ("by a key not allowed, trusting unsigned", &by_stranger, &trusting, not_listed),
        (
            "by the default signers, which list no key",
            &signed,
            &[],
            format!(
                "which {} does not list",
                workspace_root().join(".github/allowed_signers").display()
            ),
        ),
        (
            "SHA256SUMS changed after signing",
            &sums_changed,
            &with_file,
            "was changed after it was signed: SHA256SUMS.sig".into(),
        ),
        (
            "netpoint.sql changed after signing",
            &sql_changed,
            &with_file,
            "was changed after it was signed".into(),
        ),
        (
            "netpoint.sql changed after signing, trusting unsigned",
            &sql_changed,
            &trusting,
            "was changed after it was signed".into(),
        ),
        (
            "a signature for git",
            &for_git,
            &trusting,
            "is a signature for the namespace \"git\", not \"netpoint-bundle\"".into(),
        ),
        (
            "a malformed signature",
            &malformed,
            &trusting,
            "SHA256SUMS.sig is not an SSH signature".into(),
        ),
    ];
    for (what, bundle, extra, expected) in cases {
        let refused = import(&pg, bundle, extra, &[]);
        assert!(
            !refused.status.success(),
            "{what}: imported\n{}",
            refused.output()
        );
        let refused = refused.fails_with(&expected);
        assert!(
            refused.stderr.contains("nothing was changed"),
            "{what}: {}",
            refused.stderr
        );
        pg.assert_unchanged("dev", &before, what);
        assert_eq!(
            pg.psql(
                "postgres",
                "select count(*) from pg_roles where rolname = 'netpoint_injected'"
            ),
            "0",
            "{what}"
        );
    }

    // --trust-unsigned loads the unsigned copy, and says so.
    let imported = import(&pg, &unsigned, &trusting, &[]).ok();
    assert!(
        summary_says(&imported, "unsigned, trusted on purpose"),
        "{}",
        imported.output()
    );
    assert!(imported
        .output()
        .contains("run with the loading role's rights"));
    assert_eq!(pg.psql("dev", "select count(*) from dcim_site"), "7");
}

#[test]
fn bad_signing_keys_and_signer_files_are_refused_before_any_work() {
    // Nothing is reached: the URLs point where no server listens.
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/prod", free_port());
    let out = dir.path().join("bundle");
    let key = keygen(dir.path(), "ci", "");
    fs::write(dir.path().join("junk"), "not a key\n").unwrap();
    // A security key's public half: it would need its hardware at every export.
    let security_key = dir.path().join("sk.pub");
    fs::write(
        &security_key,
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAAABHNzaDo= token\n",
    )
    .unwrap();
    let export_with = |key: &Path| {
        let mut cmd = xtask(&[
            "clone-prod",
            "--source",
            &nowhere,
            "--out",
            s(&out),
            "--sign-key",
            s(key),
        ]);
        cmd.env("SSH_AUTH_SOCK", dir.path().join("no-agent.sock"));
        run(cmd)
    };
    let mut cmd = xtask(&[
        "clone-prod",
        "--source",
        &nowhere,
        "--out",
        s(&out),
        "--sign-key",
        s(&security_key),
    ]);
    cmd.env_remove("SSH_AUTH_SOCK");
    run(cmd).fails_with("is a sk-ssh-ed25519@openssh.com key, which cannot sign bundles");
    export_with(&dir.path().join("junk"))
        .fails_with("neither an OpenSSH private key nor a public key");
    export_with(&dir.path().join("missing")).fails_with("cannot read the signing key");
    export_with(&security_key).fails_with("cannot sign bundles: use an ed25519, RSA or ECDSA key");
    export_with(&PathBuf::from(format!("{}.pub", key.display())))
        .fails_with("cannot reach ssh-agent at SSH_AUTH_SOCK=");
    assert!(!out.exists());
    // --sign-key belongs to an export, --allowed-signers and --trust-unsigned to an import.
    let source = ["clone-prod", "--source", nowhere.as_str()];
    run(xtask(
        &[&source[..], &["--target", &nowhere, "--sign-key", s(&key)]].concat(),
    ))
    .fails_with("--sign-key signs a bundle as it is exported: use it with --out DIR");
    for flag in ["--trust-unsigned", "--allowed-signers=x"] {
        run(xtask(&[&source[..], &["--out", s(&out), flag]].concat()))
            .fails_with("apply to an import: use them with --bundle DIR");
    }
    assert!(!out.exists());

    // A malformed allowed signers file names its line, before the bundle is read.
    let bundle = dir.path().join("no-bundle");
    for (lines, expected) in [
        (
            vec![
                "# ok".to_string(),
                format!("ci@x bogus=\"1\" {}", public_key(&key)),
            ],
            ":2: unknown option \"bogus\"",
        ),
        (
            vec![format!("ci@x cert-authority {}", public_key(&key))],
            ":1: cert-authority is not supported",
        ),
    ] {
        let file = signers(dir.path(), "bad_signers", &lines);
        run(xtask(&[
            "clone-prod",
            "--bundle",
            s(&bundle),
            "--target",
            &nowhere,
            "--allowed-signers",
            s(&file),
        ]))
        .fails_with(&format!("{}{expected}", file.display()));
    }
    let mut cmd = xtask(&["clone-prod", "--bundle", s(&bundle), "--target", &nowhere]);
    cmd.env("NETPOINT_ALLOWED_SIGNERS", dir.path().join("absent"));
    run(cmd).fails_with("cannot read the allowed signers file");
}
