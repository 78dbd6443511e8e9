use std::{
    fs::{self, File},
    io::Read,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{archive::*, copy::*, extract::*, gz::*, sums::*, walk::*, *};

#[test]
fn links_must_stay_inside_once_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    fs::create_dir_all(root.join("a")).unwrap();
    let inside =
        |rel: &str, target: &str| link_stays_inside(&root, Path::new(rel), Path::new(target));
    assert!(inside("a/b.png", "../c.png"));
    assert!(inside("a/b.png", "./c.png"));
    assert!(!inside("b.png", "../c.png"));
    assert!(!inside("a/b.png", "/etc/passwd"));
    assert!(!inside("a/b.png", "../../x"));

    // A chain: each link's text stays inside, the path they make does not.
    std::os::unix::fs::symlink(".", root.join("x")).unwrap();
    assert!(inside("x", "."));
    assert!(!inside("z", "x/.."));
    assert!(!inside("a/z", "../x/../x/.."));
    assert!(inside("z", "x/a/../a"));
    std::os::unix::fs::symlink("a/..", root.join("up")).unwrap();
    assert!(!inside("z", "up/.."));
    // A loop ends instead of running forever.
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    assert!(!inside("z", "loop/x"));
}

#[test]
fn archives_cannot_write_through_links() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("chain.tar.gz");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        File::create(&archive).unwrap(),
        flate2::Compression::fast(),
    ));
    let mut link = |name: &str, target: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    };
    link("netpoint/media/x", ".");
    link("netpoint/media/x/l", "..");
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "netpoint/media/x/l/evil", &b"x"[..])
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    let out = dir.path().join("out");
    let err = extract_archive(&archive, &out).unwrap_err().to_string();
    assert!(err.contains("symbolic link netpoint/media/x"), "{err}");
    assert!(!dir.path().join("evil").exists());
    assert!(
        !out.join("x").exists(),
        "a link was made before the refusal"
    );
}

#[test]
fn sha256_lines_round_trip() {
    let files = vec![
        Hashed {
            rel: "b/x y.png".into(),
            sha256: "a".repeat(64),
            size: 1,
        },
        Hashed {
            rel: "a\\odd\nname".into(),
            sha256: "b".repeat(64),
            size: 2,
        },
        Hashed {
            rel: "Ä.jpg".into(),
            sha256: "c".repeat(64),
            size: 3,
        },
    ];
    let text = String::from_utf8(sha256_list(&files)).unwrap();
    assert!(text.starts_with("\\bbbb"), "{text}");
    let parsed = parse_sha256_list(&text, "list").unwrap();
    assert_eq!(parsed["b/x y.png"], "a".repeat(64));
    assert_eq!(parsed["a\\odd\nname"], "b".repeat(64));
    assert_eq!(parsed.len(), 3);
    assert!(parse_sha256_list("nonsense\n", "list").is_err());
    assert!(parse_sha256_list(&format!("\\{}  a\\q\n", "d".repeat(64)), "list").is_err());
}

#[test]
fn sha256_lines_keep_names_that_are_not_utf8() {
    let name = |bytes: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
    let files: Vec<Hashed> = [&b"caf\xe9.jpg"[..], b"cr\rand\\\xff", b"plain.png"]
        .iter()
        .enumerate()
        .map(|(i, bytes)| Hashed {
            rel: name(bytes),
            sha256: format!("{i}").repeat(64),
            size: 1,
        })
        .collect();
    let text = sha256_list(&files);
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    assert_eq!(lines[0], [&b"0".repeat(64)[..], b"  caf\xe9.jpg"].concat());
    assert_eq!(
        lines[1],
        [&b"\\"[..], &b"1".repeat(64), b"  cr\\rand\\\\\xff"].concat()
    );
    let parsed = parse_sums(&text, "list").unwrap();
    for file in &files {
        assert_eq!(parsed[&file.rel], file.sha256, "{}", file.rel.display());
    }

    // And GNU sha256sum agrees, byte for byte, on real files.
    let dir = tempfile::tempdir().unwrap();
    for file in &files {
        fs::write(dir.path().join(&file.rel), b"x").unwrap();
    }
    let entries = scan(dir.path()).unwrap();
    let ours = sha256_list(&hash_all(dir.path(), &entries, &|_| {}).unwrap());
    let names: Vec<&std::ffi::OsStr> = entries.iter().map(|e| e.rel.as_os_str()).collect();
    let gnu = std::process::Command::new("sha256sum")
        .arg("--")
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(ours, gnu.stdout);
    let back = parse_sums(&gnu.stdout, "list").unwrap();
    assert_eq!(verify(dir.path(), &back, &|_| {}).unwrap().files, 3);
}

