//! The leak scan's hot loop: table rows read as they stream past, in pg_dump's plain SQL or a
//! `COPY ... TO STDOUT` (text or binary), searched for credential-shaped values by column. It
//! is a crate of its own so that `cargo xtask`'s dev profile builds it optimised, as it does
//! the other dependencies: every byte of a clone passes through it.

mod copy_header;

pub use copy_header::{is_copy_start, CopyHeader};

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    io::Read,
    sync::{LazyLock, Mutex},
};

/// Words one of which every shape holds, in lower case: a cheap test on the lower-cased
/// stream that lets only the few rows holding one through to the regular expressions.
pub const WORDS: &[&str] = &[
    "://",
    "authoriz",
    "bearer",
    "passw",
    "passphrase",
    "pwd",
    "communit",
    "sig=",
    "eyj",
    "sk-proj-",
    "sk-ant-",
    "secret",
    "token",
    "key",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xox",
    "akia",
    "k_live_",
    "aiza",
    "npm_",
    // e-mail addresses: a byte of its own, found with memchr beside the automaton (which a
    // one-byte word would slow down by half)
    "@",
];

/// The one-byte word, which has no case.
const AT: u8 = b'@';

/// What a value may hold: a credential, or personal data (an e-mail address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    Credential,
    Email,
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Credential, Shape::Email];
}

/// The shapes one value holds, by [`Shape`] in [`Shape::ALL`]'s order.
pub type Found = [bool; 2];

/// Domains that name no one (RFC 2606 and 6761): `example.com`, `.net`, `.org` and the
/// `.example`, `.invalid`, `.test` and `.localhost` names, under which scrubbed fakes and
/// documentation live.
pub const RESERVED_DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];
pub const RESERVED_TLDS: &[&str] = &["example", "invalid", "test", "localhost"];

/// Credential shapes, on bytes in any ASCII-based encoding. The `password=` pair is apart:
/// a JSON `null` is no secret, which the caller's capture says.
struct Shapes {
    words: aho_corasick::AhoCorasick,
    plain: regex::bytes::Regex,
    pair: regex::bytes::Regex,
    email: regex::bytes::Regex,
}

/// An e-mail address: not right after a character of its own kind, `/` or `:` (so not the
/// user of a URL, `https://git@host/` or `https://u:pw@host`, nor of an scp-style
/// `git@github.com:org/repo`, whose end is refused below) unless after `mailto:`; a domain of
/// two labels or more ending in letters (so not `user@10.0.0.1`, `image@sha256:...` or
/// `pkg@1.2.3`), which ends the value or is followed by anything but a domain's own
/// characters, or by `.` or `:` that start no further name or path.
pub const EMAIL: &str = concat!(
    r"(?:^|[^a-z0-9._%+/:-]|mailto:)[a-z0-9._%+-]+@",
    r"((?:[a-z0-9-]+\.)+[a-z]{2,})",
    r"(?:$|[^a-z0-9.:-]|[.:](?:$|[^a-z0-9/]))",
);

