//! Production reachable only over SSH: a container with OpenSSH's server and PostgreSQL on
//! its own loopback (`netpoint-prod-ssh:15`, built by `scripts/test-prereqs.sh`), which
//! publishes nothing but its SSH port.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::harness::{
    fixtures, marker, output_of, run, tree, wait_for, workspace_root, xtask, Pg, SETUP_HINT,
};

const IMAGE: &str = "netpoint-prod-ssh:15";
/// The media directory on the SSH host.
const MEDIA: &str = "/srv/netpoint/media";
const DEST: &str = "deploy@127.0.0.1";

struct SshProd {
    id: String,
    port: u16,
    password: String,
    /// The key that may log in, and the known_hosts file its host key goes to.
    keys: tempfile::TempDir,
}

impl SshProd {
    fn start() -> SshProd {
        let keys = tempfile::tempdir().unwrap();
        let key = keys.path().join("id");
        keygen(&key);
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        let password = marker("sshpw");
        let out = Command::new("docker")
            // `--init`: an init reaps what sshd's sessions leave behind; the postmaster as
            // PID 1 would take such an orphan's exit for a crashed backend and restart.
            .args(["run", "-d", "--init", "--label", "netpoint-tests=ssh"])
            .args(["--env", "POSTGRES_PASSWORD", "--env", "SSH_AUTHORIZED_KEY"])
            .args(["--publish", "127.0.0.1::22", IMAGE, "-c", "fsync=off"])
            .env("POSTGRES_PASSWORD", &password)
            .env("SSH_AUTHORIZED_KEY", public.trim())
            .output()
            .expect("running docker");
        assert!(
            out.status.success(),
            "cannot start {IMAGE} ({}): {SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let port = Command::new("docker")
            .args(["port", &id, "22/tcp"])
            .output()
            .unwrap();
        let port = String::from_utf8_lossy(&port.stdout)
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .expect("the container publishes 22");
        let prod = SshProd {
            id,
            port,
            password,
            keys,
        };
        // The final server logs to stderr (the one that initialises, to stdout).
        let ready = || {
            Command::new("docker")
                .args(["logs", &prod.id])
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stderr)
                        .contains("database system is ready to accept connections")
                })
        };
        wait_for("the SSH production up", Duration::from_secs(60), || {
            ready()
                && Command::new("sh")
                    .arg("-c")
                    .arg(format!("{} {DEST} true", prod.ssh_command()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        prod
    }

    fn key(&self) -> PathBuf {
        self.keys.path().join("id")
    }

    /// `NETPOINT_SSH_COMMAND` for this host: our key, a known_hosts file of the test's own.
    fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new -p {}",
            self.key().display(),
            self.keys.path().join("known_hosts").display(),
            self.port
        )
    }

    /// The database as seen from the SSH host.
    fn url(&self, db: &str) -> String {
        format!("postgres://postgres:{}@localhost:5432/{db}", self.password)
    }

    fn psql_try(&self, db: &str, sql: &str) -> Option<String> {
        let out = Command::new("docker")
            .args(["exec", "-i", &self.id, "psql", "-X", "-q", "-A", "-t"])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_try(db, sql).unwrap_or_else(|| {
            let logs = Command::new("docker").args(["logs", &self.id]).output();
            let logs = logs.map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
            panic!("psql on the SSH production failed: {sql}\n{logs:?}")
        })
    }

    fn psql_file(&self, db: &str, file: &Path) {
        let out = Command::new("docker")
            .args(["exec", "-i", &self.id, "psql", "-X", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db])
            .stdin(fs::File::open(file).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn load_prod(&self, db: &str) {
        self.psql("postgres", &format!("create database {db}"));
        self.psql_file(db, &workspace_root().join("fixtures/netpoint.sql"));
        self.psql_file(db, &workspace_root().join("tests/it/sql/prod_extras.sql"));
    }

    /// The fixture media at `MEDIA` on the host, owned by the login account, with a link
    /// inside the tree, files whose names need quoting (`'`, `\`) and a hard link.
    fn put_media(&self) {
        let copied = Command::new("docker")
            .args(["cp", &format!("{}/.", fixtures().join("media").display())])
            .arg(format!("{}:{MEDIA}/", self.id))
            .status()
            .unwrap();
        assert!(copied.success());
        self.root(&format!(
            "ln -sfn devicetype-images {MEDIA}/images && printf 'x' > \"{MEDIA}/it's a file\" && \
             printf 'b' > '{MEDIA}/back\\slash.txt' && \
             ln {MEDIA}/image-attachments/rack_12_rear.jpg {MEDIA}/hard-linked.jpg && chown -R deploy {MEDIA}"
        ));
    }

    /// A shell command as root on the host.
    fn root(&self, script: &str) {
        let ran = Command::new("docker")
            .args(["exec", &self.id, "sh", "-c", script])
            .status()
            .unwrap();
        assert!(ran.success(), "{script}");
    }

    /// SHA-256 of every regular file under `MEDIA`, as `sha256sum` on the host prints them.
    fn media_sums(&self) -> Vec<(String, String)> {
        let out = Command::new("docker")
            .args(["exec", &self.id, "sh", "-c"])
            .arg(format!(
                "cd {MEDIA} && find . -type f -exec sha256sum {{}} +"
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        sums(&String::from_utf8_lossy(&out.stdout))
    }

    /// Every table's rows, the changelog's left out (a clone leaves its data out).
    fn rows(&self, db: &str) -> Vec<(String, i64)> {
        parse_rows(&self.psql(db, ROW_COUNTS))
    }
}

impl Drop for SshProd {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

const ROW_COUNTS: &str =
    "select schemaname || '.' || tablename, (xpath('/row/c/text()', query_to_xml( \
     format('select count(*) as c from %I.%I', schemaname, tablename), false, true, '')))[1]::text \
     from pg_tables where schemaname not in ('pg_catalog', 'information_schema') \
     and tablename <> 'extras_objectchange' order by 1";

fn parse_rows(text: &str) -> Vec<(String, i64)> {
    text.lines()
        .map(|row| {
            let (table, count) = row.rsplit_once('|').expect("table|count");
            (table.to_string(), count.parse().unwrap())
        })
        .collect()
}

/// `sha256sum` lines as sorted (path, digest) pairs, `./` dropped.
fn sums(text: &str) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let (sum, name) = line.split_once("  ").expect("sha256sum line");
            // GNU sha256sum marks a line whose name it escaped with a leading `\`.
            let (sum, name) = match sum.strip_prefix('\\') {
                Some(sum) => (sum, unescape(name)),
                None => (sum, name.to_string()),
            };
            (name.trim_start_matches("./").to_string(), sum.to_string())
        })
        .collect();
    list.sort();
    list
}

/// Undoes sha256sum's escaping of `\` and newlines in a name.
fn unescape(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The same for a local tree.
fn local_sums(root: &Path) -> Vec<(String, String)> {
    use sha2::Digest;
    let mut list: Vec<(String, String)> = tree(root)
        .into_iter()
        .map(|(name, bytes)| (name, format!("{:x}", sha2::Sha256::digest(&bytes))))
        .collect();
    list.sort();
    list
}

fn target_rows(pg: &Pg, db: &str) -> Vec<(String, i64)> {
    parse_rows(&pg.psql(db, ROW_COUNTS))
}

/// `clone-prod` over SSH to `prod`, with `TMPDIR` pointing at `tmp` (where the forward's
/// socket lives) and the source URL only in the environment.
fn over_ssh(prod: &SshProd, ssh_command: &str, tmp: &Path, args: &[&str]) -> Command {
    let mut full = vec!["clone-prod", "--source-ssh", DEST];
    full.extend_from_slice(args);
    let mut cmd = xtask(&full);
    cmd.env("NETPOINT_SSH_COMMAND", ssh_command)
        .env("NETPOINT_PROD_DATABASE_URL", prod.url("netpoint"))
        .env("TMPDIR", tmp);
    cmd
}

/// ssh processes still running with this production's key.
fn ssh_left(prod: &SshProd) -> String {
    let out = Command::new("pgrep")
        .args(["-a", "-f"])
        .arg(prod.key())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_clone_over_ssh_reads_production_through_one_forward_and_leaves_nothing_behind() {
    let prod = SshProd::start();
    prod.load_prod("netpoint");
    prod.put_media();
    let remote_sums = prod.media_sums();
    assert!(remote_sums.len() > 10, "{remote_sums:?}");
    let dev = Pg::start(15);
    let tmp = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let media = work.path().join("media");
    // A wrapper that records every ssh command line it is given, and what each command
    // through the connection sends back.
    let argv_log = work.path().join("ssh-argv.log");
    let received = work.path().join("ssh-received");
    let wrapper = work.path().join("ssh-wrapper");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -o pipefail\nprintf '%s\\n' \"$*\" >> '{}'\n\
             case \"$*\" in *ControlMaster=no*) ssh \"$@\" | tee -a '{}' ;; *) exec ssh \"$@\" ;; esac\n",
            argv_log.display(),
            received.display()
        ),
    )
    .unwrap();
    let received_bytes = || fs::metadata(&received).map_or(0, |m| m.len());
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let ssh_command = prod
        .ssh_command()
        .replacen("ssh", wrapper.to_str().unwrap(), 1);

    let mut direct = over_ssh(
        &prod,
        &ssh_command,
        tmp.path(),
        &[
            "-v",
            "--yes",
            "--source-media",
            MEDIA,
            "--target-media",
            media.to_str().unwrap(),
        ],
    );
    direct.env("NETPOINT_DATABASE_URL", dev.url("netpoint"));
    let cloned = run(direct).ok();
    assert!(
        cloned
            .stderr
            .contains("postgres://postgres:***@localhost:5432/netpoint via ssh deploy@127.0.0.1"),
        "{}",
        cloned.stderr
    );
    assert_eq!(target_rows(&dev, "netpoint"), prod.rows("netpoint"));
    assert_eq!(local_sums(&media), remote_sums);
    let full_fetch = received_bytes();
    assert!(full_fetch > 100_000, "{full_fetch}");
    assert_eq!(
        fs::read_link(media.join("images")).unwrap(),
        Path::new("devicetype-images")
    );
    assert!(
        !cloned.output().contains(&prod.password),
        "{}",
        cloned.output()
    );

    let bundle = work.path().join("bundle");
    run(over_ssh(
        &prod,
        &ssh_command,
        tmp.path(),
        &["--out", bundle.to_str().unwrap(), "--source-media", MEDIA],
    ))
    .ok();
    assert!(
        entries(work.path())
            .iter()
            .all(|e| !e.starts_with(".netpoint-media-fetch")),
        "{:?}",
        entries(work.path())
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["source"]["host"], "localhost");
    assert_eq!(manifest["source"]["port"], 5432);
    assert_eq!(manifest["source"]["ssh"], DEST);
    // The bundle loads as any other.
    let imported_media = work.path().join("imported-media");
    run(xtask(&[
        "clone-prod",
        "--bundle",
        bundle.to_str().unwrap(),
        "--trust-unsigned",
        "--target",
        &dev.url("imported"),
        "--target-media",
        imported_media.to_str().unwrap(),
    ]))
    .ok();
    assert_eq!(target_rows(&dev, "imported"), prod.rows("netpoint"));
    assert_eq!(local_sums(&imported_media), remote_sums);

    // The media alone, over a changed remote tree: one file removed, one added, one
    // rewritten in place with the same size; only the last two travel, the rest is linked
    // from the copy the target holds.
    prod.root(&format!(
        "rm {MEDIA}/devicetype-images/legacy/kestrel-kr-1000.front.png && \
         echo new > {MEDIA}/added.txt && chown deploy {MEDIA}/added.txt && \
         printf y > \"{MEDIA}/it's a file\" && touch -d '2020-01-02 03:04:05' \"{MEDIA}/it's a file\""
    ));
    let remote_sums = prod.media_sums();
    let unchanged = media.join("image-attachments/rack_12_rear.jpg");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let unchanged_ino = ino(&unchanged);
    let before = received_bytes();
    let incremental = run(over_ssh(
        &prod,
        &ssh_command,
        tmp.path(),
        &[
            "--media-only",
            "--yes",
            "--source-media",
            MEDIA,
            "--target-media",
            media.to_str().unwrap(),
        ],
    ))
    .ok();
    assert_eq!(local_sums(&media), remote_sums);
    assert!(!media
        .join("devicetype-images/legacy/kestrel-kr-1000.front.png")
        .exists());
    assert_eq!(fs::read(media.join("it's a file")).unwrap(), b"y");
    assert_eq!(
        ino(&unchanged),
        unchanged_ino,
        "an unchanged file is linked, not fetched"
    );
    let sent = received_bytes() - before;
    assert!(
        sent * 5 < full_fetch,
        "{sent} bytes for 2 small files, {full_fetch} for all"
    );
    assert!(
        incremental
            .stderr
            .contains("2 of 13 files new or changed (5 B), 11 unchanged since the previous copy"),
        "{}",
        incremental.stderr
    );

    // One connection per run (a master; the database forwarded when there is one), the
    // media's commands through it; no password in any argv.
    let argv = fs::read_to_string(&argv_log).unwrap();
    let masters: Vec<&str> = argv.lines().filter(|l| l.contains(" -M ")).collect();
    assert_eq!(masters.len(), 3, "{argv}");
    for line in &masters[..2] {
        assert!(line.contains("/.s.PGSQL.5432:localhost:5432"), "{line}");
        assert!(line.ends_with(&format!("-- {DEST}")), "{line}");
    }
    assert!(!masters[2].contains("-L"), "{}", masters[2]);
    for line in argv.lines().filter(|l| !l.contains(" -M ")) {
        assert!(
            line.contains("ControlMaster=no")
                && line.contains(&format!("-- {DEST} cd -- '{MEDIA}' && ")),
            "{line}"
        );
    }
    assert!(!argv.contains(&prod.password), "{argv}");
    assert_eq!(ssh_left(&prod), "");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
}

#[test]
fn ssh_failures_are_one_line_and_leave_the_target_alone() {
    let prod = SshProd::start();
    prod.load_prod("netpoint");
    let dev = dev_with_a_kept_table();
    let tmp = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("id");
    keygen(&other_key);
    let base = prod.ssh_command();
    let cases = [
        (
            "a key the host refuses",
            base.replace(prod.key().to_str().unwrap(), other_key.to_str().unwrap()),
            DEST.to_string(),
            "refused the login",
        ),
        (
            "an unknown host key",
            base.replace(
                "StrictHostKeyChecking=accept-new",
                "StrictHostKeyChecking=yes",
            )
            .replace(
                prod.keys.path().join("known_hosts").to_str().unwrap(),
                other.path().join("empty_known_hosts").to_str().unwrap(),
            ),
            DEST.to_string(),
            "host key of deploy@127.0.0.1 is not known",
        ),
        (
            "nothing listening",
            format!("ssh -o BatchMode=yes -p {}", free_port()),
            DEST.to_string(),
            "cannot reach deploy@127.0.0.1 (connection refused)",
        ),
        (
            "a destination that is an option",
            base.clone(),
            "-oProxyCommand=touch /tmp/owned".to_string(),
            "starts with `-`",
        ),
        (
            "no such program",
            "/nonexistent/ssh".to_string(),
            DEST.to_string(),
            "cannot start `/nonexistent/ssh`",
        ),
        (
            "a command line that does not parse",
            "ssh -o 'unclosed".to_string(),
            DEST.to_string(),
            "NETPOINT_SSH_COMMAND is not a command line",
        ),
    ];
    for (what, command, dest, says) in cases {
        let mut cmd = xtask(&["clone-prod", &format!("--source-ssh={dest}"), "--yes"]);
        cmd.env("NETPOINT_SSH_COMMAND", &command)
            .env("NETPOINT_PROD_DATABASE_URL", prod.url("netpoint"))
            .env("NETPOINT_DATABASE_URL", dev.url("netpoint"))
            .env("TMPDIR", tmp.path());
        let failed = run(cmd).fails_with(says);
        assert!(
            !failed.output().contains(&prod.password),
            "{what}: {}",
            failed.output()
        );
        assert_eq!(
            dev.psql("netpoint", "select count(*) from kept"),
            "1",
            "{what}"
        );
        assert!(
            entries(tmp.path()).is_empty(),
            "{what}: {:?}",
            entries(tmp.path())
        );
    }
    assert!(!Path::new("/tmp/owned").exists());
    // A database the SSH host does not have: PostgreSQL's error, named with the SSH route.
    let mut missing = over_ssh(&prod, &base, tmp.path(), &["--yes"]);
    missing
        .env("NETPOINT_PROD_DATABASE_URL", prod.url("nosuchdb"))
        .env("NETPOINT_DATABASE_URL", dev.url("netpoint"));
    run(missing).fails_with(
        "database `nosuchdb` does not exist at localhost:5432 via ssh deploy@127.0.0.1",
    );

    // Media: a directory the host does not have, and a file the login may not read.
    let media = tmp.path().join("../ssh-failures-media");
    let media_only = |dir: &str| {
        over_ssh(
            &prod,
            &base,
            tmp.path(),
            &[
                "--media-only",
                "--yes",
                "--source-media",
                dir,
                "--target-media",
                media.to_str().unwrap(),
            ],
        )
    };
    run(media_only("/srv/nope")).fails_with("no media directory /srv/nope on deploy@127.0.0.1");
    prod.put_media();
    prod.root(&format!(
        "echo secret > {MEDIA}/locked && chmod 000 {MEDIA}/locked && chown root {MEDIA}/locked"
    ));
    run(media_only(MEDIA))
        .fails_with("of the media at deploy@127.0.0.1:/srv/netpoint/media failed on that host");
    assert!(!media.exists());
    assert_eq!(ssh_left(&prod), "");
}

#[test]
fn a_tunnel_that_drops_or_a_signal_mid_clone_leaves_no_ssh_socket_or_temporary_database() {
    let prod = SshProd::start();
    prod.load_prod("netpoint");
    // Enough rows that the load is still running when the test acts.
    prod.psql(
        "netpoint",
        "create table public.bulk (id bigint primary key, payload text); \
         insert into public.bulk select g, md5(g::text) || repeat('x', 200) from generate_series(1, 300000) g",
    );
    let dev = dev_with_a_kept_table();
    let tmp = tempfile::tempdir().unwrap();
    let loading = || {
        dev.databases()
            .iter()
            .any(|d| d.starts_with("netpoint__npload_"))
    };
    for what in ["the tunnel drops", "SIGINT"] {
        let mut cmd = over_ssh(&prod, &prod.ssh_command(), tmp.path(), &["--yes"]);
        cmd.env("NETPOINT_DATABASE_URL", dev.url("netpoint"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        wait_for(what, Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                let mut said = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said);
                panic!("{what}: the clone ended ({status}) before it loaded: {said}");
            }
            loading()
        });
        match what {
            "SIGINT" => {
                // SAFETY: kill only signals our own child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
            _ => {
                let killed = Command::new("pkill")
                    .arg("-f")
                    .arg(prod.key())
                    .status()
                    .unwrap();
                assert!(killed.success(), "{what}: no ssh to kill");
            }
        }
        let ended = output_of(child);
        match what {
            "SIGINT" => assert_eq!(ended.status.code(), Some(130), "{}", ended.output()),
            _ => {
                assert_eq!(ended.status.code(), Some(1), "{}", ended.output());
                assert!(
                    ended
                        .stderr
                        .contains("the SSH connection to deploy@127.0.0.1 dropped during the run"),
                    "{}",
                    ended.stderr
                );
            }
        }
        let errors = ended
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        assert_eq!(errors, 1, "{what}: {}", ended.stderr);
        assert_eq!(
            dev.psql("netpoint", "select count(*) from kept"),
            "1",
            "{what}"
        );
        let temp: Vec<String> = dev
            .databases()
            .into_iter()
            .filter(|d| d.contains("__np"))
            .collect();
        assert!(temp.is_empty(), "{what}: {temp:?}");
        assert_eq!(ssh_left(&prod), "", "{what}");
        assert!(
            entries(tmp.path()).is_empty(),
            "{what}: {:?}",
            entries(tmp.path())
        );
    }

    // `kill -9`: nothing of the run is left to clean up after itself. Its socket directory
    // (private while it ran) stays until the next run, which removes it, and only it.
    let mut cmd = over_ssh(&prod, &prod.ssh_command(), tmp.path(), &["--yes"]);
    cmd.env("NETPOINT_DATABASE_URL", dev.url("netpoint"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("the load under way", Duration::from_secs(60), || {
        assert!(matches!(child.try_wait(), Ok(None)), "the clone ended");
        loading()
    });
    let left = entries(tmp.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(&format!("netpoint-ssh-{}-", child.id())),
        "{left:?}"
    );
    let dir = tmp.path().join(&left[0]);
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o700, "{mode:o}");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("ssh ended with the run", Duration::from_secs(10), || {
        ssh_left(&prod).is_empty()
    });
    assert!(dir.exists(), "nothing could have removed it yet");
    // Another run, still running: its directory is not ours to remove.
    let running = tmp
        .path()
        .join(format!("netpoint-ssh-{}-running", std::process::id()));
    fs::create_dir(&running).unwrap();
    prod.put_media();
    let media = tempfile::tempdir().unwrap();
    let media = media.path().join("media");
    run(over_ssh(
        &prod,
        &prod.ssh_command(),
        tmp.path(),
        &[
            "--media-only",
            "--yes",
            "--source-media",
            MEDIA,
            "--target-media",
            media.to_str().unwrap(),
        ],
    ))
    .ok();
    assert!(!dir.exists(), "the killed run's directory is still there");
    assert_eq!(
        entries(tmp.path()),
        vec![running.file_name().unwrap().to_string_lossy().into_owned()]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new key pair without a passphrase: `key` and `key.pub`.
fn keygen(key: &Path) {
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(key)
        .status()
        .expect("running ssh-keygen");
    assert!(made.success());
}

/// A dev server whose `netpoint` holds a table a failed clone must leave in place.
fn dev_with_a_kept_table() -> Pg {
    let dev = Pg::start(15);
    dev.create_db("netpoint");
    dev.psql(
        "netpoint",
        "create table kept (id int); insert into kept values (1)",
    );
    dev
}

#[test]
fn an_ssh_destination_with_a_password_is_refused_without_showing_it() {
    let dev = dev_with_a_kept_table();
    let tmp = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let media = work.path().join("media");
    let secret = marker("sshpw");
    let forms = [
        format!("deploy:{secret}@127.0.0.1"),
        format!("ssh://deploy:{secret}@127.0.0.1"),
        format!("ssh://deploy:{secret}@127.0.0.1:2222"),
        format!("deploy:{secret}@[::1]"),
        format!("deploy%3A{secret}@127.0.0.1"),
        format!("ssh://deploy:{secret}%40x@127.0.0.1:22/"),
    ];
    for dest in &forms {
        for how in ["--source-ssh", "NETPOINT_PROD_SSH"] {
            for mode in [
                vec!["--yes"],
                vec!["--out", bundle.to_str().unwrap()],
                vec![
                    "--media-only",
                    "--yes",
                    "--source-media",
                    MEDIA,
                    "--target-media",
                    media.to_str().unwrap(),
                ],
            ] {
                let mut args = vec!["clone-prod"];
                let flag = format!("--source-ssh={dest}");
                if how == "--source-ssh" {
                    args.push(&flag);
                }
                args.extend(mode.iter().copied());
                let mut cmd = xtask(&args);
                cmd.env("NETPOINT_SSH_COMMAND", "ssh -o BatchMode=yes")
                    .env(
                        "NETPOINT_PROD_DATABASE_URL",
                        "postgres://postgres:prodpw@localhost:5432/netpoint",
                    )
                    .env("NETPOINT_DATABASE_URL", dev.url("netpoint"))
                    .env("TMPDIR", tmp.path());
                if how == "NETPOINT_PROD_SSH" {
                    cmd.env("NETPOINT_PROD_SSH", dest);
                }
                let refused = run(cmd).fails_with(
                    "error: the SSH destination has a password in it (user:password@host): remove it",
                );
                assert!(
                    !refused.output().contains(&secret),
                    "{dest} {how} {mode:?}: {}",
                    refused.output()
                );
                assert_eq!(refused.status.code(), Some(1), "{}", refused.output());
                assert!(!bundle.exists() && !media.exists(), "{dest} {how} {mode:?}");
                assert!(entries(tmp.path()).is_empty(), "{dest} {how} {mode:?}");
            }
        }
    }
    assert_eq!(dev.psql("netpoint", "select count(*) from kept"), "1");
    assert_eq!(
        dev.databases()
            .into_iter()
            .filter(|d| d.contains("__np"))
            .count(),
        0
    );
}

/// A member of a [`crafted_tar`]: name, kind, value.
type Crafted<'a> = (&'a str, &'a str, &'a str);

/// A tar stream made with python3's tarfile: `(name, kind, value)` members, `kind` one of
/// `file` (value: the bytes), `link` (value: the target), `hard` (value: the earlier
/// member), `dir` and `char` (a character device).
fn crafted_tar(path: &Path, members: &[Crafted]) {
    let script = "import io, sys, tarfile\n\
        out, rest = sys.argv[1], sys.argv[2:]\n\
        with tarfile.open(out, 'w', format=tarfile.GNU_FORMAT) as o:\n\
        \x20   for name, kind, value in zip(rest[0::3], rest[1::3], rest[2::3]):\n\
        \x20       info = tarfile.TarInfo(name)\n\
        \x20       info.mode = 0o644\n\
        \x20       if kind == 'file':\n\
        \x20           info.size = len(value.encode())\n\
        \x20           o.addfile(info, io.BytesIO(value.encode()))\n\
        \x20           continue\n\
        \x20       info.type = {'link': tarfile.SYMTYPE, 'hard': tarfile.LNKTYPE, 'dir': tarfile.DIRTYPE, 'char': tarfile.CHRTYPE}[kind]\n\
        \x20       info.linkname = value\n\
        \x20       o.addfile(info)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(path);
    for (name, kind, value) in members {
        cmd.args([name, kind, value]);
    }
    assert!(cmd.status().unwrap().success(), "crafting a tar stream");
}

/// Every entry below `root`: files with their bytes and mode, links with their target.
fn media_state(root: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(e.path()).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {:o}", meta.permissions().mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {:?}",
                    meta.permissions().mode() & 0o7777,
                    fs::read(e.path()).unwrap()
                )
            };
            (rel, what)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_hostile_ssh_host_cannot_slip_entries_modes_or_changed_files_into_the_media() {
    let prod = SshProd::start();
    let reset_media = || {
        prod.root(&format!("rm -rf {MEDIA}/*"));
        prod.put_media();
    };
    reset_media();
    let work = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let media = work.path().join("media");
    fs::create_dir(&media).unwrap();
    fs::write(media.join("mine.txt"), b"kept").unwrap();
    let fetch = || {
        run(over_ssh(
            &prod,
            &prod.ssh_command(),
            tmp.path(),
            &[
                "--media-only",
                "--yes",
                "--source-media",
                MEDIA,
                "--target-media",
                media.to_str().unwrap(),
            ],
        ))
    };
    // `tar` on the host's PATH ahead of the real one: `--version` answers as GNU tar (or
    // not), the rest runs `body`.
    let hostile_tar = |gnu: bool, body: &str| {
        let version = match gnu {
            true => "exec /usr/bin/tar --version",
            false => "echo 'tar (busybox) 1.36'",
        };
        prod.root(&format!(
            "cat > /usr/local/bin/tar <<'EOF'\n#!/bin/sh\ncase \"$1\" in --version) {version} ;; esac\n{body}\nEOF\n\
             chmod 755 /usr/local/bin/tar"
        ));
    };
    let honest_tar = || prod.root("rm -f /usr/local/bin/tar");
    let before = media_state(&media);
    let unchanged = |what: &str| {
        assert_eq!(
            media_state(&media),
            before,
            "{what}: the target media changed"
        );
        assert_eq!(
            entries(work.path()),
            vec!["media".to_string()],
            "{what}: left behind"
        );
        assert!(entries(tmp.path()).is_empty(), "{what}");
    };

    // Entries the listing lacks, in a stream the host sends whatever was asked.
    let listed_file = "image-attachments/rack_12_rear.jpg";
    let cases: [(&str, Vec<Crafted>, &str); 6] = [
        (
            "a symbolic link",
            vec![("./escape", "link", "/etc")],
            "the stream holds `./escape`, a symbolic link, which the listing of the media does not",
        ),
        (
            "a listed link pointing elsewhere",
            vec![("./images", "link", "/etc")],
            "the stream holds `./images`, a symbolic link, which the listing",
        ),
        (
            "a directory",
            vec![("./newdir", "dir", "")],
            "the stream holds `./newdir/`, a directory, which the listing",
        ),
        (
            "a file",
            vec![("./planted.txt", "file", "planted")],
            "the stream holds `./planted.txt`, a file, which the listing",
        ),
        (
            "a hard link",
            vec![
                (listed_file, "file", "x"),
                ("./second-name.jpg", "hard", listed_file),
            ],
            "the stream holds `./second-name.jpg`, a file, which the listing",
        ),
        (
            "a device",
            vec![("./console", "char", "")],
            "`./console` is a Char entry",
        ),
    ];
    for gnu in [true, false] {
        for (what, members, says) in &cases {
            let stream = work.path().join("stream.tar");
            crafted_tar(&stream, members);
            let copied = Command::new("docker")
                .arg("cp")
                .arg(&stream)
                .arg(format!("{}:/srv/stream.tar", prod.id))
                .status()
                .unwrap();
            assert!(copied.success());
            fs::remove_file(&stream).unwrap();
            hostile_tar(gnu, "cat > /dev/null\nexec cat /srv/stream.tar");
            // Without GNU find the host lists no link targets: the link is judged where it
            // resolves instead.
            let says = match (gnu, *what) {
                (false, "a listed link pointing elsewhere") => "links outside the media root",
                _ => says,
            };
            let refused = fetch().fails_with(says);
            assert!(
                refused
                    .stderr
                    .contains("deploy@127.0.0.1:/srv/netpoint/media"),
                "{what}: {}",
                refused.stderr
            );
            unchanged(what);
        }
    }

    // A file that changes between the listing and the transfer: grown, cut short, or
    // rewritten with its size, is never installed.
    let file = format!("{MEDIA}/{listed_file}");
    for (what, change) in [
        ("grown", format!("printf more >> '{file}'")),
        ("cut short", format!("truncate -s 100 '{file}'")),
        (
            "rewritten in place",
            format!("printf XXXX | dd of='{file}' conv=notrunc 2>/dev/null"),
        ),
    ] {
        reset_media();
        hostile_tar(true, &format!("{change}\nexec /usr/bin/tar \"$@\""));
        fetch().fails_with("changed while they were fetched");
        unchanged(what);
    }
    // ... or removed before its CRC is taken.
    reset_media();
    honest_tar();
    prod.root(&format!(
        "cat > /usr/local/bin/cksum <<'EOF'\n#!/bin/sh\nrm -f '{file}'\nexec /usr/bin/cksum \"$@\"\nEOF\n\
         chmod 755 /usr/local/bin/cksum"
    ));
    fetch().fails_with("changed while they were fetched (/usr/bin/cksum: ./image-attachments/rack_12_rear.jpg: No such file");
    unchanged("removed");
    prod.root("rm -f /usr/local/bin/cksum");

    // Modes keep their permission bits, never setuid, setgid or sticky; through GNU tar and
    // through a host without GNU tools alike. An honest host's tree arrives whole.
    honest_tar();
    reset_media();
    prod.root(&format!(
        "chmod 4755 '{MEDIA}/it'\\''s a file' && chmod 2775 {MEDIA}/image-attachments && \
         chmod 1777 {MEDIA}/devicetype-images && touch {MEDIA}/added && \
         chown deploy {MEDIA}/added && chmod 6711 {MEDIA}/added"
    ));
    let remote_sums = prod.media_sums();
    for gnu in [true, false] {
        match gnu {
            true => honest_tar(),
            false => hostile_tar(false, "exec /usr/bin/tar \"$@\""),
        }
        fs::remove_dir_all(&media).unwrap();
        fetch().ok();
        assert_eq!(local_sums(&media), remote_sums, "gnu {gnu}");
        let mode = |rel: &str| fs::metadata(media.join(rel)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("it's a file"), 0o755, "gnu {gnu}");
        assert_eq!(mode("added"), 0o711, "gnu {gnu}");
        assert_eq!(mode("image-attachments"), 0o775, "gnu {gnu}");
        assert_eq!(mode("devicetype-images"), 0o777, "gnu {gnu}");
        assert_eq!(
            fs::read_link(media.join("images")).unwrap(),
            Path::new("devicetype-images")
        );
    }
    assert_eq!(ssh_left(&prod), "");
}

#[test]
fn a_subset_clone_over_ssh_reads_its_rows_and_only_its_media_through_the_tunnel() {
    use crate::subset::{loaded, scrubbed, valid_fks, AMS1};
    let prod = SshProd::start();
    prod.psql("postgres", "create database netpoint");
    prod.psql_file(
        "netpoint",
        &workspace_root().join("tests/it/sql/subset.sql"),
    );
    prod.root(&format!(
        "mkdir -p {MEDIA}/image-attachments {MEDIA}/devicetype-images && \
         printf ams1 > {MEDIA}/image-attachments/ams1.jpg && printf fra1 > {MEDIA}/image-attachments/fra1.jpg && \
         printf mx > {MEDIA}/devicetype-images/mx.png && printf unused > {MEDIA}/devicetype-images/unused.png && \
         chown -R deploy {MEDIA}"
    ));
    // The host's other files are never read: one the SSH user may not read would fail a
    // whole tree's listing of CRCs.
    prod.root(&format!(
        "chown root {MEDIA}/devicetype-images/unused.png && chmod 600 {MEDIA}/devicetype-images/unused.png"
    ));
    let dev = Pg::start(15);
    dev.create_db("netpoint");
    let (tmp, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let media = work.path().join("media");
    let mut clone = over_ssh(
        &prod,
        &prod.ssh_command(),
        tmp.path(),
        &[
            "--yes",
            "--subset",
            "site=ams1",
            "--source-media",
            MEDIA,
            "--target-media",
            media.to_str().unwrap(),
        ],
    );
    clone.env("NETPOINT_DATABASE_URL", dev.url("netpoint"));
    let cloned = run(clone).ok();
    assert_eq!(
        loaded(&dev, "netpoint"),
        scrubbed(AMS1),
        "{}",
        cloned.output()
    );
    let source_fks = prod.psql(
        "netpoint",
        "select count(*) || ' ' || count(*) filter (where convalidated) from pg_constraint where contype = 'f'",
    );
    assert_eq!(valid_fks(&dev, "netpoint"), source_fks);
    let files: Vec<String> = tree(&media).into_iter().map(|(rel, _)| rel).collect();
    assert_eq!(
        files,
        ["devicetype-images/mx.png", "image-attachments/ams1.jpg"],
        "{}",
        cloned.output()
    );
    // Named by the subset's rows, absent on the host: counted, not fatal.
    assert!(
        cloned
            .output()
            .contains("2 media files it names missing from the source media"),
        "{}",
        cloned.output()
    );
    assert!(!cloned.output().contains(&prod.password));
    assert!(ssh_left(&prod).is_empty(), "{}", ssh_left(&prod));

    // An export of the subset also fetches only the files its rows name, once it is computed.
    let out = work.path().join("bundle");
    let exported = run(over_ssh(
        &prod,
        &prod.ssh_command(),
        tmp.path(),
        &[
            "--out",
            out.to_str().unwrap(),
            "--subset",
            "site=ams1",
            "--source-media",
            MEDIA,
        ],
    ))
    .ok();
    assert!(
        exported
            .output()
            .contains("fetching the 4 media files the subset names"),
        "{}",
        exported.output()
    );
    let sums = fs::read_to_string(out.join("media.sha256")).unwrap();
    let mut archived: Vec<&str> = sums
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    archived.sort();
    assert_eq!(
        archived,
        ["devicetype-images/mx.png", "image-attachments/ams1.jpg"],
        "{sums}"
    );
    let mut beside = entries(work.path());
    beside.sort();
    assert_eq!(beside, ["bundle", "media"], "the fetched files are removed");
    assert!(!exported.output().contains(&prod.password));
    assert!(ssh_left(&prod).is_empty(), "{}", ssh_left(&prod));
}
