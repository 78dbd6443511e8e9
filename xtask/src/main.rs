//! `cargo xtask`: NetPoint's developer tooling for databases and media.

mod atomic_file;
mod bundle;
mod clone_prod;
mod db_url;
mod dump;
mod leak_scan;
mod lock;
mod media;
mod parallel;
mod pg_tools;
mod process;
mod restore;
mod schema_diff;
mod schema_snapshot;
mod scrub;
mod seed_dev;
mod statements;
mod term;
mod toc;

use std::{io::IsTerminal, path::Path, process::ExitCode};

use clap::{Parser, Subcommand};
use xshell::Shell;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    version,
    about = "NetPoint developer tooling",
    propagate_version = true
)]
struct Cli {
    /// When to colour output: auto respects NO_COLOR and non-terminals.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    color: term::ColorChoice,
    /// Print each external command (credentials masked).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only warnings, errors and requested data.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Where pg_dump/psql come from: host tools that fit the server, else Docker (auto).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "NETPOINT_PG_TOOLS",
        default_value = "auto",
        value_name = "FROM"
    )]
    pg_tools: pg_tools::ToolSource,
    /// Parallel jobs for copying tables, building indexes, hashing and compressing
    /// [default: the number of cores].
    #[arg(
        short,
        long,
        global = true,
        env = "NETPOINT_JOBS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    jobs: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicate production (database and media) into a dev environment, or via a bundle.
    CloneProd(clone_prod::CloneProd),
    /// Seed a dev database and media from fixtures/ (in Docker if none is configured), or refresh them.
    SeedDev(seed_dev::SeedDev),
    /// Write a deterministic schema-only dump (fixtures/schema.sql), or check it in CI.
    SchemaSnapshot(schema_snapshot::SchemaSnapshot),
    /// Print the SHA-256 list of a media tree (the format of media.sha256), on all cores.
    #[command(hide = true)]
    HashMedia {
        /// Media directory to hash.
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    // Before anything can echo them: clap's errors, messages about a malformed URL, panics.
    term::hide_passwords_in(
        std::env::args_os()
            .chain(
                std::env::vars_os()
                    .filter(|(key, _)| key.to_string_lossy().starts_with("NETPOINT_"))
                    .map(|(_, value)| value),
            )
            .map(|text| text.to_string_lossy().into_owned()),
    );
    term::conceal_in_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    term::init(cli.color, cli.verbose, cli.quiet);
    pg_tools::set_tool_source(cli.pg_tools);
    parallel::set_jobs(cli.jobs.map(usize::from));
    // On SIGINT, SIGTERM or SIGHUP the tools we started are stopped, we clean up, and
    // exit with 128 + the signal's number.
    if let Err(err) = process::handle_signals() {
        term::warn(format!("cannot handle interrupts: {err}"));
    }
    let result = run(cli.command);
    pg_tools::containers::remove_ours();
    if let Some(code) = process::interrupt_exit_code() {
        term::error(match result {
            Ok(()) => "interrupted after the work was done".to_string(),
            Err(_) => "interrupted: nothing was changed, and nothing is left behind".to_string(),
        });
        return ExitCode::from(code);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            term::error(one_line(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    match command {
        Command::CloneProd(cmd) => cmd.run(&sh),
        Command::SchemaSnapshot(cmd) => cmd.run(&sh),
        Command::SeedDev(cmd) => cmd.run(&sh),
        Command::HashMedia { dir } => media::print_sums(&dir),
    }
}

/// clap's message for arguments it refuses, with any password it echoes masked; help and
/// version go to stdout as usual.
fn usage_error(err: clap::Error) -> ExitCode {
    if !err.use_stderr() {
        err.exit();
    }
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let text = match colour {
        true => err.render().ansi().to_string(),
        false => err.render().to_string(),
    };
    eprint!("{}", term::conceal(&text));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// The error and its causes on one line, outermost first.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}