/// Credential shapes, in the regex crate's syntax and matched case-insensitively on bytes;
/// [`PAIR`] is apart. The leak scan run inside PostgreSQL writes the same shapes as its regular
/// expressions, and its tests hold the two lists to each other.
pub const CREDENTIALS: &[&str] = &[
    // URL user information with a password: scheme://user:pass@host
    r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@",
    r#"\bauthorization["']?\s*[:=]\s*["']?([a-z]+\s+)?[a-z0-9._~+/=-]{8,}"#,
    r"\bbearer\s+[a-z0-9._~+/=-]{8,}",
    r"-----begin [a-z ]*private key-----",
    // GitHub, GitLab, Slack, AWS, Stripe, Google, npm
    concat!(
        r"\b(gh[pousr]_[a-z0-9]{30,}|github_pat_[a-z0-9_]{20,}|glpat-[a-z0-9_-]{20,}",
        r"|xox[baprs]-[a-z0-9-]{10,}|akia[0-9a-z]{16}\b|[sr]k_live_[a-z0-9]{16,}",
        r"|aiza[0-9a-z_-]{35}|npm_[a-z0-9]{36}|sk-(proj|ant)-[a-z0-9_-]{20,})",
    ),
    // network device configuration: enable secret 5 ..., snmp-server community ...
    concat!(
        r"\b(enable\s+(secret|password)|username\s+\S+(\s+privilege\s+\d+)?\s+(secret|password)",
        r"|snmp-server\s+community|(tacacs|radius)-server\s+key|key-string)(\s+\d)?\s+\S{3,}",
    ),
    // incoming-webhook URLs (the path is the credential), shared access signatures, JWTs
    r"hooks\.slack\.com/(services|workflows|triggers)/[a-z0-9/_-]{20,}",
    r"discord(app)?\.com/api/webhooks/[0-9]+/[a-z0-9_-]{20,}",
    r"\.webhook\.office\.com/webhookb2/\S{20,}",
    r"[?&]sig=[a-z0-9%+/=_-]{16,}",
    r"\beyj[a-z0-9_-]{8,}\.eyj[a-z0-9_-]{8,}\.[a-z0-9_-]{8,}",
];

/// `password=...`, `secret: ...`, `"api_key": "..."`: a credential unless the value (the
/// capture) is a JSON `null`, which [`shapes`] decides.
pub const PAIR: &str = r#"(passw(or)?d|passphrase|pwd|secret(?:[_-]?key)?|token|api[_-]?key|access[_-]?key|communit(?:y|ies))["']?\s*[:=]\s*\[?\s*["']?([^\s"',;&}\]]{3,})"#;

static SHAPES: LazyLock<Shapes> = LazyLock::new(|| {
    Shapes {
        // Leftmost-first lets the automaton use its vectorised prefilter (several GiB/s).
        words: aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(WORDS.iter().filter(|word| word.len() > 1))
            .expect("leak scan words"),
        plain: regex::bytes::Regex::new(&format!(
            "(?i-u){}",
            CREDENTIALS
                .iter()
                .map(|shape| format!("(?:{shape})"))
                .collect::<Vec<_>>()
                .join("|")
        ))
        .expect("leak scan shapes"),
        pair: regex::bytes::Regex::new(&format!("(?i-u){PAIR}")).expect("leak scan pair shape"),
        email: regex::bytes::Regex::new(&format!("(?i-u){EMAIL}")).expect("leak scan e-mail shape"),
    }
});

/// Whether an e-mail domain is one that names no one.
fn reserved_domain(domain: &[u8]) -> bool {
    let domain = domain.to_ascii_lowercase();
    let under = |name: &str| {
        domain == name.as_bytes()
            || (domain.ends_with(name.as_bytes())
                && domain[..domain.len() - name.len()].ends_with(b"."))
    };
    let tld = domain.rsplit(|&b| b == b'.').next().unwrap_or_default();
    RESERVED_DOMAINS.iter().any(|name| under(name))
        || RESERVED_TLDS.iter().any(|name| tld == name.as_bytes())
}

/// Whether `value` holds an e-mail address at a domain that names someone. Every place an
/// address may start is tried, as PostgreSQL's `~*` does, so that a reserved one does not
/// hide a real one after it.
fn has_email(value: &[u8]) -> bool {
    let email = &SHAPES.email;
    let mut at = 0;
    while let Some(caps) = email.captures_at(value, at) {
        if !reserved_domain(&caps[1]) {
            return true;
        }
        at = caps.get(0).map_or(value.len(), |m| m.start() + 1);
    }
    false
}

/// Whether `value` holds a credential shape.
pub fn matches(value: &[u8]) -> bool {
    shapes(value)[0]
}

