use std::process::{Command, Stdio};

use super::*;
use crate::bundle::allowed_signers::tests::keygen;

const SUMS: &[u8] = b"0123  netpoint.sql\n";

fn allowed(dir: &Path, lines: &[String]) -> AllowedSigners {
    let path = dir.join("allowed_signers");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    AllowedSigners::read(&path).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `ssh-keygen -Y verify` of `sig` over `message` for principal `ci@x`.
fn keygen_verifies(dir: &Path, signers: &AllowedSigners, sig: &str, message: &[u8]) -> bool {
    let sig_path = dir.join("check.sig");
    let message_path = dir.join("check.msg");
    fs::write(&sig_path, sig).unwrap();
    fs::write(&message_path, message).unwrap();
    Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", NAMESPACE, "-I", "ci@x", "-f"])
        .arg(&signers.path)
        .arg("-s")
        .arg(&sig_path)
        .stdin(fs::File::open(&message_path).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn key_files_sign_what_ssh_keygen_verifies() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind, bits) in [("ed", "ed25519", None), ("rsa", "rsa", Some("2048"))] {
        let path = dir.path().join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", "", "-f"]).arg(&path);
        if let Some(bits) = bits {
            cmd.args(["-b", bits]);
        }
        assert!(cmd.status().unwrap().success());
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        let signers = allowed(dir.path(), &[format!("ci@x {public}")]);
        let key = SigningKey::open(&path).unwrap();
        assert!(key.describe().contains("key file"), "{}", key.describe());
        let armored = key.sign(SUMS).unwrap();
        assert!(armored.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        assert!(
            keygen_verifies(dir.path(), &signers, &armored, SUMS),
            "{kind}"
        );
        assert!(
            !keygen_verifies(dir.path(), &signers, &armored, b"other"),
            "{kind}"
        );
        fs::write(dir.path().join(SIG), &armored).unwrap();
        let signature = read_signature(dir.path()).unwrap().unwrap();
        let signed = verify(dir.path(), SUMS, &signature, &signers, now()).unwrap();
        assert_eq!(signed.principals, ["ci@x"]);
        assert!(
            signed.summary().starts_with("signed by ci@x ("),
            "{signed:?}"
        );
    }
}

#[test]
fn keys_that_cannot_sign_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let keygen_with = |name: &str, args: &[&str]| {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-f"])
            .arg(path(name))
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
    };
    keygen_with("locked", &["-t", "ed25519", "-N", "hunter2-secret"]);
    keygen_with("pem", &["-t", "rsa", "-b", "2048", "-N", "", "-m", "PEM"]);
    fs::write(path("junk"), "not a key\n").unwrap();
    for (name, expected) in [
        ("locked", "is protected by a passphrase"),
        ("locked", "add it to ssh-agent (`ssh-add "),
        ("locked", "locked.pub) instead"),
        ("pem", "is a PEM private key"),
        ("junk", "neither an OpenSSH private key nor a public key"),
        ("missing", "cannot read the signing key"),
    ] {
        let err = match SigningKey::open(&path(name)) {
            Ok(_) => panic!("{name} was accepted"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let err = supported(Path::new("k"), Algorithm::Dsa).unwrap_err();
    assert!(err
        .to_string()
        .contains("ssh-dss key, which cannot sign bundles"));
    let err = supported(Path::new("k"), Algorithm::SkEd25519).unwrap_err();
    assert!(err.to_string().contains("use an ed25519, RSA or ECDSA key"));
}

#[test]
fn each_refusal_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen(dir.path(), "k1", "ed25519");
    let k2 = keygen(dir.path(), "k2", "ed25519");
    let key = SigningKey::open(&dir.path().join("k1")).unwrap();
    let sig = SshSig::from_pem(key.sign(SUMS).unwrap()).unwrap();
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let refuse = |signers: &AllowedSigners, sig: &SshSig, sums: &[u8]| {
        verify(dir.path(), sums, sig, signers, now())
            .unwrap_err()
            .to_string()
    };

    let ours = allowed(dir.path(), &[format!("ci@x {k1}")]);
    let err = refuse(&ours, &sig, b"0123  netpoint.sql\n0456  manifest.json\n");
    assert!(err.contains("was changed after it was signed"), "{err}");

    let others = allowed(dir.path(), &[format!("ci@x {k2}")]);
    let err = refuse(&others, &sig, SUMS);
    assert!(
        err.contains(&format!(
            "signed by ED25519 key {fingerprint}, which {} does not list",
            others.path.display()
        )),
        "{err}"
    );
    assert!(err.contains(&k1), "the line to add names the key: {err}");

    let expired = allowed(
        dir.path(),
        &[format!("ci@x valid-before=\"20020101Z\" {k1}")],
    );
    let err = refuse(&expired, &sig, SUMS);
    assert!(
        err.contains("line 1 (ci@x): it expired at 2002-01-01T00:00:00Z"),
        "{err}"
    );

    let for_git = allowed(dir.path(), &[format!("ci@x namespaces=\"git\" {k1}")]);
    let err = refuse(&for_git, &sig, SUMS);
    assert!(err.contains("does not allow this namespace"), "{err}");

    let git_key = PrivateKey::read_openssh_file(&dir.path().join("k1")).unwrap();
    let git_sig = SshSig::sign(&git_key, "git", HashAlg::Sha512, SUMS).unwrap();
    let err = refuse(&ours, &git_sig, SUMS);
    assert!(
        err.contains("a signature for the namespace \"git\", not \"netpoint-bundle\""),
        "{err}"
    );

    for junk in [
        "",
        "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        "x",
    ] {
        fs::write(dir.path().join(SIG), junk).unwrap();
        let err = read_signature(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("SHA256SUMS.sig is not an SSH signature"),
            "{err}"
        );
    }
    fs::remove_file(dir.path().join(SIG)).unwrap();
    assert!(read_signature(dir.path()).unwrap().is_none());
}

#[test]
fn a_key_type_that_cannot_be_verified_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let n = |byte: u8| ssh_key::Mpint::from_positive_bytes(&[byte; 20]).unwrap();
    let dsa = KeyData::Dsa(ssh_key::public::DsaPublicKey {
        p: n(7),
        q: n(5),
        g: n(3),
        y: n(2),
    });
    let signature = ssh_key::Signature::new(Algorithm::Dsa, vec![1; 40]).unwrap();
    let sig = SshSig::new(dsa, NAMESPACE, HashAlg::Sha512, signature).unwrap();
    let signers = allowed(dir.path(), &["# none".into()]);
    let err = verify(dir.path(), SUMS, &sig, &signers, now())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is signed with a ssh-dss key, which this tool cannot verify"),
        "{err}"
    );
}

/// A private ssh-agent on a socket in `dir`, ended when dropped.
struct Agent(String);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
    }
}

