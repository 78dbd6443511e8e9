//! OpenSSH's `allowed_signers` file, the one git's SSH signing reads: who may sign a bundle,
//! for which namespaces and when. No crate reads it, so it is parsed here with the grammar of
//! `ssh-keygen -Y verify` (sshsig.c), but strictly: a line that ssh-keygen would log and skip
//! refuses the whole file, naming its line.
//!
//! A line is `PRINCIPALS [OPTIONS] KEYTYPE BASE64 [COMMENT]`; options are comma-separated,
//! names case-insensitive: `namespaces="PATTERNS"`, `valid-after="TIME"`,
//! `valid-before="TIME"` (`YYYYMMDD[HHMM[SS]]`, local time, or UTC with a `Z` or `UTC`
//! suffix) and `cert-authority`, which is refused since bundles are never signed with
//! certificates.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use crate::remedy::Remedy;
use anyhow::Context as _;
use ssh_key::{public::KeyData, PublicKey};

/// An allowed signers file, read whole.
#[derive(Debug)]
pub struct AllowedSigners {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// One line that names a key.
#[derive(Debug)]
pub struct Entry {
    pub line: usize,
    /// The principals field as written (a pattern list, like `ssh-keygen -Y find-principals`
    /// prints it).
    pub principals: String,
    /// `namespaces=`: the pattern list of namespaces the key may sign in (any when absent).
    pub namespaces: Option<String>,
    /// `valid-after=` and `valid-before=`, in seconds since the epoch, both ends included.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
    pub key: KeyData,
}

/// Why a line that lists the key does not allow this signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Namespace,
    NotYetValid(i64),
    Expired(i64),
}

/// Key types `ssh-keygen` reads in this file; any other first word starts the options.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl AllowedSigners {
    pub fn read(path: &Path) -> anyhow::Result<AllowedSigners> {
        let text = fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the allowed signers file {}: {}",
                path.display(),
                Remedy::NameSigners
            )
        })?;
        AllowedSigners::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<AllowedSigners> {
        let mut entries = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let line_no = index + 1;
            if let Some(entry) = parse_line(line, line_no).map_err(|problem| {
                anyhow::anyhow!(
                    "{}:{line_no}: {problem}: fix the line (format: PRINCIPALS [namespaces=\"...\",valid-after=\"...\",valid-before=\"...\"] KEYTYPE BASE64 [COMMENT])",
                    path.display()
                )
            })? {
                entries.push(entry);
            }
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The lines that allow `key` to sign in `namespace` at `now` (seconds since the epoch),
    /// as `ssh-keygen -Y verify` decides for each line.
    pub fn allowing(&self, key: &KeyData, namespace: &str, now: i64) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|entry| entry.key == *key)
            .filter(|entry| entry.denies(namespace, now).is_none())
            .collect()
    }

    /// The lines that name `key`, whatever their options.
    pub fn listing<'a>(&'a self, key: &'a KeyData) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |entry| entry.key == *key)
    }
}

impl Entry {
    pub fn denies(&self, namespace: &str, now: i64) -> Option<Denied> {
        if let Some(patterns) = &self.namespaces {
            if match_pattern_list(namespace, patterns) != Match::Allowed {
                return Some(Denied::Namespace);
            }
        }
        match (self.valid_after, self.valid_before) {
            (Some(after), _) if now < after => Some(Denied::NotYetValid(after)),
            (_, Some(before)) if now > before => Some(Denied::Expired(before)),
            _ => None,
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Namespace => write!(f, "its namespaces= does not allow this namespace"),
            Denied::NotYetValid(at) => write!(f, "it is valid only from {}", utc(*at)),
            Denied::Expired(at) => write!(f, "it expired at {}", utc(*at)),
        }
    }
}

fn utc(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// One line: `None` for a blank line or a comment.
fn parse_line(line: &str, line_no: usize) -> Result<Option<Entry>, String> {
    let rest = line.trim_start_matches(is_space);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = principals(rest)?;
    if rest.is_empty() {
        return Err("a principal with no key after it".into());
    }
    let (first, _) = word(rest);
    let (options, rest) = if is_key_type(first) {
        (Options::default(), rest)
    } else if first.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "{first} is a certificate: list the signer's own key"
        ));
    } else {
        let (token, rest) = options_token(rest)?;
        (Options::parse(token)?, rest.trim_start_matches(is_space))
    };
    let key = key(rest)?;
    Ok(Some(Entry {
        line: line_no,
        principals,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    }))
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r')
}

/// The text up to the first space, and the rest.
fn word(text: &str) -> (&str, &str) {
    text.split_at(text.find(is_space).unwrap_or(text.len()))
}

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word)
}

/// The principals field: one word, or a whole field in double quotes (which may hold spaces).
fn principals(text: &str) -> Result<(String, &str), String> {
    let (field, rest) = match text.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted
                .find('"')
                .ok_or("the principals' opening quote is never closed")?;
            let rest = &quoted[end + 1..];
            if !rest.is_empty() && !rest.starts_with(is_space) {
                return Err("text right after the principals' closing quote".into());
            }
            (&quoted[..end], rest)
        }
        None => {
            let end = text.find(is_space).unwrap_or(text.len());
            let field = &text[..end];
            if field.contains('"') {
                return Err("a quote inside the principals: quote the whole field".into());
            }
            (field, &text[end..])
        }
    };
    if field.is_empty() {
        return Err("empty principals".into());
    }
    Ok((field.to_string(), rest.trim_start_matches(is_space)))
}