/// The shapes `value` holds.
pub fn shapes(value: &[u8]) -> Found {
    if !SHAPES.words.is_match(&lower(value)) && memchr::memchr(AT, value).is_none() {
        return [false; 2];
    }
    [credential(value), value.contains(&b'@') && has_email(value)]
}

fn credential(value: &[u8]) -> bool {
    let shapes = &*SHAPES;
    if shapes.plain.is_match(value) {
        return true;
    }
    shapes.pair.captures_iter(value).any(|caps| {
        let value = &caps[3];
        let null = value.len() >= 4
            && value[..4].eq_ignore_ascii_case(b"null")
            && value
                .get(4)
                .is_none_or(|&b| !(b.is_ascii_alphanumeric() || b == b'_'));
        !null
    })
}

fn lower(bytes: &[u8]) -> Cow<'_, [u8]> {
    match bytes.iter().any(u8::is_ascii_uppercase) {
        true => bytes.to_ascii_lowercase().into(),
        false => bytes.into(),
    }
}

/// Where the words occur in `bytes`, in order: found on a lower-cased copy kept in
/// `scratch`, and `@` by memchr.
fn word_hits(bytes: &[u8], scratch: &mut Vec<u8>) -> Vec<usize> {
    scratch.clear();
    scratch.extend_from_slice(bytes);
    scratch.make_ascii_lowercase();
    let mut hits: Vec<usize> = SHAPES
        .words
        .find_iter(scratch.as_slice())
        .map(|hit| hit.start())
        .collect();
    let before = hits.len();
    hits.extend(memchr::memchr_iter(AT, bytes));
    if hits.len() > before && before > 0 {
        hits.sort_unstable();
    }
    hits
}

/// How a column's values look in a binary `COPY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A version byte, then the text.
    Jsonb,
    /// PostgreSQL's binary array: a header, then each element with its length.
    Array {
        jsonb: bool,
    },
}

/// The columns to scan of one table, `schema.table`.
#[derive(Debug)]
struct Scanned {
    name: String,
    columns: Vec<(String, Kind)>,
}

/// One run's scan. Each stream gets its own [`Scanner::reader`] or [`Scanner::copy`], which
/// add the rows they found here as each table ends.
pub struct Scanner {
    tables: HashMap<String, Scanned>,
    found: Mutex<BTreeMap<(String, Shape), u64>>,
}

impl Scanner {
    /// `tables`: `schema.table` and the columns to scan, with their kinds.
    pub fn new(tables: impl IntoIterator<Item = (String, Vec<(String, Kind)>)>) -> Scanner {
        let tables = tables
            .into_iter()
            .map(|(name, columns)| (name.clone(), Scanned { name, columns }))
            .collect();
        Scanner {
            tables,
            found: Mutex::default(),
        }
    }

    /// Passes a dump (plain SQL as pg_dump writes it) through unchanged, scanning the rows
    /// of every `COPY` block of a table with columns to scan.
    pub fn reader<R: Read>(&self, inner: R) -> ScanningReader<'_, R> {
        ScanningReader {
            inner,
            rows: RowScan::new(self, None),
        }
    }

    /// A scan of one table's `COPY ... TO STDOUT` output, `columns` in the order copied:
    /// `None` when the table has nothing to scan.
    pub fn copy(&self, table: &str, columns: &[String], binary: bool) -> Option<CopyScan<'_>> {
        let scanned = self.tables.get(table)?;
        let targets = targets(scanned, columns);
        if targets.is_empty() {
            return None;
        }
        let block = Block {
            counts: vec![[0; 2]; scanned.columns.len()],
            table: scanned,
            targets,
        };
        Some(match binary {
            true => CopyScan::Binary(BinaryScan {
                scanner: self,
                block,
                buf: Vec::new(),
                header: false,
                scratch: Vec::new(),
            }),
            false => CopyScan::Text(RowScan::new(self, Some(block))),
        })
    }

    /// Scans a whole dump held in memory.
    pub fn scan_bytes(&self, dump: &[u8]) {
        let mut rows = RowScan::new(self, None);
        rows.feed(dump);
        rows.finish();
    }

    fn add(&self, block: &mut Block<'_>) {
        let mut found = self.found.lock().unwrap();
        for ((column, _), counts) in block.table.columns.iter().zip(&mut block.counts) {
            for (shape, n) in Shape::ALL.into_iter().zip(counts.iter_mut()) {
                if *n > 0 {
                    let column = format!("{}.{column}", block.table.name);
                    *found.entry((column, shape)).or_default() += *n;
                    *n = 0;
                }
            }
        }
    }

    /// Rows found by `schema.table.column` and shape, in that order, once every stream has
    /// finished.
    pub fn findings(self) -> Vec<(String, Shape, u64)> {
        self.found
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|((column, shape), n)| (column, shape, n))
            .collect()
    }
}

