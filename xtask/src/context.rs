//! What every command is given, built once in `main` from the global flags: the shell
//! (working in the workspace root), the client tools and the job count.
//!
//! Two things stay process-wide by nature and live in their modules: the interrupt flag
//! and the registry of child processes ([`crate::process`]), which a signal thread reads,
//! and the terminal's settings and the passwords to mask ([`crate::term`]), which every
//! message and the panic hook read, from any thread.

use std::sync::Arc;

use xshell::Shell;

use crate::pg::{DockerNet, PgTools, ToolSource};

pub struct Context {
    pub sh: Shell,
    /// Shared with the contexts [`Context::fork`] makes for other threads.
    pub tools: Arc<PgTools>,
    /// Sessions a load runs at once, and threads for hashing and compressing media.
    pub jobs: usize,
}

impl Context {
    pub fn new(
        sh: Shell,
        tool_source: ToolSource,
        docker_net: DockerNet,
        jobs: Option<usize>,
    ) -> Context {
        let jobs = jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        // The media's hashing and compressing run on rayon's pool: sized once, to match.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build_global();
        let tools = PgTools::discover(&sh, tool_source, docker_net);
        Context {
            sh,
            tools: Arc::new(tools),
            jobs,
        }
    }

    /// A context for another thread (a shell is not shared between threads): a shell of its
    /// own in the same directory, and the same tools, with what they learnt so far.
    pub fn fork(&self) -> Context {
        Context {
            sh: self.sh.clone(),
            tools: Arc::clone(&self.tools),
            jobs: self.jobs,
        }
    }
}
