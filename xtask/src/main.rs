//! `cargo xtask`: NetPoint's developer tooling for databases and media.

// The commands, one a file, each owning its flags; none imports another. The flag groups
// several of them share, and the flags that fix the engine's refusals, are in `cli`.
mod cli;
mod clone_prod;
mod dev_db;
mod schema_snapshot;
mod seed_dev;
mod subset_plan;

// What they share: the context and mode they run in, and the engine under them.
mod context;
mod mode;
mod pipeline;

// Knowledge and plumbing the engine is built of.
mod atomic_file;
mod bundle;
mod media;
mod pg;
mod plain;
mod process;
mod remedy;
mod ssh;
mod term;

#[cfg(test)]
mod tidy;

use std::{io::IsTerminal, path::Path, process::ExitCode};

use clap::{Parser, Subcommand};
use xshell::Shell;

use context::Context;

/// The heading of the flags every command takes, listed after each command's own.
const GLOBAL: &str = "Global options";

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
        help_heading = GLOBAL,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    color: term::ColorChoice,
    /// Print each external command (credentials masked).
    #[arg(short, long, global = true,
        help_heading = GLOBAL, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only warnings, errors and requested data.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,
    /// Where pg_dump/psql come from: host tools that fit the server, else Docker (auto).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        env = "NETPOINT_PG_TOOLS",
        default_value = "auto",
        value_name = "FROM"
    )]
    pg_tools: cli::PgTools,
    /// Parallel jobs for copying tables, building indexes, hashing and compressing
    /// [default: the number of cores].
    #[arg(
        short,
        long,
        global = true,
        help_heading = GLOBAL,
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
    DevDb(dev_db::DevDb),
    /// Write a deterministic schema-only dump (fixtures/schema.sql), or check it in CI.
    SchemaSnapshot(schema_snapshot::SchemaSnapshot),
    /// Print the SHA-256 list of a media tree (the format of media.sha256), on all cores.
    #[command(hide = true)]
    HashMedia {
        /// Media directory to hash.
        dir: std::path::PathBuf,
    },
    /// Print the rows a subset holds, table by table, as JSON.
    #[command(hide = true)]
    SubsetPlan(subset_plan::SubsetPlan),
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
    remedy::spell_with(cli::spell);
    // On SIGINT, SIGTERM or SIGHUP the tools we started are stopped, we clean up, and
    // exit with 128 + the signal's number.
    if let Err(err) = process::handle_signals() {
        term::warn(format!("cannot handle interrupts: {err}"));
    }
    let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
        sh.change_dir(workspace_root());
        let docker_net = pg::DockerNet::from_env()?;
        let cx = Context::new(
            sh,
            cli.pg_tools.into(),
            docker_net,
            cli.jobs.map(usize::from),
        );
        run(&cx, cli.command)
    });
    // Whatever we started and is still running ends with the run (on macOS, where
    // children do not die with us on their own, this is what ends them).
    process::end_children();
    pg::containers::remove_ours();
    if let Some(code) = process::interrupt_exit_code() {
        term::error(match result {
            Ok(()) => "interrupted after the work was done".to_string(),
            Err(_) if !process::left_behind() => {
                "interrupted: nothing was changed, and nothing is left behind".to_string()
            }
            Err(err) => format!("interrupted: {}", one_line(&err)),
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

fn run(cx: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::CloneProd(cmd) => cmd.run(cx),
        Command::SchemaSnapshot(cmd) => cmd.run(cx),
        Command::SeedDev(cmd) => cmd.run(cx),
        Command::DevDb(cmd) => cmd.run(cx),
        Command::HashMedia { dir } => media::print_sums(&dir),
        Command::SubsetPlan(cmd) => cmd.run(cx),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, GLOBAL};

    /// The long flag of each option line of a help text: `  -v, --verbose` or `      --color`.
    fn flags(help: &str) -> Vec<String> {
        help.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("      --").or_else(|| {
                    let short = line.strip_prefix("  -")?;
                    short.get(1..)?.strip_prefix(", --")
                })?;
                Some(rest.split(' ').next().unwrap_or("").to_owned())
            })
            .collect()
    }

    /// Every command's help, at every level, lists its own options first and the global ones
    /// after them under a heading of their own.
    #[test]
    fn each_help_lists_its_own_options_before_the_global_ones() {
        let mut cli = Cli::command();
        cli.build();
        let globals: Vec<String> = cli
            .get_arguments()
            .filter(|a| a.is_global_set())
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        assert_eq!(globals, ["color", "verbose", "quiet", "pg-tools", "jobs"]);
        let mut pending = vec![cli];
        let mut seen = 0;
        while let Some(mut cmd) = pending.pop() {
            let name = cmd.get_name().to_owned();
            if name == "help" {
                continue;
            }
            let help = cmd.render_long_help().to_string();
            let (own, global) = help
                .split_once(&format!("\n{GLOBAL}:\n"))
                .unwrap_or_else(|| panic!("{name}: no \"{GLOBAL}\" heading in\n{help}"));
            let own = flags(own);
            assert!(own.iter().all(|f| !globals.contains(f)), "{name}: {own:?}");
            assert!(own.iter().any(|f| f == "help"), "{name}: {own:?}");
            assert_eq!(flags(global), globals, "{name}");
            seen += 1;
            pending.extend(cmd.get_subcommands().cloned());
        }
        assert!(seen > 5, "only {seen} commands checked");
    }
}