/// A column to scan: its position in a copy's rows and in its table's columns.
#[derive(Debug, Clone, Copy)]
struct Target {
    field: usize,
    slot: usize,
    kind: Kind,
}

fn targets(scanned: &Scanned, columns: &[String]) -> Vec<Target> {
    columns
        .iter()
        .enumerate()
        .filter_map(|(field, name)| {
            let (slot, (_, kind)) = scanned
                .columns
                .iter()
                .enumerate()
                .find(|(_, (column, _))| column == name)?;
            Some(Target {
                field,
                slot,
                kind: *kind,
            })
        })
        .collect()
}

/// The rows of one table being read, and those found in each of its columns.
struct Block<'a> {
    table: &'a Scanned,
    targets: Vec<Target>,
    /// Rows found in each column, by shape.
    counts: Vec<[u64; 2]>,
}

/// Adds a value's shapes to its column's counts.
fn count(counts: &mut [u64; 2], found: Found) {
    for (n, hit) in counts.iter_mut().zip(found) {
        *n += u64::from(hit);
    }
}

impl<'a> Block<'a> {
    /// The block a `COPY` line starts, when its table has columns to scan.
    fn of(scanner: &'a Scanner, line: &[u8]) -> Option<Block<'a>> {
        let CopyHeader { table, columns, .. } = CopyHeader::parse(line)?;
        let table = scanner.tables.get(&table)?;
        let targets = targets(table, &columns);
        (!targets.is_empty()).then(|| Block {
            counts: vec![[0; 2]; table.columns.len()],
            table,
            targets,
        })
    }

    /// Whole text-format rows, each ending in `\n`.
    fn scan(&mut self, rows: &[u8], scratch: &mut Vec<u8>) {
        let mut done = 0;
        let hits = word_hits(rows, scratch);
        for hit in hits {
            if hit < done {
                continue;
            }
            let start = memchr::memrchr(b'\n', &rows[..hit]).map_or(0, |n| n + 1);
            let end = memchr::memchr(b'\n', &rows[hit..]).map_or(rows.len(), |n| hit + n);
            self.row(&rows[start..end]);
            done = end;
        }
    }

    fn row(&mut self, row: &[u8]) {
        let mut fields = row.split(|&b| b == b'\t').enumerate();
        for &Target { field, slot, .. } in &self.targets {
            let Some(value) = fields.find_map(|(n, value)| (n == field).then_some(value)) else {
                break;
            };
            if value != b"\\N" {
                count(&mut self.counts[slot], shapes(&unescape(value)));
            }
        }
    }
}

/// A reader that hands its input on unchanged while a [`RowScan`] looks at it.
pub struct ScanningReader<'a, R> {
    inner: R,
    rows: RowScan<'a>,
}

impl<R: Read> Read for ScanningReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match n {
            0 => self.rows.finish(),
            n => self.rows.feed(&buf[..n]),
        }
        Ok(n)
    }
}

