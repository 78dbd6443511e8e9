//! `cargo xtask dev-db` with ready spares: a restore renames the snapshot's spare into place
//! and a detached run prepares the next one; a spare that is missing, still being prepared
//! or killed halfway never stops a restore.

use std::{fs, os::unix::fs::MetadataExt, process::Stdio, thread, time::Duration};

use crate::{
    dev_db::DevEnv,
    harness::{run, wait_for},
};

impl DevEnv {
    /// The word `list` shows for the spare of snapshot `name`.
    fn spare_word(&self, name: &str) -> String {
        let listed = run(self.xtask_with_spares(&["dev-db", "list"])).ok();
        let line = listed
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {}", listed.stdout))
            .to_string();
        ["ready", "preparing", "missing"]
            .into_iter()
            .find(|word| line.contains(&format!("  {word}  ")))
            .unwrap_or_else(|| panic!("no spare state in: {line}"))
            .to_string()
    }

    fn wait_ready(&self, name: &str) {
        wait_for(
            &format!("the spare of {name} ready"),
            Duration::from_secs(120),
            || self.spare_word(name) == "ready",
        );
    }

    fn spare_dbs(&self) -> Vec<String> {
        self.pg
            .databases()
            .into_iter()
            .filter(|d| d.starts_with("npspare_"))
            .collect()
    }

    fn spare_dirs(&self) -> Vec<String> {
        self.store_names()
            .into_iter()
            .filter(|n| n.contains("npspare_"))
            .collect()
    }

    fn damage(&self) {
        self.dev_psql(
            "update dcim_site set name = name || ' (changed)'; create table junk (id int)",
        );
        fs::write(self.media.join("added.txt"), b"new").unwrap();
    }
}

fn spares_restore(major: u32) {
    let env = DevEnv::start(major);
    let before = env.state();
    let saved = run(env.xtask_with_spares(&["dev-db", "save", "base"])).ok();
    assert!(
        saved.stderr.contains("preparing the spare of `base`"),
        "{}",
        saved.stderr
    );
    env.wait_ready("base");
    assert_eq!(env.spare_dbs().len(), 1, "PostgreSQL {major}");
    // The spare's media are copies, never links to the snapshot's files.
    let dirs = env.spare_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let spare_media = env.stores().join(&dirs[0]).join("media");
    for file in walk(&spare_media) {
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(meta.nlink(), 1, "{}", file.display());
    }

    for round in ["first", "second"] {
        env.damage();
        assert_ne!(env.state(), before);
        let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
        assert!(
            restored
                .stderr
                .contains("renamed the ready spare of `base`"),
            "{round}: {}",
            restored.stderr
        );
        assert_eq!(env.state(), before, "PostgreSQL {major}, {round} restore");
        assert_eq!(
            env.dev_psql(
                "select pg_get_userbyid(datdba) from pg_database where datname = current_database()"
            ),
            "dev"
        );
        env.wait_ready("base");
        // The previous dev database was dropped by the detached run.
        wait_for(
            "the previous database dropped",
            Duration::from_secs(60),
            || env.pg.temp_dbs().is_empty(),
        );
    }

    // A missing spare: the restore copies, and says so in one line.
    let spare = env.spare_dbs().remove(0);
    env.pg
        .psql("postgres", &format!("drop database \"{spare}\""));
    assert_eq!(env.spare_word("base"), "missing");
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    let lines: Vec<&str> = restored
        .stderr
        .lines()
        .filter(|l| l.contains("no ready spare"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", restored.stderr);
    assert_eq!(env.state(), before, "PostgreSQL {major}, restore by copy");
    env.wait_ready("base");

    run(env.xtask_with_spares(&["dev-db", "drop", "base", "--yes"])).ok();
    assert!(env.spare_dbs().is_empty());
    assert!(env.spare_dirs().is_empty(), "{:?}", env.store_names());
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn restore_renames_a_ready_spare_in_and_prepares_the_next_on_13_15_and_17() {
    thread::scope(|scope| {
        let runs: Vec<_> = [13, 15, 17]
            .into_iter()
            .map(|major| scope.spawn(move || spares_restore(major)))
            .collect();
        for run in runs {
            run.join().unwrap();
        }
    });
}

#[test]
fn a_spare_preparation_killed_halfway_is_cleaned_up_and_listed_as_missing() {
    let env = DevEnv::start(15);
    let before = env.state();
    run(env.xtask_with_spares(&["dev-db", "save", "base"])).ok();
    env.wait_ready("base");
    let snapshot = env.snapshots().remove(0);

    // A session that holds a lock on the snapshot's database: the next spare's copy waits.
    let mut blocker = env
        .pg
        .psql_cmd("postgres")
        .args([
            "-c",
            &format!(
                "begin; comment on database \"{snapshot}\" is 'x'; select pg_sleep(300); rollback"
            ),
        ])
        .env("PGAPPNAME", "blocker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the blocker", Duration::from_secs(30), || {
        env.sessions_of("blocker") == 1
    });
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    assert!(
        restored.stderr.contains("renamed the ready spare"),
        "{}",
        restored.stderr
    );
    wait_for(
        "the next spare being prepared",
        Duration::from_secs(30),
        || env.spare_word("base") == "preparing",
    );

    // A restore while the spare is being prepared copies the snapshot instead (and waits,
    // like the spare's copy, for the blocker).
    env.damage();
    let second = env
        .xtask_with_spares(&["dev-db", "restore", "base", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("both copies waiting", Duration::from_secs(60), || {
        env.pg.psql(
            "postgres",
            "select count(*) from pg_stat_activity where query ilike 'create database%'",
        ) == "2"
    });

    // kill -9 of the detached run halfway through: `list` says the spare is missing.
    let holders = env.pg.psql(
        "postgres",
        "select application_name from pg_stat_activity where application_name like 'cargo xtask pid %'",
    );
    let pid: i32 = holders
        .lines()
        .filter_map(|h| h.split_whitespace().nth(3)?.parse().ok())
        .find(|pid| *pid != second.id() as i32)
        .unwrap_or_else(|| panic!("no detached run among: {holders}"));
    // SAFETY: kill signals the detached run this test started through xtask.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(
        "the spare listed as missing",
        Duration::from_secs(30),
        || env.spare_word("base") == "missing",
    );
    assert!(fs::read_dir(env.stores()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("npspare_")));

    env.pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'blocker'",
    );
    let _ = blocker.wait();
    let second = crate::harness::output_of(second);
    assert!(second.status.success(), "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("is still being prepared: copying the snapshot instead"),
        "{}",
        second.stderr
    );
    assert_eq!(env.state(), before);

    // What the killed run left is removed and a new spare is prepared.
    env.wait_ready("base");
    assert_eq!(env.spare_dbs().len(), 1);
    assert_eq!(env.spare_dirs().len(), 1, "{:?}", env.store_names());
    env.damage();
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "base", "--yes"])).ok();
    assert!(
        restored.stderr.contains("renamed the ready spare"),
        "{}",
        restored.stderr
    );
    assert_eq!(env.state(), before);

    // --no-spare keeps today's behaviour: no spare, restores copy without a word about it.
    run(env.xtask_with_spares(&["dev-db", "save", "plain", "--no-spare"])).ok();
    assert_eq!(env.spare_word("plain"), "missing");
    let restored = run(env.xtask_with_spares(&["dev-db", "restore", "plain", "--yes"])).ok();
    assert!(!restored.stderr.contains("spare"), "{}", restored.stderr);
    assert_eq!(env.spare_dbs().len(), 1);
}
