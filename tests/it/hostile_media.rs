//! Media directories under hostile or careless input: archives that climb out through links,
//! nested source and target, mount points and symlinked targets, names that are not UTF-8,
//! and the guards around them. Nothing may be lost, half-written or written outside.

use std::{
    ffi::OsStr,
    fs,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    clone_prod::rewrite_sums,
    harness::{copy_tree, fixtures, leftovers, marker, run, tree, workspace_root, xtask, Pg, Run},
};

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Every entry below `root` with what it is: files with their bytes, links with their target.
fn listing(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            let what = if e.path_is_symlink() {
                format!("link {}", fs::read_link(e.path()).unwrap().display())
            } else if e.file_type().is_dir() {
                "dir".to_string()
            } else {
                format!("file {:?}", fs::read(e.path()).unwrap())
            };
            (rel, what)
        })
        .collect();
    out.sort();
    out
}

fn error_lines(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

/// A bundle exported from the fixture database `prod` on `pg`, with `media` as its media.
fn export(pg: &Pg, media: &Path, bundle: &Path) {
    run(xtask(&[
        "clone-prod",
        "--source",
        &pg.url("prod"),
        "--out",
        s(bundle),
        "--source-media",
        s(media),
    ]))
    .ok();
}

/// Appends members to a bundle's media archive with python3's tarfile, then makes
/// SHA256SUMS agree again, as an attacker would. Each member is `(name, kind, value)`:
/// `("file", data)` or `("link", target)`.
fn append_members(bundle: &Path, members: &[(&str, &str, &str)]) {
    let archive = bundle.join("netpoint_media.tar.gz");
    let crafted = bundle.join("crafted.tmp");
    let script = "import io, sys, tarfile\n\
        src, dst = sys.argv[1:3]\n\
        rest = sys.argv[3:]\n\
        with tarfile.open(src, 'r:gz') as i, tarfile.open(dst, 'w:gz', format=tarfile.GNU_FORMAT) as o:\n\
        \x20   for m in i.getmembers():\n\
        \x20       o.addfile(m, i.extractfile(m) if m.isfile() else None)\n\
        \x20   for name, kind, value in zip(rest[0::3], rest[1::3], rest[2::3]):\n\
        \x20       info = tarfile.TarInfo(name)\n\
        \x20       if kind == 'link':\n\
        \x20           info.type = tarfile.SYMTYPE\n\
        \x20           info.linkname = value\n\
        \x20           o.addfile(info)\n\
        \x20       else:\n\
        \x20           data = value.encode()\n\
        \x20           info.size = len(data)\n\
        \x20           o.addfile(info, io.BytesIO(data))\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(&archive).arg(&crafted);
    for (name, kind, value) in members {
        cmd.args([name, kind, value]);
    }
    assert!(cmd.status().unwrap().success(), "crafting the archive");
    fs::rename(&crafted, &archive).unwrap();
    rewrite_sums(bundle, "netpoint_media.tar.gz");
}

#[test]
fn archive_link_chains_cannot_write_or_point_outside_the_media_root() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.load_fixture("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    export(&pg, &fixtures().join("media"), &bundle);
    let dev_media = dir.path().join("dev-media");
    fs::create_dir_all(dev_media.join("local")).unwrap();
    fs::write(dev_media.join("local/mine.txt"), b"my upload").unwrap();
    let (db_before, media_before) = (pg.fingerprint("netpoint"), listing(&dev_media));
    let import = |bundle: &Path| {
        run(xtask(&[
            "clone-prod",
            "--bundle",
            s(bundle),
            "--trust-unsigned",
            "--target",
            &pg.url("netpoint"),
            "--target-media",
            s(&dev_media),
            "--yes",
        ]))
    };
    let unchanged = |what: &str| {
        pg.assert_unchanged("netpoint", &db_before, format!("{what}: database"));
        assert_eq!(listing(&dev_media), media_before, "{what}: media");
        assert!(pg.temp_dbs().is_empty(), "{what}: {:?}", pg.temp_dbs());
        assert!(
            leftovers(dir.path()).is_empty(),
            "{what}: {:?}",
            leftovers(dir.path())
        );
    };

    // `x -> .`, then `x/l -> ..`, then a file through both: it would land beside the staging
    // directory, that is beside the media root.
    let stray = marker("stray");
    let chain = dir.path().join("chain");
    copy_tree(&bundle, &chain);
    let through = format!("netpoint/media/x/l/{stray}");
    append_members(
        &chain,
        &[
            ("netpoint/media/x", "link", "."),
            ("netpoint/media/x/l", "link", ".."),
            (&through, "file", "written outside"),
        ],
    );
    let refused = import(&chain);
    assert!(!refused.status.success(), "{}", refused.output());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("symbolic link"),
        "{}",
        refused.stderr
    );
    for place in [dir.path(), workspace_root(), Path::new("/tmp")] {
        assert!(
            !place.join(&stray).exists(),
            "written outside: {}",
            place.display()
        );
    }
    let found: Vec<_> = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().contains(&stray))
        .collect();
    assert!(found.is_empty(), "{found:?}");
    unchanged("a link chain written through");

    // Links alone that the text check lets pass, `y -> .` and `z -> y/..`: z is the parent of
    // the media root once the file system resolves it.
    let pointing = dir.path().join("pointing");
    copy_tree(&bundle, &pointing);
    append_members(
        &pointing,
        &[
            ("netpoint/media/y", "link", "."),
            ("netpoint/media/z", "link", "y/.."),
        ],
    );
    let refused = import(&pointing);
    assert!(!refused.status.success(), "{}", refused.output());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("outside the media root"),
        "{}",
        refused.stderr
    );
    unchanged("a link that resolves outside");

    // Links that stay inside still import, as export writes them.
    let inside = dir.path().join("inside");
    copy_tree(&bundle, &inside);
    append_members(
        &inside,
        &[("netpoint/media/alias", "link", "devicetype-images")],
    );
    import(&inside).ok();
    assert_eq!(
        fs::read_link(dev_media.join("alias")).unwrap(),
        Path::new("devicetype-images")
    );
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn nested_source_and_target_media_are_refused() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.load_fixture("netpoint");
    let db_before = pg.fingerprint("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    copy_tree(&fixtures().join("media"), &media);
    fs::create_dir_all(media.join("inner")).unwrap();
    fs::write(media.join("inner/kept.txt"), b"inner file").unwrap();
    let link = dir.path().join("link-to-media");
    std::os::unix::fs::symlink(&media, &link).unwrap();
    let before = listing(&media);
    let inner = media.join("inner");
    let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
        (inner.clone(), media.clone(), "source inside target"),
        (media.clone(), inner.clone(), "target inside source"),
        (link.join("inner"), media.clone(), "through a symlink"),
        (media.clone(), link.join("inner/new"), "a new target inside"),
    ];
    for (source, target, what) in &cases {
        for direct in [false, true] {
            let mut args = vec!["clone-prod"];
            let (prod_url, dev_url) = (pg.url("prod"), pg.url("netpoint"));
            if direct {
                args.extend(["--source", &prod_url, "--target", &dev_url]);
            } else {
                args.push("--media-only");
            }
            args.extend([
                "--source-media",
                s(source),
                "--target-media",
                s(target),
                "--yes",
            ]);
            let refused = run(xtask(&args));
            assert!(!refused.status.success(), "{what}: {}", refused.output());
            assert_eq!(error_lines(&refused).len(), 1, "{what}: {}", refused.stderr);
            assert!(
                refused.stderr.contains("inside") && refused.stderr.contains("choose"),
                "{what}: {}",
                refused.stderr
            );
            assert_eq!(listing(&media), before, "{what} (direct: {direct})");
            assert!(leftovers(dir.path()).is_empty(), "{what}");
            assert!(leftovers(&media).is_empty(), "{what}");
            assert!(!inner.join("new").exists(), "{what}");
        }
    }
    pg.assert_unchanged("netpoint", &db_before, "the target is unchanged");
    assert!(pg.temp_dbs().is_empty());
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} (the mount-point tests need root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap();
    fs::metadata(dir).unwrap().dev() != fs::metadata(parent).unwrap().dev()
}

