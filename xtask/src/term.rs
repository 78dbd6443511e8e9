//! Terminal output: colours, verbosity, progress bars and confirmation prompts.

use std::{
    io::{IsTerminal, Write},
    sync::OnceLock,
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use owo_colors::{OwoColorize, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy)]
struct Settings {
    verbose: bool,
    quiet: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn init(color: ColorChoice, verbose: bool, quiet: bool) {
    match color {
        ColorChoice::Auto => {}
        ColorChoice::Always => owo_colors::set_override(true),
        ColorChoice::Never => owo_colors::set_override(false),
    }
    let _ = SETTINGS.set(Settings { verbose, quiet });
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or(Settings {
        verbose: false,
        quiet: false,
    })
}

pub fn verbose() -> bool {
    settings().verbose
}

/// A step the user should see, on stderr (stdout is kept for data).
pub fn step(msg: impl AsRef<str>) {
    if !settings().quiet {
        eprintln!(
            "{} {}",
            "==>".if_supports_color(Stream::Stderr, |s| s.cyan()),
            msg.as_ref()
        );
    }
}

/// Details shown with `--verbose` only, such as each external command.
pub fn detail(msg: impl AsRef<str>) {
    if settings().verbose {
        eprintln!(
            "{} {}",
            "$".if_supports_color(Stream::Stderr, |s| s.dimmed()),
            msg.as_ref()
        );
    }
}

pub fn warn(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        "warning:".if_supports_color(Stream::Stderr, |s| s.yellow()),
        msg.as_ref()
    );
}

pub fn success(msg: impl AsRef<str>) {
    if !settings().quiet {
        eprintln!(
            "{} {}",
            "ok:".if_supports_color(Stream::Stderr, |s| s.green()),
            msg.as_ref()
        );
    }
}

pub fn error(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        "error:".if_supports_color(Stream::Stderr, |s| s.red()),
        msg.as_ref()
    );
}

/// Green `+` and red `-` lines of a unified diff, when colour is on.
pub fn print_diff(diff: &str) {
    for line in diff.lines() {
        if line.starts_with('+') && !line.starts_with("+++") {
            println!("{}", line.if_supports_color(Stream::Stdout, |s| s.green()));
        } else if line.starts_with('-') && !line.starts_with("---") {
            println!("{}", line.if_supports_color(Stream::Stdout, |s| s.red()));
        } else if line.starts_with("@@") {
            println!("{}", line.if_supports_color(Stream::Stdout, |s| s.cyan()));
        } else {
            println!("{line}");
        }
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks a yes/no question on the terminal; anything but `y`/`yes` is a no.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A byte counter for a long step; drawn on stderr only when it is a terminal.
pub fn bytes_progress(label: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {elapsed}")
                .unwrap(),
        ),
    };
    hide_unless_terminal(bar, label)
}

/// A file counter for a long step; drawn on stderr only when it is a terminal.
pub fn files_progress(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} files {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    hide_unless_terminal(bar, label)
}

fn hide_unless_terminal(bar: ProgressBar, label: &str) -> ProgressBar {
    if settings().quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    bar.set_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

pub fn human_duration(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