#[test]
fn archive_round_trip_and_traversal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    fs::create_dir_all(root.join("nested dir/ü")).unwrap();
    fs::write(root.join("nested dir/ü/a.png"), b"png").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let entries = scan(&root).unwrap();
    let archive = dir.path().join("m.tar.gz");
    let hashed = write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}).unwrap();
    let out = dir.path().join("out");
    extract_archive(&archive, &out).unwrap();
    let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
    assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 2);

    let evil = dir.path().join("evil.tar.gz");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        File::create(&evil).unwrap(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    let name = b"netpoint/media/../../escape";
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    let err = extract_archive(&evil, &dir.path().join("out2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("leaves the media root"), "{err}");
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text that compresses, photos that do not, one larger than a gzip member, an empty file,
/// a link and a private file. Returns the size of the text.
fn mixed_tree(root: &Path) -> u64 {
    fs::create_dir_all(root.join("photos/2024")).unwrap();
    fs::create_dir_all(root.join("docs")).unwrap();
    let text: String = (0..40_000)
        .map(|i| format!("row {i}, customer {}, plan basic\n", i % 97))
        .collect();
    fs::write(root.join("docs/export.csv"), &text).unwrap();
    fs::set_permissions(
        root.join("docs/export.csv"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(root.join("docs/empty.txt"), b"").unwrap();
    fs::write(root.join("photos/2024/big.jpg"), noise(MEMBER + 300_000, 1)).unwrap();
    for i in 0..20 {
        let photo = root.join(format!("photos/p{i:02}.png"));
        fs::write(photo, noise(50_000 + i * 7_919, i as u64 + 2)).unwrap();
    }
    std::os::unix::fs::symlink("../docs/export.csv", root.join("photos/link.csv")).unwrap();
    text.len() as u64
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    let want = scan(expected).unwrap();
    let got = scan(actual).unwrap();
    let names = |entries: &[Entry]| {
        entries
            .iter()
            .map(|e| (e.rel.clone(), e.kind.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    for entry in want.iter().filter(|e| matches!(e.kind, Kind::File { .. })) {
        let (a, b) = (expected.join(&entry.rel), actual.join(&entry.rel));
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{} differs",
            b.display()
        );
        let (a, b) = (fs::metadata(a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(a.permissions().mode(), b.permissions().mode());
        let secs = |m: &fs::Metadata| {
            m.modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(secs(&a), secs(&b), "{} mtime", entry.rel.display());
    }
}

#[test]
fn archive_of_many_members_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let text_len = mixed_tree(&root);
    let entries = scan(&root).unwrap();
    let archive = dir.path().join("m.tar.gz");
    let hashed = write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}).unwrap();

    assert_eq!(hashed.len(), 23);
    for file in &hashed {
        let data = fs::read(root.join(&file.rel)).unwrap();
        assert_eq!(
            file.sha256,
            hex(&Sha256::digest(&data)),
            "{}",
            file.rel.display()
        );
        assert_eq!(file.size, data.len() as u64);
    }

    let packed = fs::read(&archive).unwrap();
    let mut stream = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut stream)
        .unwrap();
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut first)
        .unwrap();
    assert!(first.len() < stream.len(), "the archive is a single member");
    assert_eq!(stream.len() % 512, 0);
    let input = totals(&hashed).bytes;
    assert!(
        (packed.len() as u64) < input - text_len / 2,
        "the text was not compressed: {} bytes for {input}",
        packed.len()
    );

    let out = dir.path().join("out");
    extract_archive(&archive, &out).unwrap();
    assert_same_tree(&root, &out);
    let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
    assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 23);

    let sh = xshell::Shell::new().unwrap();
    let gnu = dir.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    xshell::cmd!(sh, "tar -xzf {archive} -C {gnu}")
        .quiet()
        .run()
        .unwrap();
    assert_same_tree(&root, &gnu.join("netpoint/media"));
    let listing = xshell::cmd!(sh, "tar -tzf {archive}").read().unwrap();
    assert_eq!(listing.lines().next(), Some("netpoint/"));
    assert!(listing
        .lines()
        .skip(1)
        .all(|l| l.starts_with(ARCHIVE_PREFIX)));
}

#[test]
fn archives_from_a_one_thread_pool() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    mixed_tree(&root);
    let entries = scan(&root).unwrap();
    let archive = dir.path().join("m.tar.gz");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let hashed = pool
        .install(|| write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}))
        .unwrap();
    let out = dir.path().join("out");
    extract_archive(&archive, &out).unwrap();
    let sums = parse_sums(&sha256_list(&hashed), "list").unwrap();
    assert_eq!(verify(&out, &sums, &|_| {}).unwrap().files, 23);

    fs::remove_file(root.join("photos/p19.png")).unwrap();
    let err = pool
        .install(|| write_archive(&root, &entries, File::create(&archive).unwrap(), &|_| {}))
        .unwrap_err();
    assert!(format!("{err:#}").contains("p19.png"), "{err:#}");
}

#[test]
fn members_decode_at_block_edges() {
    for len in [0, 1, 0xffff, 0x10000, 3 * 0xffff + 7] {
        for data in [noise(len, 7), vec![b'a'; len]] {
            let mut member = Vec::new();
            gzip_member(&data, &mut member).unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&member[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{len} bytes did not round-trip");
        }
        let mut member = Vec::new();
        gzip_member(&noise(len, 9), &mut member).unwrap();
        assert!(
            member.len() <= len + len / 0xffff * 5 + 23,
            "{len} bytes not stored"
        );
    }
}

#[test]
fn copies_and_sums_match_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    mixed_tree(&root);
    let entries = scan(&root).unwrap();
    let copy = dir.path().join("copy");
    let copied = copy_verified(&root, &entries, &copy, &|_| {}).unwrap();
    assert_same_tree(&root, &copy);
    let list = sha256_list(&copied);
    assert_eq!(
        sha256_list(&hash_all(&copy, &entries, &|_| {}).unwrap()),
        list
    );

    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(&root);
    let mut names: Vec<String> = copied
        .iter()
        .map(|f| f.rel.to_string_lossy().into_owned())
        .collect();
    names.sort();
    let sums = xshell::cmd!(sh, "sha256sum -- {names...}").read().unwrap();
    assert_eq!(String::from_utf8(list).unwrap(), sums + "\n");
}

#[test]
fn trees_copy_without_a_list_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    mixed_tree(&root);
    let counted = count(&root).unwrap();
    let listed = scan_totals(&scan(&root).unwrap());
    assert_eq!((counted.files, counted.bytes), (listed.files, listed.bytes));
    assert!(counted.files > 3, "{counted:?}");
    let copy = dir.path().join("copy");
    let seen = std::sync::atomic::AtomicU64::new(0);
    let copied = copy_tree(&root, &copy, None, &|n| {
        seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_same_tree(&root, &copy);
    assert_eq!(
        (copied.all.files, copied.all.bytes),
        (counted.files, counted.bytes)
    );
    assert_eq!(copied.linked.files, 0);
    assert_eq!(seen.into_inner(), counted.bytes);

    std::os::unix::fs::symlink("../../outside", root.join("escape")).unwrap();
    let err = copy_tree(&root, &dir.path().join("copy2"), None, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("outside the media root"), "{err}");
    assert!(count(&root).is_err());
}

#[test]
fn a_copy_over_an_earlier_one_links_what_is_unchanged_and_copies_the_rest() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    mixed_tree(&root);
    let first = dir.path().join("first");
    copy_tree(&root, &first, None, &|_| {}).unwrap();
    // The source changes: one file rewritten (same size, new time), one added, one removed,
    // one only made executable.
    let files: Vec<PathBuf> = scan(&root)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::File { size } if size > 0))
        .map(|e| e.rel)
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let (rewritten, removed, chmodded) = (&files[0], &files[1], &files[2]);
    let old = fs::read(root.join(rewritten)).unwrap();
    let mut new = old.clone();
    new[0] ^= 1;
    fs::write(root.join(rewritten), &new).unwrap();
    fs::remove_file(root.join(removed)).unwrap();
    fs::set_permissions(root.join(chmodded), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("added.bin"), b"new").unwrap();

    let second = dir.path().join("second");
    let copied = copy_tree(&root, &second, Some(&first), &|_| {}).unwrap();
    assert_same_tree(&root, &second);
    let now = scan_totals(&scan(&root).unwrap());
    assert_eq!(copied.all.files, now.files);
    // Not linked: the rewritten, the chmodded and the added file.
    assert_eq!(copied.linked.files, now.files - 3, "{copied:?}");
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    for rel in &files[3..] {
        assert_eq!(
            ino(&first.join(rel)),
            ino(&second.join(rel)),
            "{rel:?} linked"
        );
    }
    for rel in [rewritten, chmodded] {
        assert_ne!(
            ino(&first.join(rel)),
            ino(&second.join(rel)),
            "{rel:?} copied"
        );
    }
    assert!(!second.join(removed).exists());
    assert_eq!(
        fs::read(first.join(rewritten)).unwrap(),
        old,
        "the earlier copy is untouched"
    );

    // A file reached through a link in the earlier copy is not linked from: it is not
    // the copy's own.
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let through = dir.path().join("through");
    copy_tree(&root, &through, None, &|_| {}).unwrap();
    let sub = files[3].parent().unwrap();
    assert!(!sub.as_os_str().is_empty(), "{:?}", files[3]);
    let moved = elsewhere.join("sub");
    fs::rename(through.join(sub), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, through.join(sub)).unwrap();
    let fourth = dir.path().join("fourth");
    copy_tree(&root, &fourth, Some(&through), &|_| {}).unwrap();
    assert_ne!(
        ino(&moved.join(files[3].file_name().unwrap())),
        ino(&fourth.join(&files[3]))
    );
    let size = fs::metadata(root.join(&files[3])).unwrap().len();
    let earlier =
        |copy: &Path| unchanged_file(&fs::canonicalize(copy).unwrap(), &files[3], size, |_| true);
    assert!(earlier(&through).is_none());
    assert!(earlier(&first).is_some());

    // A copy that shares its files with the source is not linked from.
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::hard_link(root.join("added.bin"), shared.join("added.bin")).unwrap();
    let third = dir.path().join("third");
    copy_tree(&root, &third, Some(&shared), &|_| {}).unwrap();
    assert_ne!(ino(&root.join("added.bin")), ino(&third.join("added.bin")));
}

