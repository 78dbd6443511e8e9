//! How many things run at once: `--jobs`, defaulting to the number of cores.

use std::sync::OnceLock;

static JOBS: OnceLock<usize> = OnceLock::new();

/// Sets the job count for the whole run (and sizes rayon's pool to match).
pub fn set_jobs(jobs: Option<usize>) {
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let _ = JOBS.set(jobs);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build_global();
}

pub fn jobs() -> usize {
    *JOBS.get().unwrap_or(&1)
}
