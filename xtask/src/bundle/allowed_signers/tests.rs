use std::process::{Command, Stdio};

use super::*;

/// Any namespace does: the file's rules are the same for every one.
const NAMESPACE: &str = "netpoint-test";

fn parse(text: &str) -> anyhow::Result<AllowedSigners> {
    AllowedSigners::parse(text, Path::new("signers"))
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINMHVumPkLE63qCBImWYUIvDV5apvRGgSNgsOcMA8Yjm";

#[test]
fn lines_comments_and_options() {
    let text = format!(
        "# a comment\n\n   \t\n  # indented comment\n\
         ci@x {KEY} the export job\n\
         \"two words\" NAMESPACES=\"netpoint-*,!git\",Valid-After=\"20010101Z\" {KEY}\r\n\
         a@x,b@x valid-before=\"20990101120000UTC\",namespaces=\"a \\\"q\\\" b\"  {KEY}\n"
    );
    let signers = parse(&text).unwrap();
    let [one, two, three] = &signers.entries[..] else {
        panic!("{:?}", signers.entries)
    };
    assert_eq!((one.line, one.principals.as_str()), (5, "ci@x"));
    assert_eq!((one.namespaces.as_deref(), one.valid_after), (None, None));
    assert_eq!((two.line, two.principals.as_str()), (6, "two words"));
    assert_eq!(two.namespaces.as_deref(), Some("netpoint-*,!git"));
    assert_eq!(two.valid_after, Some(978_307_200));
    assert_eq!(three.principals, "a@x,b@x");
    assert_eq!(three.namespaces.as_deref(), Some("a \"q\" b"));
    assert_eq!(three.valid_before, Some(4_070_952_000));
    assert_eq!(one.key, two.key);
}

#[test]
fn a_malformed_line_names_its_line_and_what_is_wrong() {
    let cases = [
        ("ci@x", "a principal with no key after it"),
        ("ci@x   ", "a principal with no key after it"),
        (
            &format!("ci@x bogus=\"1\" {KEY}"),
            "unknown option \"bogus\"",
        ),
        (
            &format!("ci@x namespaces=git {KEY}"),
            "needs its value in double quotes",
        ),
        (
            &format!("ci@x namespaces=\"git {KEY}"),
            "quote is never closed",
        ),
        (
            &format!("ci@x namespaces=\"a\",namespaces=\"b\" {KEY}"),
            "namespaces= given twice",
        ),
        (&format!("ci@x namespaces=\"a\", {KEY}"), "end with a comma"),
        (
            &format!("ci@x namespaces=\"a\"x {KEY}"),
            "followed by a comma or a space",
        ),
        (
            &format!("ci@x valid-after=\"2001010\" {KEY}"),
            "is not a time",
        ),
        (
            &format!("ci@x valid-after=\"20011301\" {KEY}"),
            "is not a time",
        ),
        (
            &format!("ci@x valid-after=\"19700101Z\" {KEY}"),
            "is not a time",
        ),
        (
            &format!("ci@x valid-after=\"20020101\",valid-before=\"20010101\" {KEY}"),
            "valid-before is not after valid-after",
        ),
        // Options are joined by commas: after a space comes the key.
        (
            &format!("ci@x valid-after=\"20010101\" valid-before=\"20990101\" {KEY}"),
            "\"valid-before=\\\"20990101\\\"\" is not a key type",
        ),
        (
            &format!("ci@x cert-authority {KEY}"),
            "cert-authority is not supported",
        ),
        (
            "ci@x ssh-ed25519-cert-v01@openssh.com AAAA",
            "is a certificate: list the signer's own key",
        ),
        ("ci@x ssh-ed25519", "has no base64 data"),
        (
            "ci@x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN",
            "does not parse",
        ),
        // The blob is an ed25519 key, the type says RSA.
        (
            "ci@x ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAINMHVumPkLE63qCBImWYUIvDV5apvRGgSNgsOcMA8Yjm",
            "does not parse",
        ),
        ("ci@x namespaces=\"a\"", "options with no key after them"),
        (&format!("c\"i@x {KEY}"), "quote inside the principals"),
        (&format!("\"ci@x {KEY}"), "opening quote is never closed"),
        (
            &format!("\"ci@x\"x {KEY}"),
            "right after the principals' closing quote",
        ),
    ];
    for (line, expected) in cases {
        let err = parse(&format!("# fine\n{KEY_LINE}\n{line}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("signers:3: "), "{line}: {err}");
        assert!(err.contains(expected), "{line}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

const KEY_LINE: &str =
    "ok@x ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINMHVumPkLE63qCBImWYUIvDV5apvRGgSNgsOcMA8Yjm";

#[test]
fn patterns_as_openssh_matches_them() {
    use Match::*;
    for (list, expected) in [
        ("netpoint-bundle", Allowed),
        ("git,netpoint-bundle", Allowed),
        ("git", None),
        ("", None),
        ("netpoint-*", Allowed),
        ("*", Allowed),
        ("netpoint-bundl?", Allowed),
        ("netpoint-bundle?", None),
        ("*-bundle,!netpoint-*", Negated),
        ("!git", None),
        ("!git,*", Allowed),
        ("Netpoint-bundle", None),
        ("n*t*e", Allowed),
        ("**", Allowed),
    ] {
        assert_eq!(
            match_pattern_list("netpoint-bundle", list),
            expected,
            "{list}"
        );
    }
}

#[test]
fn times_as_openssh_reads_them() {
    assert_eq!(parse_time("20250101Z"), Some(1_735_689_600));
    assert_eq!(parse_time("20250101utc"), Some(1_735_689_600));
    assert_eq!(parse_time("202501010102Z"), Some(1_735_693_320));
    assert_eq!(parse_time("20250101010203z"), Some(1_735_693_323));
    // A day past the month's end rolls over, as mktime does for ssh-keygen.
    assert_eq!(parse_time("20250231Z"), parse_time("20250303Z"));
    for bad in [
        "",
        "Z",
        "2025010",
        "2025010100",
        "20250100",
        "20251301",
        "20250101240000",
        "20250101000062",
        " 20250101",
        "+0250101",
        "2025-01-01",
        "19700101Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
}

/// The parser's decisions against `ssh-keygen -Y verify` and `-Y find-principals` on the same
/// files and the same signature.
#[test]
fn decisions_agree_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ["k1", "k2", "k3"].map(|name| keygen(dir.path(), name, "ed25519"));
    let message = dir.path().join("SHA256SUMS");
    fs::write(&message, "0000  netpoint.sql\n").unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(dir.path().join("k1"))
        .arg(&message)
        .stderr(Stdio::null())
        .status()
        .expect("running ssh-keygen (install openssh-client)");
    assert!(status.success());
    let pem = fs::read_to_string(dir.path().join("SHA256SUMS.sig")).unwrap();
    let signature = ssh_key::SshSig::from_pem(pem.trim()).unwrap();
    let [k1, k2, k3] = &keys;
    let corpus: Vec<(&str, Vec<String>)> = vec![
        ("one key", vec![format!("a@x {k1}")]),
        ("another key", vec![format!("a@x {k2}")]),
        ("empty", vec!["# nothing".into()]),
        (
            "comment after the key",
            vec![format!("a@x {k1} CI key, 2026")],
        ),
        (
            "several keys",
            vec![
                format!("a@x {k2}"),
                format!("b@x {k1}"),
                format!("c@x {k3}"),
            ],
        ),
        ("principal list", vec![format!("a@x,b@x {k1}")]),
        (
            "our namespace",
            vec![format!("a@x namespaces=\"{NAMESPACE}\" {k1}")],
        ),
        ("git only", vec![format!("a@x namespaces=\"git\" {k1}")]),
        (
            "a list with ours",
            vec![format!("a@x namespaces=\"git,{NAMESPACE},file\" {k1}")],
        ),
        (
            "a list without ours",
            vec![format!("a@x namespaces=\"git,file\" {k1}")],
        ),
        (
            "wildcard",
            vec![format!("a@x namespaces=\"netpoint-*\" {k1}")],
        ),
        (
            "question mark",
            vec![format!("a@x namespaces=\"netpoint-bundl?\" {k1}")],
        ),
        (
            "wildcard elsewhere",
            vec![format!("a@x namespaces=\"net-*\" {k1}")],
        ),
        (
            "negated ours",
            vec![format!("a@x namespaces=\"*,!{NAMESPACE}\" {k1}")],
        ),
        (
            "negated other",
            vec![format!("a@x namespaces=\"!git,*\" {k1}")],
        ),
        (
            "only a negation",
            vec![format!("a@x namespaces=\"!git\" {k1}")],
        ),
        (
            "upper-case option",
            vec![format!("a@x NameSpaces=\"{NAMESPACE}\" {k1}")],
        ),
        (
            "expired",
            vec![format!("a@x valid-before=\"20020101Z\" {k1}")],
        ),
        (
            "expired, local time",
            vec![format!("a@x valid-before=\"20020101\" {k1}")],
        ),
        (
            "not yet valid",
            vec![format!("a@x valid-after=\"20990101Z\" {k1}")],
        ),
        (
            "inside the window",
            vec![format!(
                "a@x valid-after=\"20010101Z\",valid-before=\"20990101000000Z\" {k1}"
            )],
        ),
        (
            "started",
            vec![format!("a@x valid-after=\"200101010101\" {k1}")],
        ),
        (
            "window and namespace",
            vec![format!(
                "a@x namespaces=\"{NAMESPACE}\",valid-after=\"20010101Z\" {k1}"
            )],
        ),
        (
            "the same key twice, the first expired",
            vec![
                format!("a@x valid-before=\"20020101Z\" {k1}"),
                format!("b@x {k1}"),
            ],
        ),
        (
            "the same key twice, the first for git",
            vec![
                format!("a@x namespaces=\"git\" {k1}"),
                format!("b@x namespaces=\"{NAMESPACE}\" {k1}"),
            ],
        ),
        (
            "the same key and principal twice",
            vec![format!("a@x namespaces=\"git\" {k1}"), format!("a@x {k1}")],
        ),
        (
            "the same key twice, both allowed",
            vec![format!("a@x {k1}"), format!("b@x {k1}")],
        ),
        (
            "comments and blank lines between",
            vec![
                "# signers".into(),
                String::new(),
                format!("a@x {k2}"),
                "   # indented".into(),
                format!("  b@x\t{k1}"),
            ],
        ),
    ];
    for (name, lines) in corpus {
        let path = dir.path().join("allowed_signers");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let signers = AllowedSigners::read(&path).unwrap();
        let key = signature.public_key();
        let ours: Vec<&str> = signers
            .allowing(key, NAMESPACE, now())
            .iter()
            .map(|e| e.principals.as_str())
            .collect();
        let principals: std::collections::BTreeSet<&str> = signers
            .entries
            .iter()
            .flat_map(|e| e.principals.split(','))
            .collect();
        for principal in principals {
            let accepted = ours.iter().any(|p| p.split(',').any(|q| q == principal));
            let out = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", NAMESPACE, "-I", principal, "-f"])
                .arg(&path)
                .arg("-s")
                .arg(dir.path().join("SHA256SUMS.sig"))
                .stdin(fs::File::open(&message).unwrap())
                .output()
                .unwrap();
            assert_eq!(
                accepted,
                out.status.success(),
                "{name}, {principal}: ours {ours:?}, ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // find-principals asks only for the key and its validity, not the namespace; it
        // prints the first such line's principals.
        let first = signers.listing(key).find(|e| {
            !matches!(
                e.denies(NAMESPACE, now()),
                Some(Denied::NotYetValid(_) | Denied::Expired(_))
            )
        });
        let out = Command::new("ssh-keygen")
            .args(["-Y", "find-principals", "-f"])
            .arg(&path)
            .arg("-s")
            .arg(dir.path().join("SHA256SUMS.sig"))
            .output()
            .unwrap();
        let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = first
            .map(|e| e.principals.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        assert_eq!(found, expected, "{name}: find-principals");
    }
}

/// Lines this parser refuses are lines ssh-keygen too cannot use: it logs the same line and
/// does not verify with it.
#[test]
fn refused_lines_are_lines_ssh_keygen_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "k1", "ed25519");
    let message = dir.path().join("SHA256SUMS");
    fs::write(&message, "0000  netpoint.sql\n").unwrap();
    let status = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(dir.path().join("k1"))
        .arg(&message)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let base64 = key.split(' ').nth(1).unwrap();
    for (line, logged) in [
        (format!("a@x bogus=\"1\" {key}"), true),
        (format!("a@x namespaces=netpoint-bundle {key}"), true),
        (format!("a@x namespaces=\"netpoint-bundle {key}"), true),
        (format!("a@x valid-after=\"2001010\" {key}"), true),
        (
            format!("a@x valid-after=\"20020101\",valid-before=\"20010101\" {key}"),
            true,
        ),
        (format!("a@x namespaces=\"x\",namespaces=\"y\" {key}"), true),
        (
            format!("a@x valid-after=\"20010101\" valid-before=\"20990101\" {key}"),
            true,
        ),
        (format!("a@x ssh-rsa {base64}"), true),
        ("a@x".to_string(), true),
        (format!("a@x cert-authority {key}"), false),
    ] {
        let path = dir.path().join("allowed_signers");
        fs::write(&path, format!("# first line\n{line}\n")).unwrap();
        let err = AllowedSigners::read(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{}:2: ", path.display())), "{err}");
        let out = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", NAMESPACE, "-I", "a@x", "-f"])
            .arg(&path)
            .arg("-s")
            .arg(dir.path().join("SHA256SUMS.sig"))
            .stdin(fs::File::open(&message).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}: ssh-keygen accepted it");
        if logged {
            assert!(
                stderr.contains(&format!("{}:2:", path.display())),
                "{line}: {stderr}"
            );
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A new key pair `dir/name` without a passphrase; its public key as `TYPE BASE64`.
pub(crate) fn keygen(dir: &Path, name: &str, kind: &str) -> String {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (install openssh-client)");
    assert!(status.success(), "ssh-keygen -t {kind}");
    let public = fs::read_to_string(path.with_extension("pub")).unwrap();
    public.split(' ').take(2).collect::<Vec<_>>().join(" ")
}
