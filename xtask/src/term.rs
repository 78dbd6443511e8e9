//! Terminal output: colours, verbosity, progress bars and confirmation prompts, none of
//! which shows a password given to the run.

use std::{
    borrow::Cow,
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

/// Passwords of the URLs given to this run, longest first; see [`hide_passwords_in`].
static PASSWORDS: OnceLock<Vec<String>> = OnceLock::new();

/// Remembers the passwords that `texts` (command-line arguments, environment values) carry
/// in URLs, so that no message shows them: clap echoes arguments it refuses, and a URL too
/// malformed to parse is shown as it was given.
pub fn hide_passwords_in(texts: impl IntoIterator<Item = String>) {
    let mut passwords: Vec<String> = texts
        .into_iter()
        .flat_map(|text| passwords_in(&text))
        .collect();
    passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
    passwords.dedup();
    let _ = PASSWORDS.set(passwords);
}

/// Every text that may be the password of a URL-like `text`: what follows a colon in front
/// of an `@`, raw and percent-decoded. Malformed URLs included (`postgres:user:pw@host`), and
/// passwords with an unencoded `@` or `:`; a wrong guess only masks more.
fn passwords_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    // libpq's `password` parameter: `?password=pw`, `&password=pw`, `password=pw host=h`.
    for (at, key) in text.match_indices(PASSWORD_KEY) {
        let starts = at == 0 || text[..at].ends_with(['?', '&', ' ']);
        let value = &text[at + key.len()..];
        // libpq's keyword form quotes a value that holds blanks: `password='p w'`.
        let value = match value.strip_prefix('\'') {
            Some(quoted) => &quoted[..quoted.find('\'').unwrap_or(quoted.len())],
            None => &value[..value.find(['&', ' ', '\'']).unwrap_or(value.len())],
        };
        if starts && !value.is_empty() {
            found.push(value.to_string());
            if let Ok(decoded) = percent_encoding::percent_decode_str(value).decode_utf8() {
                if decoded != value {
                    found.push(decoded.into_owned());
                }
            }
        }
    }
    for (at, _) in text.match_indices('@') {
        let head = &text[..at];
        let userinfo = head.find("://").map_or(head, |i| &head[i + 3..]);
        for (colon, _) in userinfo.match_indices(':') {
            let raw = &userinfo[colon + 1..];
            if raw.is_empty() {
                continue;
            }
            found.push(raw.to_string());
            if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
                if decoded != raw {
                    found.push(decoded.into_owned());
                }
            }
        }
    }
    found
}

/// `text` with each password given to this run shown as `***` where it stands in a URL
/// (`:password@`), the way [`crate::pg::DbUrl::masked`] shows it.
pub fn conceal(text: &str) -> Cow<'_, str> {
    conceal_among(PASSWORDS.get().map_or(&[], Vec::as_slice), text)
}

/// Panic messages go through [`conceal`] too.
pub fn conceal_in_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        eprintln!("\nthread '{name}' {}", conceal(&info.to_string()));
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{}", conceal(&backtrace.to_string()));
        } else {
            eprintln!(
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
            );
        }
    }));
}

const PASSWORD_KEY: &str = "password=";

fn conceal_among<'a>(passwords: &[String], text: &'a str) -> Cow<'a, str> {
    let mut text = Cow::Borrowed(text);
    for password in passwords {
        for (shown, hidden) in [
            (format!(":{password}@"), ":***@".to_string()),
            (
                format!("{PASSWORD_KEY}'{password}'"),
                format!("{PASSWORD_KEY}'***'"),
            ),
            (
                format!("{PASSWORD_KEY}{password}"),
                format!("{PASSWORD_KEY}***"),
            ),
        ] {
            if text.contains(&shown) {
                text = Cow::Owned(text.replace(&shown, &hidden));
            }
        }
    }
    text
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
            conceal(msg.as_ref())
        );
    }
}

/// Details shown with `--verbose` only, such as each external command.
pub fn detail(msg: impl AsRef<str>) {
    if settings().verbose {
        eprintln!(
            "{} {}",
            "$".if_supports_color(Stream::Stderr, |s| s.dimmed()),
            conceal(msg.as_ref())
        );
    }
}

pub fn warn(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        "warning:".if_supports_color(Stream::Stderr, |s| s.yellow()),
        conceal(msg.as_ref())
    );
}

pub fn success(msg: impl AsRef<str>) {
    if !settings().quiet {
        eprintln!(
            "{} {}",
            "ok:".if_supports_color(Stream::Stderr, |s| s.green()),
            conceal(msg.as_ref())
        );
    }
}

pub fn error(msg: impl AsRef<str>) {
    eprintln!(
        "{} {}",
        "error:".if_supports_color(Stream::Stderr, |s| s.red()),
        conceal(msg.as_ref())
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

/// A path as the user would type it: relative to the workspace when inside it.
pub fn display_path(sh: &xshell::Shell, path: &std::path::Path) -> String {
    let root = sh.current_dir();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concealed(args: &[&str], text: &str) -> String {
        let mut passwords: Vec<String> = args.iter().flat_map(|a| passwords_in(a)).collect();
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        conceal_among(&passwords, text).into_owned()
    }

    #[test]
    fn passwords_given_in_urls_are_never_shown() {
        for (arg, shown, expected) in [
            (
                "postgres://u:hunter2@db/netpoint",
                "error: unexpected argument 'postgres://u:hunter2@db/netpoint' found",
                "error: unexpected argument 'postgres://u:***@db/netpoint' found",
            ),
            (
                "--source=postgresql://u:hunter2@db:5433/netpoint",
                "invalid value '--source=postgresql://u:hunter2@db:5433/netpoint'",
                "invalid value '--source=postgresql://u:***@db:5433/netpoint'",
            ),
            (
                "postgres:u:hunter2@db/netpoint",
                "database name `u:hunter2@db/netpoint` contains `/`",
                "database name `u:***@db/netpoint` contains `/`",
            ),
            (
                "postgres://u:p@ss:w%2Frd@db/netpoint",
                "'postgres://u:p@ss:w%2Frd@db/netpoint' and u:p@ss:w/rd@db",
                "'postgres://u:***@db/netpoint' and u:***@db",
            ),
            (
                "postgres://u@db/netpoint?sslmode=disable&password=Q%2Fpw",
                "unexpected argument 'postgres://u@db/netpoint?sslmode=disable&password=Q%2Fpw' (password=Q/pw)",
                "unexpected argument 'postgres://u@db/netpoint?sslmode=disable&password=***' (password=***)",
            ),
            (
                "host=db password='hunter 2' dbname=netpoint",
                "unexpected argument 'host=db password='hunter 2' dbname=netpoint' found",
                "unexpected argument 'host=db password='***' dbname=netpoint' found",
            ),
            (
                "host=db password=hunter2 dbname=netpoint",
                "unexpected argument 'host=db password=hunter2 dbname=netpoint' found",
                "unexpected argument 'host=db password=*** dbname=netpoint' found",
            ),
        ] {
            let out = concealed(&[arg], shown);
            assert_eq!(out, expected, "{arg}");
        }
        // Only where it stands in a URL: a password that is a common word leaves prose alone.
        assert_eq!(
            concealed(
                &["postgres://postgres:wrong@db/netpoint"],
                "wrong password for user `postgres` (postgres://postgres:wrong@db/netpoint)"
            ),
            "wrong password for user `postgres` (postgres://postgres:***@db/netpoint)"
        );
        assert_eq!(concealed(&["/srv/media", "user@host"], "a:b@c"), "a:b@c");
    }
}