/// Text-format `COPY` rows, found in a dump by their `COPY` lines or given as one table's
/// copy: lines are kept only until whole, and only rows holding a word are split.
pub struct RowScan<'a> {
    scanner: &'a Scanner,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    block: Option<Block<'a>>,
    /// Inside a `COPY` block of a table with nothing to scan.
    passing: bool,
}

const END_OF_COPY: &[u8] = b"\\.\n";

impl<'a> RowScan<'a> {
    fn new(scanner: &'a Scanner, block: Option<Block<'a>>) -> Self {
        RowScan {
            scanner,
            buf: Vec::new(),
            scratch: Vec::new(),
            block,
            passing: false,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if self.block.is_some() || self.passing {
                if rest.starts_with(END_OF_COPY) {
                    self.end_block();
                    at += END_OF_COPY.len();
                    continue;
                }
                let Some(last) = memchr::memrchr(b'\n', rest) else {
                    break;
                };
                let (rows, ended) = match memchr::memmem::find(&rest[..=last], b"\n\\.\n") {
                    Some(end) => (end + 1, true),
                    None => (last + 1, false),
                };
                if let Some(block) = self.block.as_mut() {
                    block.scan(&rest[..rows], &mut self.scratch);
                }
                at += rows;
                if !ended {
                    break;
                }
            } else {
                let Some(end) = memchr::memchr(b'\n', rest) else {
                    break;
                };
                let line = &rest[..=end];
                if line.starts_with(b"COPY ") {
                    let block = Block::of(self.scanner, line);
                    self.passing = block.is_none() && is_copy_start(line);
                    self.block = block;
                }
                at += end + 1;
            }
        }
        self.buf.drain(..at);
    }

    fn end_block(&mut self) {
        if let Some(mut block) = self.block.take() {
            self.scanner.add(&mut block);
        }
        self.passing = false;
    }

    /// The end of the stream: a last row without its newline, and the block it is in.
    pub fn finish(&mut self) {
        if !self.buf.is_empty() && !self.buf.ends_with(b"\n") {
            self.buf.push(b'\n');
            self.feed(&[]);
        }
        self.end_block();
        self.buf.clear();
    }
}

/// COPY text format → the value's bytes.
fn unescape(field: &[u8]) -> Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return field.into();
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(8),
            Some(b'f') => out.push(12),
            Some(b'v') => out.push(11),
            Some(d @ b'0'..=b'7') => {
                let mut n = u32::from(d - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(n as u8);
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out.into()
}

/// The scan of one table's straight copy, in the copy's format.
pub enum CopyScan<'a> {
    Text(RowScan<'a>),
    Binary(BinaryScan<'a>),
}

impl CopyScan<'_> {
    pub fn feed(&mut self, data: &[u8]) {
        match self {
            CopyScan::Text(rows) => rows.feed(data),
            CopyScan::Binary(binary) => binary.feed(data),
        }
    }

    pub fn finish(&mut self) {
        match self {
            CopyScan::Text(rows) => rows.finish(),
            CopyScan::Binary(binary) => binary.finish(),
        }
    }
}

/// PostgreSQL's binary `COPY` format: a header, then tuples of length-prefixed fields.
pub struct BinaryScan<'a> {
    scanner: &'a Scanner,
    block: Block<'a>,
    buf: Vec<u8>,
    header: bool,
    scratch: Vec<u8>,
}

const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