#[test]
fn every_key_type_signs_through_ssh_agent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let out = Command::new("ssh-agent")
        .arg("-s")
        .arg("-a")
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh-agent (openssh-client)");
    let text = String::from_utf8(out.stdout).unwrap();
    let pid = text
        .split(';')
        .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
        .expect("ssh-agent prints its pid");
    let _agent = Agent(pid.to_string());
    for (name, kind, bits) in [
        ("ed", "ed25519", "256"),
        ("rsa", "rsa", "3072"),
        ("p256", "ecdsa", "256"),
        ("p384", "ecdsa", "384"),
        ("p521", "ecdsa", "521"),
    ] {
        let path = dir.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let public = path.with_extension("pub");
        let agent = Some(socket.clone().into_os_string());
        let err = SigningKey::open_with(&public, agent.clone()).err().unwrap();
        assert!(
            err.to_string()
                .contains("ssh-agent does not hold the private key"),
            "{err}"
        );
        let added = Command::new("ssh-add")
            .arg(&path)
            .env("SSH_AUTH_SOCK", &socket)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(added.success(), "ssh-add {name}");
        let key = SigningKey::open_with(&public, agent).unwrap();
        assert!(
            key.describe().contains("in ssh-agent"),
            "{}",
            key.describe()
        );
        let signers = allowed(
            dir.path(),
            &[format!(
                "ci@x {}",
                fs::read_to_string(&public).unwrap().trim()
            )],
        );
        // Several signatures: a short r or s in an ECDSA signature is read too.
        for round in 0..8u8 {
            let message = [SUMS, &[round]].concat();
            let armored = key.sign(&message).unwrap();
            assert!(
                keygen_verifies(dir.path(), &signers, &armored, &message),
                "{name}"
            );
        }
    }
    let err = SigningKey::open_with(&dir.path().join("ed.pub"), None)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("SSH_AUTH_SOCK is not set"),
        "{err}"
    );
}
