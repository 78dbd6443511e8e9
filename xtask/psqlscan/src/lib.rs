//! SQL scripts read the way psql 13 to 17 reads them (its `psqlscan.l`, `mainloop.c` and
//! `copy.c`): where each statement it sends to the server begins and ends, the statement's
//! tokens, and where the rows of a `COPY ... FROM stdin` begin and end. A dump is run by psql,
//! so a check of a dump is only worth as much as its reading agrees with psql's; the
//! integration tests compare this reading with psql's own. Where psql would change the text
//! (variables, backslash commands, a NUL byte) or psql and the server could read it two ways
//! (a string continued on the next line, a `;` inside `BEGIN ... END`, a number run into a
//! name), the text is refused instead: [`Lexer::take_refusal`].
//!
//! A crate of its own so that `cargo xtask`'s dev profile builds it optimised: every byte of
//! a bundle passes through it before anything is loaded.

use memchr::{memchr, memchr2, memchr_iter};

/// Something a script holds that this reading refuses, and the line it is on (from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub line: u64,
    pub what: String,
}

/// The kind of a string constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrKind {
    /// `'...'` (with `standard_conforming_strings` on, which a dump sets first).
    Standard,
    /// `N'...'`
    National,
    /// `E'...'`, with backslash escapes.
    Escape,
    /// `U&'...'`
    Unicode,
    /// `B'...'`
    Bit,
    /// `X'...'`
    Hex,
    /// `$$...$$` or `$tag$...$tag$`
    Dollar,
}

/// A token of a statement, as psql's lexer (and the server's) delimits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A keyword or an unquoted name, as written.
    Word(String),
    /// A quoted name, without its quotes (`""` undone).
    Name(String),
    /// A `U&"..."` name, as written between its quotes.
    UnicodeName(String),
    /// A string constant: what stands between its quotes (for `'...'` with `''` undone, for
    /// the others as written), at most [`MAX_TEXT`] bytes of it (`whole` is false beyond).
    Str {
        kind: StrKind,
        text: String,
        whole: bool,
    },
    Number(String),
    /// `$1`
    Param(String),
    /// An operator or punctuation: `(`, `)`, `,`, `.`, `;`, `::`, `=`, `[`, ...
    Op(String),
}

impl Token {
    /// Whether this is the keyword or unquoted name `word`, in any case.
    pub fn is_word(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }

    pub fn is_op(&self, op: &str) -> bool {
        matches!(self, Token::Op(o) if o == op)
    }
}

/// Bytes of a string constant kept in its token.
pub const MAX_TEXT: usize = 4096;
/// Tokens kept of one statement; a longer one is marked `too_long`.
pub const MAX_TOKENS: usize = 100_000;

/// One statement as psql sends it: from its first token or comment to its `;`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statement {
    /// The line it starts on (from 1).
    pub line: u64,
    /// Byte offsets of its first byte and of the byte after its `;`.
    pub start: u64,
    pub end: u64,
    /// Its tokens, comments left out; the last is the `;`.
    pub tokens: Vec<Token>,
    /// Whether blanks or a comment stood before each token (for showing the statement).
    pub spaced: Vec<bool>,
    /// It has more than [`MAX_TOKENS`] tokens; only the first are kept.
    pub too_long: bool,
    /// A `COPY ... FROM stdin`: psql sends the lines that follow as its rows.
    pub copy_in: bool,
    /// It holds a `;` psql keeps inside it: a `BEGIN ATOMIC ... END` routine body.
    pub atomic_body: bool,
}