#[test]
fn a_media_directory_that_is_a_mount_point_is_filled_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("volume");
    let _mount = Mount::tmpfs(&target, "size=64m,mode=0755");
    fs::write(target.join("old.txt"), b"previous media").unwrap();
    let source = fixtures().join("media");
    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s(&source),
        "--target-media",
        s(&target),
        "--yes",
    ]))
    .ok();
    assert!(is_mount_point(&target), "the mount point was replaced");
    assert_eq!(tree(&target), tree(&source));
    assert!(leftovers(&target).is_empty(), "{:?}", leftovers(&target));
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn a_mount_point_that_cannot_be_filled_is_refused_before_the_database_changes() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    pg.psql("prod", "create table public.from_prod (x int)");
    pg.load_fixture("netpoint");
    let db_before = pg.fingerprint("netpoint");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("volume");
    let _mount = Mount::tmpfs(&target, "size=16m,mode=0755");
    fs::write(target.join("old.txt"), b"previous media").unwrap();
    // Read-only from now on: neither the mount point nor anything in it can change.
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clone = |target: &Path| {
        run(xtask(&[
            "clone-prod",
            "--source",
            &pg.url("prod"),
            "--target",
            &pg.url("netpoint"),
            "--source-media",
            s(&fixtures().join("media")),
            "--target-media",
            s(target),
            "--yes",
        ]))
    };
    let refused = clone(&target);
    assert!(!refused.status.success(), "{}", refused.output());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("volume"), "{}", refused.stderr);
    pg.assert_unchanged("netpoint", &db_before, "the database changed");
    assert!(pg.temp_dbs().is_empty());
    assert_eq!(fs::read(target.join("old.txt")).unwrap(), b"previous media");
    assert!(leftovers(dir.path()).is_empty());

    // A writable mount point takes the whole clone: database and media.
    let out = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success());
    clone(&target).ok();
    assert!(pg
        .row_counts_fast("netpoint")
        .iter()
        .any(|(t, _)| t == "public.from_prod"));
    assert!(is_mount_point(&target));
    assert_eq!(tree(&target), tree(&fixtures().join("media")));
    assert!(leftovers(&target).is_empty() && leftovers(dir.path()).is_empty());
}