fn be_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl BinaryScan<'_> {
    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        if !self.header {
            let fixed = BINARY_SIGNATURE.len() + 8;
            let Some(extension) = be_i32(&self.buf, fixed - 4) else {
                return;
            };
            let end = fixed + extension.max(0) as usize;
            if self.buf.len() < end {
                return;
            }
            self.header = true;
            at = end;
        }
        // The words' places in the buffer tell which tuples to look into.
        let hits: Vec<usize> = word_hits(&self.buf[at..], &mut self.scratch)
            .into_iter()
            .map(|hit| hit + at)
            .collect();
        let mut hits = hits.into_iter().peekable();
        while let Some(end) = tuple_end(&self.buf, at) {
            let mut worded = false;
            while let Some(&hit) = hits.peek() {
                if hit >= end {
                    break;
                }
                worded = true;
                hits.next();
            }
            if worded {
                self.tuple(at);
            }
            at = end;
        }
        self.buf.drain(..at);
    }

    /// Scans the whole tuple at `at`.
    fn tuple(&mut self, at: usize) {
        let buf = &self.buf;
        let fields = i16::from_be_bytes([buf[at], buf[at + 1]]);
        let mut pos = at + 2;
        let mut targets = self.block.targets.iter().peekable();
        for n in 0..fields.max(0) as usize {
            let len = be_i32(buf, pos).unwrap_or(-1);
            pos += 4;
            let Some(&&Target { field, slot, kind }) = targets.peek() else {
                break;
            };
            if field != n {
                pos += len.max(0) as usize;
                continue;
            }
            targets.next();
            if len < 0 {
                continue;
            }
            let value = &buf[pos..pos + len as usize];
            pos += len as usize;
            let found = match kind {
                Kind::Text => shapes(value),
                Kind::Jsonb => shapes(value.get(1..).unwrap_or_default()),
                Kind::Array { jsonb } => array_elements(value)
                    .into_iter()
                    .map(|e| {
                        if jsonb {
                            e.get(1..).unwrap_or_default()
                        } else {
                            e
                        }
                    })
                    .fold([false; 2], |any, e| {
                        let found = shapes(e);
                        [any[0] || found[0], any[1] || found[1]]
                    }),
            };
            count(&mut self.block.counts[slot], found);
        }
    }

    fn finish(&mut self) {
        self.scanner.add(&mut self.block);
        self.buf.clear();
    }
}

/// Where the tuple at `at` ends, when it is whole; `None` too for the trailer.
fn tuple_end(buf: &[u8], at: usize) -> Option<usize> {
    let fields = i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?);
    if fields < 0 {
        return None;
    }
    let mut end = at + 2;
    for _ in 0..fields {
        end += 4 + be_i32(buf, end)?.max(0) as usize;
    }
    (end <= buf.len()).then_some(end)
}