impl Statement {
    /// The statement as one line, tokens separated as SQL is usually written, cut after
    /// `max` characters (for messages).
    pub fn render(&self, max: usize) -> String {
        let mut out = String::new();
        for (token, spaced) in self.tokens.iter().zip(&self.spaced) {
            if *spaced && !out.is_empty() {
                out.push(' ');
            }
            match token {
                Token::Word(w) | Token::Number(w) | Token::Param(w) | Token::Op(w) => {
                    out.push_str(w)
                }
                Token::Name(n) => out.push_str(&format!("\"{}\"", n.replace('"', "\"\""))),
                Token::UnicodeName(n) => out.push_str(&format!("U&\"{n}\"")),
                Token::Str { kind, text, .. } => out.push_str(&match kind {
                    StrKind::Standard => format!("'{}'", text.replace('\'', "''")),
                    StrKind::National => format!("N'{}'", text.replace('\'', "''")),
                    StrKind::Escape => format!("E'{text}'"),
                    StrKind::Unicode => format!("U&'{text}'"),
                    StrKind::Bit => format!("B'{text}'"),
                    StrKind::Hex => format!("X'{text}'"),
                    StrKind::Dollar => format!("$${text}$$"),
                }),
            }
            if out.chars().count() > max {
                let cut: String = out.chars().take(max).collect();
                return format!("{cut}...");
            }
        }
        out
    }

    /// The tokens outside any parentheses (the parentheses left out too).
    pub fn top_level(&self) -> impl Iterator<Item = &Token> {
        top_level(&self.tokens)
    }
}

/// The tokens of `tokens` outside any parentheses (the parentheses left out too).
pub fn top_level(tokens: &[Token]) -> impl Iterator<Item = &Token> {
    let mut depth = 0usize;
    tokens.iter().filter(move |token| {
        if token.is_op("(") {
            depth += 1;
            false
        } else if token.is_op(")") {
            depth = depth.saturating_sub(1);
            false
        } else {
            depth == 0
        }
    })
}

/// What a line of the script was to psql.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// SQL (or nothing but comments and blanks).
    Sql,
    /// `\restrict KEY` or `\unrestrict KEY`, the psql commands pg_dump writes.
    Meta,
}

/// How a `COPY ... FROM stdin` block ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// A line `\.`.
    Lf,
    /// A line `\.` followed by a carriage return, which psql takes as the end too.
    CrLf,
}

/// A `COPY ... FROM stdin` block that has ended: its rows (lines) and its last line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyBlock {
    pub rows: u64,
    pub end: CopyEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Code,
    /// `/* ... */`, nested.
    Comment,
    Str(StrKind),
    /// `"..."`, or `U&"..."` when `unicode`.
    Name {
        unicode: bool,
    },
    Dollar,
}

/// The rows of the `COPY` block being read: how long the current line is so far, and its
/// first bytes, which say whether it ends the block.
#[derive(Debug, Default)]
struct CopyRows {
    rows: u64,
    line_len: u64,
    head: [u8; 4],
}

/// psql's reading of a script, fed one line at a time ([`Lexer::line`]) and, inside a `COPY`
/// block, in chunks of any size ([`Lexer::copy_data`]).
#[derive(Debug)]
pub struct Lexer {
    state: State,
    xcdepth: u32,
    tag: Vec<u8>,
    paren_depth: u32,
    begin_depth: u32,
    identifiers: [u8; 4],
    identifier_count: usize,
    /// A quoted string ended and nothing but blanks and `--` comments followed: the server
    /// would continue it with a `'` on a later line, psql would not.
    after_string: bool,
    /// The last token was `AS` or `.`: a `CASE` or `END` after it is a name to the server,
    /// a keyword to psql.
    after_label: bool,
    /// Blanks, a line break or a comment since the last token.
    space_before: bool,
    /// A `BEGIN` opened a routine body; the next token must be `ATOMIC`.
    expect_atomic: bool,
    opened_atomic: bool,
    /// psql counted a `BEGIN`, `CASE` or `END` the server would not.
    odd_body: bool,
    /// The last token lets an expression begin: a `CASE` after it opens a `CASE` expression
    /// for the server too, not a column's label (`SELECT 1 case`).
    case_may_open: bool,
    /// What the last token was, for the two words that begin an expression only after
    /// another (`RETURN` at the start of a statement, `BY` after `ORDER` or `GROUP`).
    previous: Previous,
    current: Option<Statement>,
    text: Vec<u8>,
    text_whole: bool,
    done: Vec<Statement>,
    copy: Option<CopyRows>,
    copy_pending: bool,
    ended_copy: Option<CopyBlock>,
    line: u64,
    offset: u64,
    line_start: u64,
    refusal: Option<Refusal>,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer {
            state: State::Code,
            xcdepth: 0,
            tag: Vec::new(),
            paren_depth: 0,
            begin_depth: 0,
            identifiers: [0; 4],
            identifier_count: 0,
            after_string: false,
            after_label: false,
            space_before: false,
            expect_atomic: false,
            opened_atomic: false,
            odd_body: false,
            case_may_open: false,
            previous: Previous::Other,
            current: None,
            text: Vec::new(),
            text_whole: true,
            done: Vec::new(),
            copy: None,
            copy_pending: false,
            ended_copy: None,
            line: 0,
            offset: 0,
            line_start: 0,
            refusal: None,
        }
    }
}