#[test]
fn a_media_directory_that_is_a_symlink_stays_one() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-media");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("old.txt"), b"previous media").unwrap();
    let link = dir.path().join("media");
    std::os::unix::fs::symlink("real-media", &link).unwrap();
    let source = fixtures().join("media");
    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s(&source),
        "--target-media",
        s(&link),
        "--yes",
    ]))
    .ok();
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("real-media"));
    assert_eq!(tree(&real), tree(&source));
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // A link to nowhere is refused rather than replaced by a directory.
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("missing-dir", &dangling).unwrap();
    let refused = run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s(&source),
        "--target-media",
        s(&dangling),
        "--yes",
    ]));
    assert!(!refused.status.success());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("missing-dir"), "{}", refused.stderr);
    assert!(fs::symlink_metadata(&dangling).unwrap().is_symlink());
    assert!(!dir.path().join("missing-dir").exists());
}

#[test]
fn media_names_that_are_not_utf8_round_trip_through_a_bundle() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    copy_tree(&fixtures().join("media"), &media);
    let odd: Vec<(Vec<u8>, &[u8])> = vec![
        (b"caf\xe9.jpg".to_vec(), b"latin-1 name"),
        (b"back\\slash.png".to_vec(), b"backslash"),
        (b"new\nline.txt".to_vec(), b"newline"),
        (b"dir\xff/inner \xfe.bin".to_vec(), b"nested"),
    ];
    for (name, data) in &odd {
        let path = media.join(OsStr::from_bytes(name));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    let bundle = dir.path().join("bundle");
    export(&pg, &media, &bundle);

    // GNU sha256sum accepts the list inside the unpacked media directory.
    let unpacked = dir.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(bundle.join("netpoint_media.tar.gz"))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let check = Command::new("sha256sum")
        .args(["-c", "--strict"])
        .arg(bundle.join("media.sha256"))
        .current_dir(unpacked.join("netpoint/media"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c media.sha256: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let listed = fs::read(bundle.join("media.sha256")).unwrap();
    assert!(listed.windows(8).any(|w| w == b"caf\xe9.jpg"), "raw bytes");

    // The import verifies the same names and lands the same bytes.
    pg.create_db("netpoint");
    let target = dir.path().join("dev-media");
    run(xtask(&[
        "clone-prod",
        "--bundle",
        s(&bundle),
        "--trust-unsigned",
        "--target",
        &pg.url("netpoint"),
        "--target-media",
        s(&target),
        "--yes",
    ]))
    .ok();
    for (name, data) in &odd {
        assert_eq!(
            &fs::read(target.join(OsStr::from_bytes(name))).unwrap(),
            data
        );
    }
    assert_eq!(listing(&target), listing(&media));

    // hash-media prints what sha256sum prints.
    let ours = Command::new(crate::harness::xtask_bin())
        .arg("hash-media")
        .arg(&media)
        .output()
        .unwrap();
    assert!(ours.status.success());
    assert_eq!(ours.stdout, listed);
}

#[test]
fn a_non_empty_media_directory_is_not_replaced_without_asking() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("dev-media");
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("only-copy.txt"), b"my local upload").unwrap();
    let before = listing(&media);
    let clone = |extra: &[&str]| {
        let (prod, dev) = (pg.url("prod"), pg.url("netpoint"));
        let source = fixtures().join("media");
        let mut args = vec![
            "clone-prod",
            "--source",
            &prod,
            "--target",
            &dev,
            "--source-media",
            s(&source),
            "--target-media",
            s(&media),
        ];
        args.extend_from_slice(extra);
        run(xtask(&args))
    };
    // A database that does not exist yet, a media directory that has files.
    let refused = clone(&[]);
    assert!(!refused.status.success(), "{}", refused.output());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--yes") && refused.stderr.contains("dev-media"),
        "{}",
        refused.stderr
    );
    assert!(!pg.has_db("netpoint"), "the database was created");
    assert!(pg.temp_dbs().is_empty());
    assert_eq!(listing(&media), before);
    assert!(leftovers(dir.path()).is_empty());

    // An empty database that exists: the same.
    pg.create_db("netpoint");
    clone(&[]).fails_with("--yes");
    assert_eq!(listing(&media), before);
    assert_eq!(pg.row_counts_fast("netpoint"), Vec::new());

    clone(&["--yes"]).ok();
    assert_eq!(tree(&media), tree(&fixtures().join("media")));
}