#[test]
fn a_hard_link_member_becomes_a_copy_of_an_earlier_file_and_nothing_else() {
    let stream = |link_to: &str| {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o640);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, "./a/first.png", &b"bytes"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_size(0);
        link.set_mode(0o640);
        link.set_mtime(1_700_000_000);
        link.set_entry_type(tar::EntryType::Link);
        builder
            .append_link(&mut link, "./b/second.png", link_to)
            .unwrap();
        builder.into_inner().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    extract_tar(&stream("./a/first.png")[..], None, &out, None).unwrap();
    assert_eq!(fs::read(out.join("b/second.png")).unwrap(), b"bytes");
    fs::write(out.join("a/first.png"), b"other").unwrap();
    assert_eq!(
        fs::read(out.join("b/second.png")).unwrap(),
        b"bytes",
        "a copy, not a link"
    );
    assert_eq!(
        fs::metadata(out.join("b/second.png"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    for target in ["/etc/passwd", "../outside", "./a/missing.png", "./b"] {
        let err = extract_tar(&stream(target)[..], None, &dir.path().join("bad"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a hard link to"), "{target}: {err}");
        let _ = fs::remove_dir_all(dir.path().join("bad"));
    }
}

/// A tar stream of `(path, kind, mode)`: `kind` is `file`, `dir` or `link:TARGET`.
fn tar_of(members: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for &(path, kind, mode) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        match kind {
            "file" => {
                header.set_size(2);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, path, &b"ok"[..]).unwrap();
            }
            "dir" => {
                header.set_size(0);
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, path, io_empty()).unwrap();
            }
            link => {
                header.set_size(0);
                header.set_entry_type(tar::EntryType::Symlink);
                let target = link.strip_prefix("link:").unwrap();
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn io_empty() -> &'static [u8] {
    &[]
}

#[test]
fn modes_keep_their_permission_bits_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stream = tar_of(&[
        ("./", "dir", 0o3755),
        ("./shared", "dir", 0o2775),
        ("./tmp", "dir", 0o1777),
        ("./shared/suid", "file", 0o4755),
        ("./shared/sgid", "file", 0o2711),
        ("./tmp/sticky", "file", 0o1644),
    ]);
    extract_tar(&stream[..], None, &out, None).unwrap();
    let mode = |rel: &str| fs::metadata(out.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(""), 0o755);
    assert_eq!(mode("shared"), 0o775);
    assert_eq!(mode("tmp"), 0o777);
    assert_eq!(mode("shared/suid"), 0o755);
    assert_eq!(mode("shared/sgid"), 0o711);
    assert_eq!(mode("tmp/sticky"), 0o644);
}

#[test]
fn a_stream_may_hold_only_what_its_listing_holds() {
    let listed = |rel: &Path, member: Member<'_>| match member {
        Member::Dir => rel == Path::new("d"),
        Member::File => rel == Path::new("d/f"),
        Member::Symlink(target) => rel == Path::new("l") && target == Path::new("d/f"),
    };
    let good = tar_of(&[
        ("./", "dir", 0o755),
        ("./d", "dir", 0o755),
        ("./d/f", "file", 0o644),
        ("./l", "link:d/f", 0o777),
    ]);
    let dir = tempfile::tempdir().unwrap();
    extract_tar(&good[..], None, &dir.path().join("good"), Some(&listed)).unwrap();
    for (what, extra, says) in [
        (
            "an unlisted link",
            ("./evil", "link:d"),
            "`evil`, a symbolic link",
        ),
        (
            "a link to elsewhere",
            ("./l", "link:/etc/passwd"),
            "`l`, a symbolic link",
        ),
        ("an unlisted directory", ("./e", "dir"), "`e`, a directory"),
        ("an unlisted file", ("./d/g", "file"), "`d/g`, a file"),
        (
            "a file where a directory was",
            ("./d", "file"),
            "`d`, a file",
        ),
    ] {
        let stream = tar_of(&[("./d", "dir", 0o755), (extra.0, extra.1, 0o644)]);
        let out = dir.path().join(what);
        let err = extract_tar(&stream[..], None, &out, Some(&listed))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(says) && err.contains("which the listing of the media does not"),
            "{what}: {err}"
        );
    }
}

/// Rewrites `path` in place with `bytes` (of its old size) and gives it back its old access
/// and modification times, as `touch -d` or `cp -p` would.
fn rewrite_keeping_size_and_times(path: &Path, bytes: &[u8]) {
    let meta = fs::metadata(path).unwrap();
    assert_eq!(meta.len(), bytes.len() as u64);
    fs::write(path, bytes).unwrap();
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().unwrap())
        .set_modified(meta.modified().unwrap());
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(times)
        .unwrap();
    let after = fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (meta.len(), meta.modified().unwrap())
    );
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

#[test]
fn snapshots_link_only_files_whose_identity_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("media");
    fs::create_dir_all(live.join("a/b")).unwrap();
    fs::write(live.join("a/b/f.png"), b"first").unwrap();
    fs::write(live.join("top.txt"), b"top").unwrap();
    fs::write(live.join("kept.txt"), b"kept").unwrap();
    std::os::unix::fs::symlink("a/b/f.png", live.join("link")).unwrap();
    // Files that changed in the clock step a copy begins in are not recorded.
    std::thread::sleep(std::time::Duration::from_millis(30));

    let first = dir.path().join("first");
    let one = copy_from_live(&live, &first, None).unwrap();
    assert_eq!((one.all.files, one.all.bytes, one.linked.files), (3, 12, 0));
    assert_eq!(
        fs::read_link(first.join("link")).unwrap(),
        Path::new("a/b/f.png")
    );
    // Later changes to the live tree never reach the copy.
    rewrite_keeping_size_and_times(&live.join("a/b/f.png"), b"FIRST");
    assert_eq!(fs::read(first.join("a/b/f.png")).unwrap(), b"first");

    // The next snapshot links what is unchanged, and copies the file rewritten in place
    // although its size and times are as they were.
    rewrite_keeping_size_and_times(&live.join("top.txt"), b"TOP");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let second = dir.path().join("second");
    let two = copy_from_live(&live, &second, Some((&first, &one.origins))).unwrap();
    assert_eq!(two.linked.files, 1);
    assert_eq!(ino(&first.join("kept.txt")), ino(&second.join("kept.txt")));
    assert_ne!(ino(&first.join("top.txt")), ino(&second.join("top.txt")));
    assert_eq!(fs::read(second.join("top.txt")).unwrap(), b"TOP");
    assert_eq!(fs::read(second.join("a/b/f.png")).unwrap(), b"FIRST");

    // A restore of the first snapshot: the unchanged live file is linked, the rewritten
    // ones come from the snapshot.
    let staged = dir.path().join(".media.staging");
    let back = copy_to_live(&first, &staged, Some(&live), &one.origins).unwrap();
    assert_eq!((back.all.files, back.linked.files), (3, 1));
    assert_eq!(ino(&live.join("kept.txt")), ino(&staged.join("kept.txt")));
    assert_eq!(fs::read(staged.join("top.txt")).unwrap(), b"top");
    assert_eq!(fs::read(staged.join("a/b/f.png")).unwrap(), b"first");

    // Once swapped in, every file of the restored tree is recorded; the next restore links
    // them all, and still copies one rewritten in place since. (The database's copy comes
    // between the media's and the swap, more than a step of the clock.)
    std::thread::sleep(std::time::Duration::from_millis(30));
    let stamp = Stamp::now(&staged).unwrap();
    let old = dir.path().join(".media.old");
    fs::rename(&live, &old).unwrap();
    fs::rename(&staged, &live).unwrap();
    let settled = settle_origins(back, Some(&old), &live, &stamp);
    fs::remove_dir_all(&old).unwrap();
    rewrite_keeping_size_and_times(&live.join("a/b/f.png"), b"fIRST");
    let again = copy_to_live(&first, &staged, Some(&live), &settled).unwrap();
    assert_eq!(again.linked.files, 2);
    assert_eq!(fs::read(staged.join("a/b/f.png")).unwrap(), b"first");
}