/// The options: everything up to the first space outside double quotes.
fn options_token(text: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if chars.peek().map(|(_, next)| *next) == Some('"') => {
                chars.next();
            }
            '"' => quoted = !quoted,
            c if is_space(c) && !quoted => return Ok((&text[..at], &text[at..])),
            _ => {}
        }
    }
    if quoted {
        return Err("an option's quote is never closed".into());
    }
    Err("options with no key after them".into())
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

impl Options {
    fn parse(mut text: &str) -> Result<Options, String> {
        let mut options = Options::default();
        loop {
            let name = text.split(['=', ',']).next().unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("cert-authority") {
                return Err("cert-authority is not supported: bundles are signed with plain keys, list the signer's own key".into());
            }
            let value_at = name.len() + 1;
            if !text[name.len()..].starts_with('=') {
                return Err(format!(
                    "unknown option {name:?} (known: namespaces, valid-after, valid-before)"
                ));
            }
            let (value, rest) = dequote(&text[value_at..], &lower)?;
            match lower.as_str() {
                "namespaces" => set(&mut options.namespaces, value, &lower)?,
                "valid-after" | "valid-before" => {
                    let time = parse_time(&value)
                        .ok_or_else(|| format!("{lower}=\"{value}\" is not a time: write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with Z for UTC"))?;
                    let slot = match lower.as_str() {
                        "valid-after" => &mut options.valid_after,
                        _ => &mut options.valid_before,
                    };
                    set(slot, time, &lower)?;
                }
                _ => {
                    return Err(format!(
                        "unknown option {name:?} (known: namespaces, valid-after, valid-before)"
                    ))
                }
            }
            match rest.strip_prefix(',') {
                None if rest.is_empty() => break,
                None => return Err(format!("{lower}= must be followed by a comma or a space")),
                Some("") => return Err("the options end with a comma".into()),
                Some(next) => text = next,
            }
        }
        if let (Some(after), Some(before)) = (options.valid_after, options.valid_before) {
            if before <= after {
                return Err("valid-before is not after valid-after".into());
            }
        }
        Ok(options)
    }
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name}= given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// A double-quoted value (`\"` stands for a quote) and what follows it.
fn dequote<'t>(text: &'t str, name: &str) -> Result<(String, &'t str), String> {
    let Some(body) = text.strip_prefix('"') else {
        return Err(format!("{name}= needs its value in double quotes"));
    };
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[at + 1..])),
            '\\' if body[at + 1..].starts_with('"') => {
                chars.next();
                value.push('"');
            }
            c => value.push(c),
        }
    }
    Err(format!("{name}=\"{value} has no closing quote"))
}

/// `KEYTYPE BASE64 [COMMENT]`.
fn key(text: &str) -> Result<KeyData, String> {
    let (kind, rest) = word(text);
    if kind.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "{kind} is a certificate: list the signer's own key"
        ));
    }
    if !is_key_type(kind) {
        return Err(format!("{kind:?} is not a key type (such as ssh-ed25519)"));
    }
    let (base64, _comment) = word(rest.trim_start_matches(is_space));
    if base64.is_empty() {
        return Err(format!("the {kind} key has no base64 data"));
    }
    PublicKey::from_openssh(&format!("{kind} {base64}"))
        .map(|key| key.key_data().clone())
        .map_err(|err| format!("the {kind} key does not parse ({err})"))
}

/// OpenSSH's `parse_absolute_time`: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in local
/// time unless it ends in `Z` or `UTC` (any case); a time at or before the epoch is refused,
/// as ssh-keygen refuses it.
fn parse_time(text: &str) -> Option<i64> {
    let upper = text.to_ascii_uppercase();
    let (digits, is_utc) = match (upper.strip_suffix("UTC"), upper.strip_suffix('Z')) {
        (Some(digits), _) if text.len() > 3 => (digits, true),
        (_, Some(digits)) if text.len() > 1 => (digits, true),
        _ => (upper.as_str(), false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| -> Option<i32> { digits.get(at..at + 2)?.parse().ok() };
    let year: i32 = digits[..4].parse().ok()?;
    let (month, day) = (field(4)?, field(6)?);
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (field(8)?, field(10)?, 0),
        _ => (field(8)?, field(10)?, field(12)?),
    };
    // The ranges strptime accepts; a day past the month's end rolls over, as in mktime.
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 61
    {
        return None;
    }
    // SAFETY: `tm` is a plain C struct, zeroed and then filled; timegm and mktime only
    // read and normalise it.
    let seconds = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = year - 1900;
        tm.tm_mon = month - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = minute;
        tm.tm_sec = second;
        match is_utc {
            true => libc::timegm(&mut tm),
            false => {
                tm.tm_isdst = -1;
                libc::mktime(&mut tm)
            }
        }
    };
    (seconds > 0).then_some(seconds)
}

#[derive(Debug, PartialEq, Eq)]
enum Match {
    Allowed,
    Negated,
    None,
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns with `*` and `?`, `!` negating
/// one; a negated match wins over every other.
fn match_pattern_list(text: &str, list: &str) -> Match {
    let mut positive = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, pattern),
        };
        // ssh-keygen copies each pattern into a buffer of 1024 bytes and gives up past it.
        if pattern.len() >= 1023 {
            return Match::None;
        }
        if match_pattern(text.as_bytes(), pattern.as_bytes()) {
            if negated {
                return Match::Negated;
            }
            positive = true;
        }
    }
    match positive {
        true => Match::Allowed,
        false => Match::None,
    }
}

fn match_pattern(text: &[u8], pattern: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| match_pattern(&text[skip..], rest)),
        Some((&p, rest)) => match text.split_first() {
            Some((&t, text)) if p == b'?' || p == t => match_pattern(text, rest),
            _ => false,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests;