#[test]
fn refresh_check_reads_the_fixture_media_themselves() {
    let pg = Pg::start(15);
    pg.load_fixture("source");
    let dir = tempfile::tempdir().unwrap();
    let fx = dir.path().join("fx");
    copy_tree(&fixtures(), &fx);
    let pristine = dir.path().join("pristine-media");
    copy_tree(&fixtures().join("media"), &pristine);
    let check = || {
        run(xtask(&[
            "seed-dev",
            "--refresh",
            "--check",
            "--source",
            &pg.url("source"),
            "--fixtures",
            s(&fx),
            "--source-media",
            s(&pristine),
        ]))
    };
    check().ok();

    // One byte of one fixture file edited; media.sha256 still lists the old hash.
    let edited = "devicetype-images/kestrel-kr-2200.front.png";
    let path = fx.join("media").join(edited);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let stale = check().fails_with("out of date");
    assert!(
        stale.stdout.contains(&format!("media {edited}: changed")),
        "{}",
        stale.output()
    );

    // A file dropped in without being listed.
    fs::write(&path, fs::read(pristine.join(edited)).unwrap()).unwrap();
    check().ok();
    fs::write(fx.join("media/stray.txt"), b"not listed").unwrap();
    let stale = check().fails_with("out of date");
    assert!(
        stale.stdout.contains("media stray.txt"),
        "{}",
        stale.output()
    );
    assert!(
        fs::read(fx.join("media/stray.txt")).is_ok(),
        "--check wrote"
    );
}

/// Removes a dev container, its volume and its passfile when dropped.
struct DevContainer {
    name: String,
    passfile: PathBuf,
}

impl Drop for DevContainer {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "--force", "--volumes", &self.name],
            vec!["volume", "rm", "--force", &format!("{}-data", self.name)],
        ] {
            let _ = Command::new("docker")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_file(&self.passfile);
    }
}

