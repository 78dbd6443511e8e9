//! Every `cargo xtask ...` in `.github/workflows/*.yml` is an invocation the CLI accepts.
//!
//! Two checks per invocation, both needing no database:
//! - the arguments with `--help` appended exit 0. clap rejects an unknown subcommand or flag,
//!   or a flag missing its value, that comes before `--help`; but `--help` stops it before
//!   it validates values and `requires`/`conflicts_with` rules (`--summary x --help` passes).
//! - so the arguments are also run for real, with every placeholder and
//!   `NETPOINT_DATABASE_URL` set to a value that is not a URL, no tools on PATH and an empty
//!   working directory: clap's usage errors exit 2, while an invocation that parses gets
//!   past clap and stops at the URL with exit 1, before touching anything.

use std::{fs, process::Command};

use crate::harness::{run, workspace_root, xtask, Run};

/// What every `$VAR`, `${VAR}` and `${{ ... }}` becomes: not a URL, so nothing connects.
const PLACEHOLDER: &str = "placeholder-not-a-url";

/// The shell commands of a workflow's `run:` steps, one string per command line
/// (block scalars split into lines, `\` continuations joined).
fn run_commands(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let key = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        i += 1;
        let Some(value) = key.strip_prefix("run:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let mut block = Vec::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                block.push(lines[i].trim());
                i += 1;
            }
            let text = block.join("\n").replace("\\\n", " ");
            commands.extend(text.lines().map(str::to_string));
        } else {
            commands.push(unquote_yaml(value));
        }
    }
    commands
}

fn unquote_yaml(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value[1..value.len() - 1].replace("''", "'")
    } else if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        value[1..value.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        value.to_string()
    }
}

/// Splits a shell command into words and operators, expanding variables to [`PLACEHOLDER`].
fn shell_words(command: &str) -> Vec<String> {
    // GitHub substitutes `${{ ... }}` before the shell sees the line.
    let mut text = command.to_string();
    while let Some(start) = text.find("${{") {
        let end = text[start..]
            .find("}}")
            .map(|e| start + e + 2)
            .unwrap_or(text.len());
        text.replace_range(start..end, PLACEHOLDER);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if single {
            if c == '\'' {
                single = false
            } else {
                word.push(c)
            }
        } else if c == '\'' && !double {
            single = true;
            in_word = true;
        } else if c == '"' {
            double = !double;
            in_word = true;
        } else if c == '\\' && i + 1 < chars.len() {
            word.push(chars[i + 1]);
            in_word = true;
            i += 1;
        } else if c == '$'
            && i + 1 < chars.len()
            && (chars[i + 1] == '{' || chars[i + 1] == '_' || chars[i + 1].is_ascii_alphabetic())
        {
            if chars[i + 1] == '{' {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
            } else {
                while i + 1 < chars.len()
                    && (chars[i + 1] == '_' || chars[i + 1].is_ascii_alphanumeric())
                {
                    i += 1;
                }
            }
            word.push_str(PLACEHOLDER);
            in_word = true;
        } else if double {
            word.push(c);
        } else if c.is_whitespace() {
            end_word(&mut word, &mut in_word, &mut words);
        } else if c == '#' && !in_word {
            break;
        } else if matches!(c, ';' | '&' | '|' | '>' | '<' | '(' | ')') {
            end_word(&mut word, &mut in_word, &mut words);
            words.push(c.to_string());
        } else {
            word.push(c);
            in_word = true;
        }
        i += 1;
    }
    end_word(&mut word, &mut in_word, &mut words);
    words
}

/// The arguments of every `cargo xtask` in a command line.
fn xtask_invocations(command: &str) -> Vec<Vec<String>> {
    let words = shell_words(command);
    let is_operator = |w: &str| matches!(w, ";" | "&" | "|" | ">" | "<" | "(" | ")");
    let mut found = Vec::new();
    for (i, pair) in words.windows(2).enumerate() {
        if pair[0] == "cargo" && pair[1] == "xtask" {
            found.push(
                words[i + 2..]
                    .iter()
                    .take_while(|w| !is_operator(w))
                    .cloned()
                    .collect(),
            );
        }
    }
    found
}