/// The elements of a binary array value, NULLs left out.
fn array_elements(value: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    let Some(dims) = be_i32(value, 0) else {
        return elements;
    };
    let mut count: usize = 1;
    let mut pos = 12;
    for _ in 0..dims.max(0) {
        let Some(size) = be_i32(value, pos) else {
            return elements;
        };
        count = count.saturating_mul(size.max(0) as usize);
        pos += 8;
    }
    for _ in 0..if dims > 0 { count } else { 0 } {
        let Some(len) = be_i32(value, pos) else {
            break;
        };
        pos += 4;
        if len < 0 {
            continue;
        }
        let Some(element) = value.get(pos..pos + len as usize) else {
            break;
        };
        elements.push(element);
        pos += len as usize;
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `public.t` with `note` text, `data` jsonb and `tags` text[] to scan; `secret` is not.
    fn scanner() -> Scanner {
        Scanner::new([(
            "public.t".to_string(),
            vec![
                ("note".to_string(), Kind::Text),
                ("data".to_string(), Kind::Jsonb),
                ("tags".to_string(), Kind::Array { jsonb: false }),
            ],
        )])
    }

    /// Credential findings, as `(column, rows)`.
    fn found(scanner: Scanner) -> Vec<(String, u64)> {
        scanner
            .findings()
            .into_iter()
            .filter(|(_, shape, _)| *shape == Shape::Credential)
            .map(|(column, _, rows)| (column, rows))
            .collect()
    }

    #[test]
    fn email_addresses_are_found_and_urls_and_reserved_domains_are_not() {
        for email in [
            "noc@carrier.net",
            "Contact: Jane.Doe+noc@Mail.Carrier-One.co.uk.",
            "{\"email\": \"ops@corp.io\"}",
            "mailto:ops@corp.io",
            "https://example.com/form?email=ops@corp.io&x=1",
            "a@b.example, c@d.org",
            "write to ops@corp.io: now",
            "<ops@corp.io>",
            "ops@corp.io/",
            "ops@example.org.corp.io",
        ] {
            assert_eq!(shapes(email.as_bytes()), [false, true], "{email}");
        }
        for other in [
            "git@github.com:netpoint/app.git",
            "ssh://git@github.com/netpoint/app.git",
            "https://deploy@gitlab.corp.io/x",
            "user@10.0.0.1",
            "postgres@db1",
            "registry/app@sha256:0123abcd",
            "left-pad@1.3.0",
            "@channel please look",
            "user-3@example.invalid",
            "noc@northwind.example",
            "ci@example.com and ops@mail.example.org",
            "dev@box.localhost; qa@ci.test",
            "ops@corp.com.example.org",
            "ops@corp.io2",
            "ops@corp.i",
        ] {
            assert!(!shapes(other.as_bytes())[1], "{other}");
        }
        // A URL with a password is a credential, not an e-mail address.
        assert_eq!(shapes(b"https://admin:hunter2@corp.io/"), [true, false]);
        assert_eq!(shapes(b"token=abcdef ops@corp.io"), [true, true]);
    }

    #[test]
    fn rows_are_counted_by_shape() {
        let scanner = scanner();
        scanner.scan_bytes(
            b"COPY public.t (id, note) FROM stdin;\n1\tops@corp.io\n2\tpassword=abcdef ops@corp.io\n3\tx@example.com\n\\.\n",
        );
        assert_eq!(
            scanner.findings(),
            vec![
                ("public.t.note".to_string(), Shape::Credential, 1),
                ("public.t.note".to_string(), Shape::Email, 2),
            ]
        );
    }

    #[test]
    fn stream_shapes_match_credentials_and_leave_the_rest() {
        for credential in [
            "https://admin:hunter2@example.com",
            "Authorization: Basic dXNlcjpwYXNz",
            "Bearer abcdefgh1234",
            "PASSWD=s3cret",
            "{\"client_secret\": \"abc\"}",
            "X-Token: t0k3n",
            "{\"API-Key\": \"abc\"}",
            "password=nullable1",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ghs_abcdefghijklmnopqrstuvwxyz0123456789",
            "github_pat_abcdefghijklmnopqrstuvwxyz",
            "glpat-abcdefghij0123456789",
            "xoxp-1234567890-abc",
            "key AKIAIOSFODNN7EXAMPLE",
            "rk_live_abcdefghijklmnop",
            "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789",
            "redis://:hunter2@cache:6379/0",
            "passphrase=abc pwd=def",
            "SECRET_KEY = \"abcdef\"",
            "snmp_communities: [\"c0mm\"]",
            "enable secret 5 $1$abc$xyz",
            "username admin privilege 15 password 0 Pw1x",
            "snmp-server community Publ1c RO",
            "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnop1234",
            "https://x.blob.example/b?sv=2022&sig=abcdefghijklmnop1234",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        ] {
            let bytes = credential.as_bytes();
            assert!(matches(bytes), "{credential}");
        }
        for harmless in [
            "ge-0/0/1 uplink to core",
            "{\"password\": null}",
            "token: null, secret=NULL",
            "https://example.com/path?x=1",
            "the key is under the mat",
            "Bearer short",
            "enable the uplink",
            "https://hooks.slack.com/",
            "the pwd is shown",
        ] {
            assert!(!matches(harmless.as_bytes()), "{harmless}");
        }
    }

    #[test]
    fn dump_rows_are_scanned_in_any_chunking() {
        let dump = concat!(
            "SET x = 1;\n",
            "COPY public.t (id, note, secret, data, tags) FROM stdin;\n",
            "1\tsee https://u:pw@h.example/\tpassword=covered\t{}\t\\N\n",
            "2\tplain\tpassword=covered\t{\"token\": \"abcdef\"}\t{a,b}\n",
            "3\tAuthorization:\\tBearer abcdefgh123\t\\N\t{\"password\": null}\t{\"Bearer abcdefgh1234\"}\n",
            "4\tkey\t\\N\t{}\t\\N\n",
            "\\.\n",
            "COPY public.other (id, note) FROM stdin;\n",
            "1\tpassword=elsewhere\n",
            "\\.\n",
            "COPY public.t (id, note) FROM stdin;\n",
            "9\tPASSWORD=again\n",
            "\\.\n",
            "SELECT 'password=not data';\n",
        )
        .as_bytes();
        let expected = vec![
            ("public.t.data".to_string(), 1),
            ("public.t.note".to_string(), 3),
            ("public.t.tags".to_string(), 1),
        ];
        for chunk in [1, 2, 3, 7, 64, dump.len()] {
            let scanner = scanner();
            let mut reader = scanner.reader(dump);
            let mut out = Vec::new();
            let mut buf = vec![0; chunk];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, dump, "the dump passes unchanged");
            assert_eq!(found(scanner), expected, "chunks of {chunk}");
        }
    }

    /// A binary `COPY` of `(id int, note text, data jsonb, tags text[])` with these rows.
    fn binary_copy(rows: &[(Option<&str>, Option<&str>, &[&str])]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend(4i32.to_be_bytes());
        out.extend(b"ext!");
        let field = |out: &mut Vec<u8>, value: Option<&[u8]>| match value {
            Some(v) => {
                out.extend((v.len() as i32).to_be_bytes());
                out.extend(v);
            }
            None => out.extend((-1i32).to_be_bytes()),
        };
        for (n, (note, data, tags)) in rows.iter().enumerate() {
            out.extend(4i16.to_be_bytes());
            field(&mut out, Some(&(n as i32).to_be_bytes()));
            field(&mut out, note.map(str::as_bytes));
            let data = data.map(|d| [&[1u8][..], d.as_bytes()].concat());
            field(&mut out, data.as_deref());
            let mut array = Vec::new();
            for v in [1i32, 0, 25, tags.len() as i32, 1] {
                array.extend(v.to_be_bytes());
            }
            for tag in *tags {
                array.extend((tag.len() as i32).to_be_bytes());
                array.extend(tag.as_bytes());
            }
            field(&mut out, Some(&array));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    #[test]
    fn binary_copies_are_scanned_by_kind_in_any_chunking() {
        let copy = binary_copy(&[
            (Some("https://u:pw@h.example/"), Some("{}"), &["a"]),
            (
                None,
                Some("{\"secret\": \"abcdef\"}"),
                &["b", "token=abcdef1"],
            ),
            (Some("key"), Some("{\"password\": null}"), &[]),
            (Some("Bearer abcdefgh12345"), None, &["c"]),
        ]);
        let columns: Vec<String> = ["id", "note", "data", "tags"].map(String::from).to_vec();
        for chunk in [1, 5, 19, 64, copy.len()] {
            let scanner = scanner();
            let mut scan = scanner.copy("public.t", &columns, true).unwrap();
            for part in copy.chunks(chunk) {
                scan.feed(part);
            }
            scan.finish();
            drop(scan);
            assert_eq!(
                found(scanner),
                vec![
                    ("public.t.data".to_string(), 1),
                    ("public.t.note".to_string(), 2),
                    ("public.t.tags".to_string(), 1),
                ],
                "chunks of {chunk}"
            );
        }
        let scanner = scanner();
        assert!(scanner
            .copy("public.t", &["id".to_string(), "secret".to_string()], true)
            .is_none());
        assert!(scanner.copy("public.other", &columns, true).is_none());
    }
}