#[test]
fn the_passfile_is_private_on_every_run() {
    let name = marker("np-it-passfile").to_lowercase();
    let passfile = workspace_root()
        .join(".netpoint")
        .join(format!("{name}.pgpass"));
    let _cleanup = DevContainer {
        name: name.clone(),
        passfile: passfile.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let seed = || {
        let mut cmd = xtask(&["seed-dev", "--target-media", s(&media), "--yes"]);
        cmd.env("NETPOINT_DEV_DB_CONTAINER", &name);
        run(cmd)
    };
    seed().ok();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&passfile), 0o600);

    // Made world-readable by hand (a careless chmod, a copy, an unpack): the next run fixes it.
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o644)).unwrap();
    let again = seed().ok();
    assert_eq!(mode(&passfile), 0o600, "the passfile stayed readable");
    assert!(
        again.stderr.contains("0600") && again.stderr.contains(s(&passfile)),
        "{}",
        again.output()
    );
}

#[test]
fn a_target_that_holds_the_current_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    let work = checkout.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("notes.txt"), b"uncommitted work").unwrap();
    let before = listing(&checkout);
    for target in [checkout.clone(), PathBuf::from("..")] {
        let mut cmd = xtask(&[
            "clone-prod",
            "--media-only",
            "--source-media",
            s(&fixtures().join("media")),
            "--target-media",
            s(&target),
            "--yes",
        ]);
        cmd.current_dir(&work);
        let refused = run(cmd);
        assert!(!refused.status.success(), "{}", refused.output());
        assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
        assert!(
            refused.stderr.contains("holds the current directory"),
            "{}",
            refused.stderr
        );
        assert_eq!(listing(&checkout), before, "{}", target.display());
        assert!(leftovers(dir.path()).is_empty() && leftovers(&checkout).is_empty());
    }
}

#[test]
fn source_links_are_judged_where_they_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("prod-media");
    copy_tree(&fixtures().join("media"), &source);
    // Each link's text stays inside; `up` is the parent of the media root once resolved.
    std::os::unix::fs::symlink(".", source.join("here")).unwrap();
    std::os::unix::fs::symlink("here/..", source.join("up")).unwrap();
    let target = dir.path().join("dev-media");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("mine.txt"), b"my upload").unwrap();
    let before = listing(&target);
    let refused = run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s(&source),
        "--target-media",
        s(&target),
        "--yes",
    ]));
    assert!(!refused.status.success(), "{}", refused.output());
    assert_eq!(error_lines(&refused).len(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("outside the media root"),
        "{}",
        refused.stderr
    );
    assert_eq!(listing(&target), before);
    assert!(leftovers(dir.path()).is_empty());

    // Without the escaping link, the link that stays inside is copied as a link.
    fs::remove_file(source.join("up")).unwrap();
    run(xtask(&[
        "clone-prod",
        "--media-only",
        "--source-media",
        s(&source),
        "--target-media",
        s(&target),
        "--yes",
    ]))
    .ok();
    assert_eq!(fs::read_link(target.join("here")).unwrap(), Path::new("."));
    assert_eq!(tree(&target), tree(&fixtures().join("media")));
}

#[test]
fn archive_modes_keep_their_permission_bits_only() {
    let pg = Pg::start(15);
    pg.load_fixture("prod");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source-media");
    copy_tree(&fixtures().join("media"), &source);
    let file = source.join("image-attachments/rack_12_rear.jpg");
    let set = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap()
    };
    set(&file, 0o4755);
    set(&source.join("image-attachments"), 0o2775);
    set(&source.join("devicetype-images"), 0o1777);
    let bundle = dir.path().join("bundle");
    export(&pg, &source, &bundle);
    // The archive carries the bits as they were, as `tar` would.
    let listed = Command::new("tar")
        .args(["-tvzf"])
        .arg(bundle.join("netpoint_media.tar.gz"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("-rwsr-xr-x") && l.ends_with("rack_12_rear.jpg")),
        "{listed}"
    );
    let media = dir.path().join("dev-media");
    run(xtask(&[
        "clone-prod",
        "--trust-unsigned",
        "--bundle",
        s(&bundle),
        "--target",
        &pg.url("netpoint"),
        "--target-media",
        s(&media),
        "--yes",
    ]))
    .ok();
    let mode = |rel: &str| fs::metadata(media.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(mode("image-attachments/rack_12_rear.jpg"), 0o755);
    assert_eq!(mode("image-attachments"), 0o775);
    assert_eq!(mode("devicetype-images"), 0o777);
    assert_eq!(
        fs::read(media.join("image-attachments/rack_12_rear.jpg")).unwrap(),
        fs::read(&file).unwrap()
    );
}