/// Whether `args` parse, by both checks; `Err` says which check refused them and why.
fn check_parses(args: &[String]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_help: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
    let help = run(xtask(&with_help));
    if !help.status.success() {
        return Err(format!(
            "`{}` fails: {}",
            with_help.join(" "),
            help.stderr.trim()
        ));
    }
    let real = run_harmlessly(&args);
    // clap's usage errors exit 2; a run that got past parsing fails with 1 at the bad URL.
    if real.status.code() != Some(1) || real.stderr.contains("Usage:") {
        return Err(format!(
            "`{}` did not get past argument parsing (exit {:?}): {}",
            args.join(" "),
            real.status.code(),
            real.stderr.trim()
        ));
    }
    if !real.stderr.contains("malformed database URL") {
        return Err(format!(
            "`{}` did not stop at the placeholder URL, so running it is not known to be harmless: {}",
            args.join(" "),
            real.stderr.trim()
        ));
    }
    Ok(())
}

fn run_harmlessly(args: &[&str]) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let mut cmd: Command = xtask(args);
    cmd.current_dir(cwd.path())
        .env("PATH", empty_path.path())
        .env("NETPOINT_DATABASE_URL", PLACEHOLDER)
        .env("NETPOINT_MEDIA_ROOT", cwd.path().join("media"));
    let out = run(cmd);
    assert!(
        fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "`{}` wrote into its working directory",
        args.join(" ")
    );
    out
}

#[test]
fn every_workflow_invocation_parses() {
    let dir = workspace_root().join(".github/workflows");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no workflows in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(workspace_root())
            .unwrap_or(file)
            .display()
            .to_string();
        let invocations: Vec<Vec<String>> = run_commands(&fs::read_to_string(file).unwrap())
            .iter()
            .flat_map(|command| xtask_invocations(command))
            .collect();
        assert!(
            !invocations.is_empty(),
            "{name}: no `cargo xtask` in any run: step"
        );
        for args in invocations {
            assert!(!args.is_empty(), "{name}: `cargo xtask` without a command");
            if let Err(why) = check_parses(&args) {
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "invocations the CLI rejects:\n{}",
        failures.join("\n")
    );
}

/// Database URLs carry passwords: the workflows hand them over in NETPOINT_* variables, never
/// as arguments, which process listings and logs show.
#[test]
fn workflow_urls_come_from_the_environment() {
    let dir = workspace_root().join(".github/workflows");
    let mut on_command_line = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        let yaml = fs::read_to_string(&file).unwrap();
        for command in run_commands(&yaml) {
            for args in xtask_invocations(&command) {
                let url_flag = args.iter().any(|arg| {
                    ["--source", "--target"]
                        .iter()
                        .any(|flag| arg == flag || arg.starts_with(&format!("{flag}=")))
                });
                if url_flag {
                    on_command_line.push(format!("{}: {command}", file.display()));
                }
            }
        }
    }
    assert!(
        on_command_line.is_empty(),
        "pass database URLs through NETPOINT_DATABASE_URL / NETPOINT_PROD_DATABASE_URL:\n{}",
        on_command_line.join("\n")
    );
}

#[test]
fn the_check_finds_invocations_and_rejects_broken_ones() {
    // The extraction: steps, block scalars, continuations, quotes and placeholders.
    let yaml = r#"
jobs:
  a:
    steps:
      - run: cargo xtask schema-snapshot --check --summary "$OUT"
      - name: block
        run: |
          echo start
          cargo xtask seed-dev --refresh \
            --source "${{ secrets.URL }}" && echo done # cargo xtask in a comment
      - uses: x/y@v1
        with:
          body: not a run step, cargo xtask clone-prod --bogus
"#;
    let found: Vec<Vec<String>> = run_commands(yaml)
        .iter()
        .flat_map(|c| xtask_invocations(c))
        .collect();
    let expected: Vec<Vec<String>> = vec![
        vec![
            "schema-snapshot".into(),
            "--check".into(),
            "--summary".into(),
            PLACEHOLDER.into(),
        ],
        vec![
            "seed-dev".into(),
            "--refresh".into(),
            "--source".into(),
            PLACEHOLDER.into(),
        ],
    ];
    assert_eq!(found, expected);
    for args in &found {
        check_parses(args).unwrap();
    }

    // Each kind of mistake is refused, by the first check or, when `--help` hides it, the second.
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    for (broken, refused_by_help) in [
        ("schema-snapshot --check --made-up-flag", true),
        ("schema-snaphot --check", true),
        ("schema-snapshot --check --summary", true),
        ("schema-snapshot --summary out.md", false),
        ("seed-dev --check", false),
        ("seed-dev --refresh --target x", false),
        ("--color sometimes schema-snapshot --check", false),
    ] {
        let err = check_parses(&words(broken)).expect_err(broken);
        assert_eq!(
            err.contains("--help` fails"),
            refused_by_help,
            "{broken}: {err}"
        );
    }
}
