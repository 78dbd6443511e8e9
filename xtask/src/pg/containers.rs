//! Containers that run client tools carry our pid in a label, so that none outlives the run:
//! those left when we end are removed, and so are those of runs that died.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use xshell::{cmd, Shell};

use crate::process;

const LABEL: &str = "netpoint-xtask.pid";
static USED: AtomicBool = AtomicBool::new(false);

/// `--name` and `--label` for the next container.
pub fn name_and_label() -> [String; 4] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    [
        "--name".into(),
        format!(
            "netpoint-xtask-{pid}-{}",
            NEXT.fetch_add(1, Ordering::SeqCst)
        ),
        "--label".into(),
        format!("{LABEL}={pid}"),
    ]
}

/// Before the first container of a run: removes those of runs that are gone.
pub fn first_use(sh: &Shell) {
    if USED.swap(true, Ordering::SeqCst) {
        return;
    }
    let filter = format!("label={LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
    let Ok(listed) = cmd!(sh, "docker ps -a --filter {filter} --format {format}")
        .quiet()
        .ignore_stderr()
        .read()
    else {
        return;
    };
    let dead: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, pid)| pid.parse::<u32>().is_ok_and(|pid| !process::alive(pid)))
        .map(|(id, _)| id)
        .collect();
    if !dead.is_empty() {
        let _ = cmd!(sh, "docker rm -f {dead...}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run();
    }
}

/// At the end of a run that used containers: removes any still there.
pub fn remove_ours() {
    if !USED.load(Ordering::SeqCst) {
        return;
    }
    let Ok(sh) = Shell::new() else {
        return;
    };
    let filter = format!("label={LABEL}={}", std::process::id());
    if let Ok(ids) = cmd!(sh, "docker ps -aq --filter {filter}")
        .quiet()
        .ignore_stderr()
        .read()
    {
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let _ = cmd!(sh, "docker rm -f {ids...}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
        }
    }
}