/// What the last token of a routine body was, as far as [`Lexer::case_may_open`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Previous {
    /// `ATOMIC` or `;`: a statement of the body begins.
    StatementStart,
    /// `ORDER` or `GROUP`.
    OrderOrGroup,
    Other,
}

/// Reserved words after which an expression begins. An unreserved word may be a column's
/// name, after which the server reads `case` as the column's label where psql counts a
/// `CASE` that its `END` closes.
const BEFORE_EXPRESSION: &[&str] = &[
    "select",
    "where",
    "when",
    "then",
    "else",
    "and",
    "or",
    "not",
    "on",
    "having",
    "distinct",
    "limit",
    "offset",
    "returning",
];

/// `[A-Za-z\200-\377_]`: what may start a name.
fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// What may follow it in a name; `$` too in a name, but not in a dollar quote's tag.
fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn tag_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit()
}

const OP_CHARS: &[u8] = b"~!@#^&|`?+-*/%<>=";

/// `\restrict KEY` or `\unrestrict KEY`, as pg_dump writes them.
fn restrict_line(line: &[u8]) -> bool {
    [&b"\\restrict "[..], b"\\unrestrict "]
        .iter()
        .any(|command| {
            line.strip_prefix(*command)
                .is_some_and(|key| !key.is_empty() && key.iter().all(u8::is_ascii_alphanumeric))
        })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Lexer {
    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Between statements: psql's query buffer is empty and it reads SQL, not rows.
    pub fn at_statement_start(&self) -> bool {
        self.copy.is_none()
            && !self.copy_pending
            && self.state == State::Code
            && self.current.is_none()
    }

    /// Inside a `COPY ... FROM stdin` block: the input goes to [`Lexer::copy_data`].
    pub fn in_copy(&self) -> bool {
        self.copy.is_some()
    }

    /// Statements that ended since the last call.
    pub fn take_statements(&mut self) -> std::vec::Drain<'_, Statement> {
        self.done.drain(..)
    }

    /// The `COPY` block that ended since the last call.
    pub fn take_copy_block(&mut self) -> Option<CopyBlock> {
        self.ended_copy.take()
    }

    /// The first thing refused since the last call. Reading goes on after a refusal, as
    /// psql would read on.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    fn refuse(&mut self, what: impl Into<String>) {
        if self.refusal.is_none() {
            self.refusal = Some(Refusal {
                line: self.line,
                what: what.into(),
            });
        }
    }

    /// Reads one line of SQL, with its `\n` (the last line of a file may lack it).
    pub fn line(&mut self, line: &[u8]) -> LineKind {
        debug_assert!(self.copy.is_none(), "rows go to copy_data");
        self.line += 1;
        self.line_start = self.offset;
        self.offset += line.len() as u64;
        if memchr(0, line).is_some() {
            self.refuse("a NUL byte, where psql would stop reading the line");
        }
        // psql reads a line without its newline, and puts one back between lines of a
        // statement it collects.
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if self.at_statement_start() && restrict_line(content) {
            return LineKind::Meta;
        }
        if self.current.is_some()
            && matches!(
                self.state,
                State::Str(_) | State::Name { .. } | State::Dollar
            )
        {
            self.push_text(b"\n");
        }
        self.space_before = true;
        let mut at = 0;
        while at < content.len() {
            at = match self.state {
                State::Code => self.code(content, at),
                State::Comment => self.comment(content, at),
                State::Str(kind) => self.string(content, at, kind),
                State::Name { unicode } => self.name(content, at, unicode),
                State::Dollar => self.dollar(content, at),
            };
        }
        if std::mem::take(&mut self.copy_pending) {
            self.copy = Some(CopyRows::default());
        }
        LineKind::Sql
    }

    /// Reads rows of the current `COPY` block from `chunk`, which may end anywhere; returns
    /// the bytes used. When the block ends in `chunk`, the bytes after its last line are left
    /// for [`Lexer::line`].
    pub fn copy_data(&mut self, chunk: &[u8]) -> usize {
        let Some(copy) = self.copy.as_mut() else {
            return 0;
        };
        if let Some(at) = memchr(0, chunk) {
            let line = self.line + 1 + memchr_iter(b'\n', &chunk[..at]).count() as u64;
            if self.refusal.is_none() {
                self.refusal = Some(Refusal {
                    line,
                    what: "a NUL byte, where psql would stop reading the line".into(),
                });
            }
        }
        let mut start = 0;
        for newline in memchr_iter(b'\n', chunk) {
            let len = copy.line_len + (newline + 1 - start) as u64;
            let end = if len == 3 || len == 4 {
                let mut line = [0u8; 4];
                let held = (copy.line_len as usize).min(4);
                line[..held].copy_from_slice(&copy.head[..held]);
                let rest = (len as usize) - held;
                line[held..held + rest].copy_from_slice(&chunk[start..start + rest]);
                match &line[..len as usize] {
                    b"\\.\n" => Some(CopyEnd::Lf),
                    b"\\.\r\n" => Some(CopyEnd::CrLf),
                    _ => None,
                }
            } else {
                None
            };
            self.line += 1;
            copy.line_len = 0;
            start = newline + 1;
            if let Some(end) = end {
                self.ended_copy = Some(CopyBlock {
                    rows: copy.rows,
                    end,
                });
                self.copy = None;
                self.offset += start as u64;
                return start;
            }
            copy.rows += 1;
        }
        let rest = &chunk[start..];
        let held = (copy.line_len as usize).min(4);
        let more = rest.len().min(4 - held);
        copy.head[held..held + more].copy_from_slice(&rest[..more]);
        copy.line_len += rest.len() as u64;
        self.offset += chunk.len() as u64;
        chunk.len()
    }

    /// The end of the script. psql ends a `COPY` block at the end of its input too, and
    /// sends a statement left without its `;`: returned here.
    pub fn finish(&mut self) -> Option<Statement> {
        if let Some(copy) = self.copy.take() {
            self.ended_copy = Some(CopyBlock {
                rows: copy.rows + u64::from(copy.line_len > 0),
                end: CopyEnd::Lf,
            });
        }
        let mut open = self.current.take()?;
        open.end = self.offset;
        Some(open)
    }

    fn open(&mut self, at: usize) {
        if self.current.is_none() {
            self.current = Some(Statement {
                line: self.line,
                start: self.line_start + at as u64,
                ..Statement::default()
            });
        }
    }

    fn token(&mut self, at: usize, token: Token) {
        self.open(at);
        self.after_string = false;
        if std::mem::take(&mut self.expect_atomic) {
            if token.is_word("atomic") {
                self.opened_atomic = true;
            } else {
                self.odd_body = true;
            }
        }
        if self.begin_depth > 0 {
            self.follow_body(&token);
        }
        self.after_label = token.is_word("as") || token.is_op(".");
        let spaced = std::mem::take(&mut self.space_before);
        let statement = self.current.as_mut().expect("opened above");
        if statement.tokens.len() < MAX_TOKENS {
            statement.tokens.push(token);
            statement.spaced.push(spaced);
        } else {
            statement.too_long = true;
        }
    }

    /// Notes, inside a routine body, whether a `CASE` after `token` would open a `CASE`
    /// expression for the server.
    fn follow_body(&mut self, token: &Token) {
        let is = |word: &str| token.is_word(word) && !self.after_label;
        self.case_may_open = match token {
            Token::Op(op) => !matches!(op.as_str(), ")" | "]" | "*"),
            Token::Word(_) => {
                BEFORE_EXPRESSION.iter().any(|word| is(word))
                    || (is("return") && self.previous == Previous::StatementStart)
                    || (is("by") && self.previous == Previous::OrderOrGroup)
            }
            _ => false,
        };
        self.previous = if token.is_op(";") || is("atomic") {
            Previous::StatementStart
        } else if is("order") || is("group") {
            Previous::OrderOrGroup
        } else {
            Previous::Other
        };
    }

    fn op(&mut self, at: usize, op: &[u8]) {
        self.token(at, Token::Op(lossy(op)));
    }

    fn start_text(&mut self, at: usize, state: State) {
        self.open(at);
        self.after_string = false;
        self.text.clear();
        self.text_whole = true;
        self.state = state;
    }

    fn push_text(&mut self, bytes: &[u8]) {
        let room = MAX_TEXT.saturating_sub(self.text.len());
        if bytes.len() > room {
            self.text_whole = false;
        }
        self.text.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_text(&mut self, at: usize, make: impl FnOnce(String, bool) -> Token) {
        let token = make(lossy(&self.text), self.text_whole);
        self.state = State::Code;
        self.token(at, token);
    }

    fn code(&mut self, s: &[u8], at: usize) -> usize {
        let b = s[at];
        let next = s.get(at + 1).copied();
        if self.copy_pending && !matches!(b, b' ' | b'\t' | 0x0c) {
            self.refuse(
                "text after `COPY ... FROM stdin;` on its line, which psql would run after the rows",
            );
            return s.len();
        }
        match b {
            b' ' | b'\t' | 0x0c => {
                self.space_before = true;
                at + 1
            }
            b'\r' => {
                self.refuse("a carriage return outside a string, where psql and the server see a line break");
                at + 1
            }
            b'-' if next == Some(b'-') => {
                self.space_before = true;
                match memchr(b'\r', &s[at..]) {
                    Some(cr) => {
                        self.refuse(
                            "a carriage return in a `--` comment, which ends the comment for psql",
                        );
                        at + cr
                    }
                    None => s.len(),
                }
            }
            b'/' if next == Some(b'*') => {
                self.open(at);
                self.after_string = false;
                self.state = State::Comment;
                self.xcdepth = 0;
                at + 2
            }
            b'\'' => {
                if self.after_string {
                    self.refuse("a string continued on a later line, which the server joins to the one before and psql does not");
                }
                self.start_text(at, State::Str(StrKind::Standard));
                at + 1
            }
            b'"' => {
                self.start_text(at, State::Name { unicode: false });
                at + 1
            }
            b'$' => self.dollar_sign(s, at),
            b'0'..=b'9' => self.number(s, at),
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => self.number(s, at),
            b'.' if next == Some(b'.') => {
                self.op(at, b"..");
                at + 2
            }
            b'(' => {
                self.paren_depth += 1;
                self.op(at, b"(");
                at + 1
            }
            b')' => {
                self.paren_depth = self.paren_depth.saturating_sub(1);
                self.op(at, b")");
                at + 1
            }
            b';' => {
                self.op(at, b";");
                if self.paren_depth == 0 {
                    if self.begin_depth == 0 {
                        self.end_statement(at + 1);
                    } else if let Some(statement) = self.current.as_mut() {
                        statement.atomic_body = true;
                    }
                }
                at + 1
            }
            b'\\' => {
                let end = at
                    + 1
                    + s[at + 1..]
                        .iter()
                        .take_while(|c| !c.is_ascii_whitespace())
                        .count();
                let command = lossy(&s[at..end]);
                self.refuse(format!(
                    "the psql command `{command}`, which psql runs itself (a loading psql runs restricted and refuses it)"
                ));
                s.len()
            }
            b':' => self.colon(s, at),
            _ if ident_start(b) => self.word(s, at),
            _ if OP_CHARS.contains(&b) => self.operator(s, at),
            _ => {
                self.op(at, &s[at..at + 1]);
                at + 1
            }
        }
    }

    fn end_statement(&mut self, end: usize) {
        let mut statement = self.current.take().expect("a `;` opened it");
        statement.end = self.line_start + end as u64;
        statement.copy_in = is_copy_in(&statement.tokens);
        if statement.copy_in && is_binary_copy(&statement.tokens) {
            self.refuse("a binary `COPY ... FROM stdin`, whose rows psql reads to the end of the file, not to a line `\\.`");
        }
        if statement.atomic_body && (self.odd_body || !self.opened_atomic) {
            self.refuse("a `;` psql keeps inside the statement (it counted a BEGIN or CASE without its END) where the server would end it");
        }
        self.identifier_count = 0;
        self.expect_atomic = false;
        self.opened_atomic = false;
        self.odd_body = false;
        self.case_may_open = false;
        self.previous = Previous::Other;
        self.after_string = false;
        self.copy_pending = statement.copy_in;
        self.done.push(statement);
    }

    fn word(&mut self, s: &[u8], at: usize) -> usize {
        let b = s[at];
        let next = s.get(at + 1).copied();
        if next == Some(b'\'') {
            let kind = match b {
                b'b' | b'B' => Some(StrKind::Bit),
                b'x' | b'X' => Some(StrKind::Hex),
                b'e' | b'E' => Some(StrKind::Escape),
                b'n' | b'N' => Some(StrKind::National),
                _ => None,
            };
            if let Some(kind) = kind {
                self.start_text(at, State::Str(kind));
                return at + 2;
            }
        }
        if matches!(b, b'u' | b'U') && next == Some(b'&') {
            match s.get(at + 2) {
                Some(b'\'') => {
                    self.start_text(at, State::Str(StrKind::Unicode));
                    return at + 3;
                }
                Some(b'"') => {
                    self.start_text(at, State::Name { unicode: true });
                    return at + 3;
                }
                // psql echoes the `u` and counts no name.
                _ => {
                    self.token(at, Token::Word(lossy(&s[at..at + 1])));
                    return at + 1;
                }
            }
        }
        let end = at + 1 + s[at + 1..].iter().take_while(|&&c| ident_cont(c)).count();
        self.identifier(&s[at..end], at);
        end
    }

    /// psql's count of `BEGIN` and `END` in `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, which
    /// keeps the `;` of a `BEGIN ATOMIC` body inside the statement (psql 14 and later).
    fn identifier(&mut self, word: &[u8], at: usize) {
        let label = self.after_label;
        let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
        if self.identifier_count == 0 {
            self.identifiers = [0; 4];
        }
        if self.identifier_count < 4
            && ["create", "function", "procedure", "or", "replace"]
                .iter()
                .any(|w| is(w))
        {
            self.identifiers[self.identifier_count] = word[0].to_ascii_lowercase();
        }
        self.identifier_count += 1;
        let ids = self.identifiers;
        let routine = ids[0] == b'c'
            && (matches!(ids[1], b'f' | b'p')
                || (ids[1] == b'o' && ids[2] == b'r' && matches!(ids[3], b'f' | b'p')));
        let mut opens_body = false;
        if routine && self.paren_depth == 0 {
            if is("begin") {
                if self.begin_depth == 0 && !self.opened_atomic && !label {
                    opens_body = true;
                } else {
                    self.odd_body = true;
                }
                self.begin_depth += 1;
            } else if is("case") {
                if self.begin_depth >= 1 {
                    self.begin_depth += 1;
                    self.odd_body |= label || !self.case_may_open;
                }
            } else if is("end") && self.begin_depth > 0 {
                self.begin_depth -= 1;
                self.odd_body |= label;
            }
        }
        self.token(at, Token::Word(lossy(word)));
        self.expect_atomic = opens_body;
    }

    fn number(&mut self, s: &[u8], at: usize) -> usize {
        let digits =
            |from: usize| from + s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut end = digits(at);
        if s.get(end) == Some(&b'.') && s.get(end + 1) != Some(&b'.') {
            end = digits(end + 1);
        }
        if matches!(s.get(end), Some(b'e' | b'E')) {
            let mut exponent = end + 1;
            if matches!(s.get(exponent), Some(b'+' | b'-')) {
                exponent += 1;
            }
            if s.get(exponent).is_some_and(u8::is_ascii_digit) {
                end = digits(exponent);
            }
        }
        if s.get(end).is_some_and(|&c| ident_start(c)) {
            self.refuse(format!(
                "`{}`: a number run into a name, which PostgreSQL versions read differently",
                lossy(&s[at..end + 1])
            ));
        }
        self.token(at, Token::Number(lossy(&s[at..end])));
        end
    }

    fn dollar_sign(&mut self, s: &[u8], at: usize) -> usize {
        let next = s.get(at + 1).copied();
        if next.is_some_and(|c| c.is_ascii_digit()) {
            let end = at
                + 1
                + s[at + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
            if s.get(end).is_some_and(|&c| ident_start(c)) {
                self.refuse(format!(
                    "`{}`: a parameter run into a name, which PostgreSQL versions read differently",
                    lossy(&s[at..end + 1])
                ));
            }
            self.token(at, Token::Param(lossy(&s[at..end])));
            return end;
        }
        let mut end = at + 1;
        if next.is_some_and(ident_start) {
            end += 1 + s[at + 2..].iter().take_while(|&&c| tag_cont(c)).count();
        }
        if s.get(end) == Some(&b'$') {
            self.tag = s[at..=end].to_vec();
            self.start_text(at, State::Dollar);
            return end + 1;
        }
        // `$tag` without its closing `$`: psql echoes the `$` and reads the name after it.
        self.op(at, b"$");
        at + 1
    }

    fn colon(&mut self, s: &[u8], at: usize) -> usize {
        let variable = |from: usize| {
            from + s
                .get(from..)
                .map_or(0, |rest| rest.iter().take_while(|&&c| tag_cont(c)).count())
        };
        let refuse = |lexer: &mut Lexer, text: &[u8]| {
            lexer.refuse(format!(
                "the psql variable reference `{}`, which psql replaces with the variable's value",
                lossy(text)
            ));
        };
        match s.get(at + 1).copied() {
            Some(b':') => {
                self.op(at, b"::");
                at + 2
            }
            Some(b'=') => {
                self.op(at, b":=");
                at + 2
            }
            Some(c) if tag_cont(c) => {
                let end = variable(at + 1);
                // A variable whose name is a number is never set: `a[1:2]` is an array slice.
                if !s[at + 1..end].iter().all(u8::is_ascii_digit) {
                    refuse(self, &s[at..end]);
                }
                self.op(at, b":");
                at + 1
            }
            Some(quote @ (b'\'' | b'"')) => {
                let end = variable(at + 2);
                if end > at + 2 && s.get(end) == Some(&quote) {
                    refuse(self, &s[at..=end]);
                    self.op(at, b":");
                    return end + 1;
                }
                self.op(at, b":");
                at + 1
            }
            Some(b'{') if s.get(at + 2) == Some(&b'?') => {
                let end = variable(at + 3);
                if end > at + 3 && s.get(end) == Some(&b'}') {
                    refuse(self, &s[at..=end]);
                    self.op(at, b":");
                    return end + 1;
                }
                self.op(at, b":");
                at + 1
            }
            _ => {
                self.op(at, b":");
                at + 1
            }
        }
    }

    fn operator(&mut self, s: &[u8], at: usize) -> usize {
        let mut end = at + s[at..].iter().take_while(|c| OP_CHARS.contains(c)).count();
        // A comment that starts inside the run ends the operator.
        if let Some(comment) =
            (at + 1..end).find(|&k| s[k..].starts_with(b"/*") || s[k..].starts_with(b"--"))
        {
            end = comment;
        }
        // `=-` is two operators; `?-` is one.
        let run = &s[at..end];
        if run.len() > 1
            && matches!(run[run.len() - 1], b'+' | b'-')
            && !run[..run.len() - 1]
                .iter()
                .any(|c| b"~!@#^&|`?%".contains(c))
        {
            while end > at + 1 && matches!(s[end - 1], b'+' | b'-') {
                end -= 1;
            }
        }
        self.op(at, &s[at..end]);
        end
    }

    fn comment(&mut self, s: &[u8], at: usize) -> usize {
        let Some(k) = memchr2(b'*', b'/', &s[at..]).map(|k| at + k) else {
            return s.len();
        };
        match (s[k], s.get(k + 1)) {
            (b'/', Some(b'*')) => {
                self.xcdepth += 1;
                k + 2
            }
            (b'*', Some(b'/')) => {
                if self.xcdepth == 0 {
                    self.state = State::Code;
                    self.space_before = true;
                } else {
                    self.xcdepth -= 1;
                }
                k + 2
            }
            _ => k + 1,
        }
    }

    fn string(&mut self, s: &[u8], at: usize, kind: StrKind) -> usize {
        let found = match kind {
            StrKind::Escape => memchr2(b'\'', b'\\', &s[at..]),
            _ => memchr(b'\'', &s[at..]),
        };
        let Some(k) = found.map(|k| at + k) else {
            self.push_text(&s[at..]);
            return s.len();
        };
        if s[k] == b'\\' {
            let end = (k + 2).min(s.len());
            self.push_text(&s[at..end]);
            return end;
        }
        if s.get(k + 1) == Some(&b'\'') && !matches!(kind, StrKind::Bit | StrKind::Hex) {
            let text = if kind == StrKind::Escape {
                k + 2
            } else {
                k + 1
            };
            self.push_text(&s[at..text]);
            return k + 2;
        }
        self.push_text(&s[at..k]);
        self.end_text(k, |text, whole| Token::Str { kind, text, whole });
        self.after_string = true;
        k + 1
    }

    fn name(&mut self, s: &[u8], at: usize, unicode: bool) -> usize {
        let Some(k) = memchr(b'"', &s[at..]).map(|k| at + k) else {
            self.push_text(&s[at..]);
            return s.len();
        };
        if s.get(k + 1) == Some(&b'"') {
            self.push_text(&s[at..=k]);
            return k + 2;
        }
        self.push_text(&s[at..k]);
        self.end_text(k, |text, _| match unicode {
            true => Token::UnicodeName(text),
            false => Token::Name(text),
        });
        k + 1
    }

    fn dollar(&mut self, s: &[u8], at: usize) -> usize {
        let Some(k) = memchr(b'$', &s[at..]).map(|k| at + k) else {
            self.push_text(&s[at..]);
            return s.len();
        };
        let mut end = k + 1;
        if s.get(end).is_some_and(|&c| ident_start(c)) {
            end += 1 + s[k + 2..].iter().take_while(|&&c| tag_cont(c)).count();
        }
        if s.get(end) == Some(&b'$') {
            if s[k..=end] == self.tag[..] {
                self.push_text(&s[at..k]);
                self.end_text(k, |text, whole| Token::Str {
                    kind: StrKind::Dollar,
                    text,
                    whole,
                });
                return end + 1;
            }
            // Another tag: its last `$` may open the closing one.
            self.push_text(&s[at..end]);
            return end;
        }
        self.push_text(&s[at..end]);
        end
    }
}

/// `COPY ... FROM STDIN`: the server answers it by asking for rows, which psql reads from
/// the lines after the statement.
fn is_copy_in(tokens: &[Token]) -> bool {
    if !tokens.first().is_some_and(|t| t.is_word("copy")) {
        return false;
    }
    let mut top = top_level(tokens).peekable();
    while let Some(token) = top.next() {
        if token.is_word("from") && top.peek().is_some_and(|next| next.is_word("stdin")) {
            return true;
        }
    }
    false
}

/// A `COPY` in binary format (`COPY BINARY t`, or `binary` among the options after
/// `FROM stdin`), which pg_dump never writes.
fn is_binary_copy(tokens: &[Token]) -> bool {
    let binary = |token: &Token| match token {
        Token::Word(text) | Token::Name(text) => text.eq_ignore_ascii_case("binary"),
        Token::Str { text, .. } => text.eq_ignore_ascii_case("binary"),
        _ => false,
    };
    let options = tokens
        .windows(2)
        .position(|pair| pair[0].is_word("from") && pair[1].is_word("stdin"))
        .map_or(&[][..], |at| &tokens[at + 2..]);
    tokens.get(1).is_some_and(binary) || options.iter().any(binary)
}

#[cfg(test)]
mod tests;
