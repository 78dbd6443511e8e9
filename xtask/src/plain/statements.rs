//! What a plain dump may hold, statement by statement: the session settings pg_dump 13 to 17
//! writes before the first table-of-contents entry, and for each type of entry the statements
//! it writes there (with and without owners). Anything else refuses the dump. The statements
//! are read by [`psqlscan`], as psql will read them.

use psqlscan::{Statement, StrKind, Token};

/// Settings pg_dump 9.6 to 17 writes before the first entry, each once.
const HEADER_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "client_encoding",
    "standard_conforming_strings",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_with_oids",
    "default_tablespace",
    "default_table_access_method",
];

/// The encodings a server may have (PostgreSQL's `PG_VALID_BE_ENCODING`): in each, every
/// byte of a multi-byte character has its high bit set, so no byte of one can be read as a
/// quote or a backslash. SJIS, BIG5, GBK, UHC, GB18030, JOHAB and SHIFT_JIS_2004 are
/// client-only encodings, and are not here.
const SERVER_ENCODINGS: &[&str] = &[
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "UTF8",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
];

/// Statements, by their first two words, that act beyond the database a dump loads into:
/// other databases, roles, tablespaces, the server's configuration, the session's role.
/// pg_dump writes none of them into a dump of one database without `--create`.
const FOREIGN: &[(&str, &[&str])] = &[
    (
        "CREATE",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE"],
    ),
    (
        "DROP",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "OWNED"],
    ),
    (
        "ALTER",
        &["DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "SYSTEM"],
    ),
    ("REASSIGN", &["OWNED"]),
    ("SET", &["ROLE", "SESSION"]),
    ("GRANT", &[]),
    ("REVOKE", &[]),
    ("LOAD", &[]),
];

/// The header of a dump: the settings seen so far.
#[derive(Debug, Default)]
pub struct Header {
    seen: Vec<String>,
    /// `SET client_encoding = '...'`, which must be the source database's encoding.
    pub client_encoding: Option<String>,
}

impl Header {
    /// Checks a statement before the first entry; `Err` says what was found instead of a
    /// setting pg_dump writes there.
    pub fn statement(&mut self, statement: &Statement) -> Result<(), String> {
        let tokens = &statement.tokens;
        let set_config = [
            "SELECT",
            "pg_catalog",
            ".",
            "set_config",
            "(",
            "'search_path'",
            ",",
            "''",
            ",",
            "false",
            ")",
            ";",
        ];
        if is(tokens, &set_config) && !self.once("set_config") {
            return Ok(());
        }
        let not_setting = || {
            format!(
                "holds `{}` before its first table-of-contents entry, where pg_dump writes only session settings",
                statement.render(60)
            )
        };
        let (Some(name), Some(value)) = (setting(tokens), tokens.get(3)) else {
            return Err(not_setting());
        };
        let name = name.to_ascii_lowercase();
        if !HEADER_SETTINGS.contains(&name.as_str()) || !plain_value(value) {
            return Err(not_setting());
        }
        if self.once(&name) {
            return Err(format!(
                "sets {name} a second time before its first table-of-contents entry, which pg_dump does not"
            ));
        }
        match name.as_str() {
            "standard_conforming_strings" if !value.is_word("on") => Err(format!(
                "`{}`: pg_dump writes standard_conforming_strings = on, and a dump is read with backslashes as ordinary characters",
                statement.render(60)
            )),
            "client_encoding" => {
                let encoding = match value {
                    Token::Str {
                        kind: StrKind::Standard,
                        text,
                        ..
                    } => text.clone(),
                    _ => String::new(),
                };
                if !SERVER_ENCODINGS.contains(&encoding.as_str()) {
                    return Err(format!(
                        "`{}`: not an encoding a PostgreSQL server has (in SJIS, BIG5, GBK, UHC, GB18030, JOHAB or SHIFT_JIS_2004 a quote or a backslash can hide inside a character)",
                        statement.render(60)
                    ));
                }
                self.client_encoding = Some(encoding);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `name` was seen before; records it.
    fn once(&mut self, name: &str) -> bool {
        let seen = self.seen.iter().any(|s| s == name);
        self.seen.push(name.to_string());
        seen
    }

    /// At the first entry: the settings the reading of the rest relies on were made.
    pub fn finish(&self) -> Result<(), String> {
        for name in ["client_encoding", "standard_conforming_strings"] {
            if !self.seen.iter().any(|s| s == name) {
                return Err(format!(
                    "sets no {name} before its first table-of-contents entry, where pg_dump sets it"
                ));
            }
        }
        Ok(())
    }
}

/// `SET name = value;` (or `TO`): the name.
fn setting(tokens: &[Token]) -> Option<&str> {
    match tokens {
        [set, Token::Word(name), eq, _, end]
            if set.is_word("set") && (eq.is_op("=") || eq.is_word("to")) && end.is_op(";") =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// A setting's value as pg_dump writes it: a word, a number or a short plain string.
fn plain_value(value: &Token) -> bool {
    match value {
        Token::Word(_) | Token::Number(_) => true,
        Token::Str {
            kind: StrKind::Standard,
            text,
            ..
        } => text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b)),
        _ => false,
    }
}

/// Whether `tokens` are exactly `pattern`: words compared without case, names and
/// strings as written (`'text'`).
fn is(tokens: &[Token], pattern: &[&str]) -> bool {
    tokens.len() == pattern.len()
        && tokens.iter().zip(pattern).all(|(token, want)| match token {
            Token::Str {
                kind: StrKind::Standard,
                text,
                ..
            } => want.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) == Some(text),
            Token::Word(w) => w.eq_ignore_ascii_case(want),
            Token::Op(o) | Token::Number(o) => o == want,
            _ => false,
        })
}

/// Checks a statement of an entry of pg_dump's type `kind` (`TABLE`, `INDEX`, ...); `Err`
/// says what was found.
pub fn entry_statement(kind: &str, statement: &Statement) -> Result<(), String> {
    let tokens = &statement.tokens;
    let words: Vec<String> = tokens
        .iter()
        .take(2)
        .map_while(|t| match t {
            Token::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .collect();
    let foreign = FOREIGN.iter().find(|(verb, objects)| {
        words.first().is_some_and(|w| w == verb)
            && (objects.is_empty() || words.get(1).is_some_and(|o| objects.contains(&o.as_str())))
    });
    if let Some((_, objects)) = foreign {
        let words = words[..if objects.is_empty() { 1 } else { 2 }].join(" ");
        let article = match words.starts_with(['A', 'E', 'I', 'O', 'U']) {
            true => "an",
            false => "a",
        };
        if objects.is_empty() && matches!(words.as_str(), "GRANT" | "REVOKE") {
            return Err(format!(
                "a {words} statement, which changes roles' privileges and which a dump made with --no-privileges (as bundles and fixtures are) never holds"
            ));
        }
        return Err(format!(
            "{article} {words} statement, which acts beyond the database and which pg_dump never writes into a dump"
        ));
    }
    if statement.too_long {
        return Err(format!(
            "a statement of more than {} tokens (`{}`), longer than pg_dump writes",
            psqlscan::MAX_TOKENS,
            statement.render(40)
        ));
    }
    let shape = Shape::of(tokens);
    let cursor = Cursor {
        items: &shape.items,
        at: 0,
    };
    let routine_body = statement.atomic_body && matches!(kind, "FUNCTION" | "PROCEDURE");
    if (!statement.atomic_body || routine_body)
        && !statement.copy_in
        && (anywhere(cursor) || allowed(kind, cursor, tokens))
    {
        return Ok(());
    }
    if statement.copy_in && kind == "TABLE DATA" {
        return Ok(());
    }
    if tokens.first().is_some_and(|t| t.is_word("copy")) && !statement.copy_in {
        return Err(format!(
            "`{}`: a COPY other than the `COPY ... FROM stdin` of a table's rows, a COPY to or from a file or program, which pg_dump never writes",
            statement.render(60)
        ));
    }
    Err(format!(
        "`{}`, which pg_dump never writes into a {kind} entry",
        statement.render(60)
    ))
}

/// A statement's tokens with every parenthesised or bracketed group as one item, and
/// without its `;`.
struct Shape<'a> {
    items: Vec<Item<'a>>,
}

#[derive(Clone, Copy, Debug)]
enum Item<'a> {
    Token(&'a Token),
    /// What stands between `(` and `)` (or `[` and `]`).
    Group(&'a [Token]),
}

impl<'a> Shape<'a> {
    fn of(tokens: &'a [Token]) -> Shape<'a> {
        let tokens = match tokens.split_last() {
            Some((last, rest)) if last.is_op(";") => rest,
            _ => tokens,
        };
        let mut items = Vec::new();
        let mut depth = 0usize;
        let mut opened = 0;
        for (at, token) in tokens.iter().enumerate() {
            let open = token.is_op("(") || token.is_op("[");
            let close = token.is_op(")") || token.is_op("]");
            if open {
                if depth == 0 {
                    opened = at + 1;
                }
                depth += 1;
            } else if close && depth > 0 {
                depth -= 1;
                if depth == 0 {
                    items.push(Item::Group(&tokens[opened..at]));
                }
            } else if depth == 0 {
                items.push(Item::Token(token));
            }
        }
        if depth > 0 {
            items.push(Item::Group(&tokens[opened..]));
        }
        Shape { items }
    }
}

/// A place in a statement's shape, moved by matching what comes next.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    items: &'a [Item<'a>],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn next(&self) -> Option<Item<'a>> {
        self.items.get(self.at).copied()
    }

    fn step(self) -> Cursor<'a> {
        Cursor {
            at: self.at + 1,
            ..self
        }
    }

    /// The keywords `words` (space-separated), in any case.
    fn kw(self, words: &str) -> Option<Cursor<'a>> {
        let mut cursor = self;
        for word in words.split(' ') {
            match cursor.next() {
                Some(Item::Token(token)) if token.is_word(word) => cursor = cursor.step(),
                _ => return None,
            }
        }
        Some(cursor)
    }

    /// The keywords `words` if they come next.
    fn opt(self, words: &str) -> Cursor<'a> {
        self.kw(words).unwrap_or(self)
    }

    /// One of `choices`.
    fn one_of(self, choices: &[&str]) -> Option<Cursor<'a>> {
        choices.iter().find_map(|words| self.kw(words))
    }

    /// A name, possibly qualified: `a`, `"A"`, `s.a`.
    fn name(self) -> Option<Cursor<'a>> {
        let mut cursor = self;
        loop {
            match cursor.next() {
                Some(Item::Token(Token::Word(_) | Token::Name(_))) => cursor = cursor.step(),
                _ => return None,
            }
            match cursor.next() {
                Some(Item::Token(token)) if token.is_op(".") => cursor = cursor.step(),
                _ => return Some(cursor),
            }
        }
    }

    /// A parenthesised group, whatever it holds.
    fn group(self) -> Option<(Cursor<'a>, &'a [Token])> {
        match self.next() {
            Some(Item::Group(inner)) => Some((self.step(), inner)),
            _ => None,
        }
    }

    fn end(self) -> bool {
        self.at == self.items.len()
    }

    fn rest(self) -> &'a [Item<'a>] {
        &self.items[self.at..]
    }

    /// Nothing follows but single tokens and groups, with no `,` between them: one
    /// subcommand, not a list of them.
    fn one_clause(self) -> bool {
        !self
            .rest()
            .iter()
            .any(|item| matches!(item, Item::Token(token) if token.is_op(",")))
    }

    /// The keywords `first` and `second` come one after the other somewhere after this point.
    fn has_pair(self, first: &str, second: &str) -> bool {
        self.rest().windows(2).any(|pair| {
            matches!(pair, [Item::Token(a), Item::Token(b)] if a.is_word(first) && b.is_word(second))
        })
    }

    /// The keyword `word` comes somewhere after this point, outside parentheses.
    fn has(self, word: &str) -> bool {
        self.rest()
            .iter()
            .any(|item| matches!(item, Item::Token(token) if token.is_word(word)))
    }
}

/// What may stand in any entry: the settings pg_dump changes between entries, and a change
/// of owner of an object inside the database.
fn anywhere(c: Cursor) -> bool {
    let default_setting = c
        .kw("SET")
        .and_then(|c| c.one_of(&["default_tablespace", "default_table_access_method"]))
        .and_then(|c| c.one_of(&["=", "TO"]).or_else(|| op(c, "=")))
        .and_then(|c| match c.next() {
            Some(Item::Token(value)) if plain_value(value) || matches!(value, Token::Name(_)) => {
                Some(c.step())
            }
            _ => None,
        })
        .is_some_and(Cursor::end);
    default_setting || owner(c)
}

fn op<'a>(c: Cursor<'a>, op: &str) -> Option<Cursor<'a>> {
    match c.next() {
        Some(Item::Token(token)) if token.is_op(op) => Some(c.step()),
        _ => None,
    }
}

/// Object types whose owner pg_dump sets with `ALTER ... OWNER TO`.
const OWNED: &[&str] = &[
    "TABLE",
    "FOREIGN TABLE",
    "SEQUENCE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FUNCTION",
    "PROCEDURE",
    "AGGREGATE",
    "TYPE",
    "DOMAIN",
    "SCHEMA",
    "COLLATION",
    "CONVERSION",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "OPERATOR",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "STATISTICS",
    "PUBLICATION",
    "LARGE OBJECT",
];

/// `ALTER <type> <object> OWNER TO <role>`.
fn owner(c: Cursor) -> bool {
    let Some(after) = c.kw("ALTER").and_then(|c| c.one_of(OWNED)) else {
        return false;
    };
    let rest = after.rest();
    after.one_clause()
        && rest.len() >= 3
        && matches!(
            &rest[rest.len() - 3..],
            [Item::Token(o), Item::Token(t), Item::Token(Token::Word(_) | Token::Name(_))]
                if o.is_word("owner") && t.is_word("to")
        )
}

/// What `ALTER TABLE [ONLY] <table>` may go on with, by entry type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// `ALTER COLUMN c SET STATISTICS|STORAGE|COMPRESSION|NOT NULL|(options)`
    ColumnSet,
    /// `ALTER COLUMN c SET DEFAULT ...`
    ColumnDefault,
    /// `ALTER COLUMN c ADD GENERATED ... AS IDENTITY (...)`
    Identity,
    /// `REPLICA IDENTITY FULL|NOTHING|DEFAULT`
    ReplicaIdentity,
    /// `REPLICA IDENTITY USING INDEX i`, `CLUSTER ON i`
    IndexUse,
    /// `FORCE ROW LEVEL SECURITY`
    ForceRowSecurity,
    /// `ENABLE ROW LEVEL SECURITY`
    EnableRowSecurity,
    /// `ATTACH PARTITION p FOR VALUES ...|DEFAULT`, bounds of constants only
    Attach,
    /// `ADD CONSTRAINT c ...`
    Constraint,
    /// `ENABLE [ALWAYS|REPLICA]|DISABLE TRIGGER t`
    Trigger,
    /// `ENABLE [ALWAYS|REPLICA]|DISABLE RULE r`
    Rule,
}

fn alter_table(c: Cursor, allowed: &[Sub]) -> bool {
    let Some(c) = c
        .kw("ALTER TABLE")
        .map(|c| c.opt("IF EXISTS").opt("ONLY"))
        .and_then(Cursor::name)
    else {
        return false;
    };
    if !c.one_clause() {
        return false;
    }
    allowed.iter().any(|sub| subcommand(c, *sub))
}

fn subcommand(c: Cursor, sub: Sub) -> bool {
    fn column(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.kw("ALTER")
            .map(|c| c.opt("COLUMN"))
            .and_then(Cursor::name)
    }
    fn enable(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.kw("DISABLE")
            .or_else(|| c.kw("ENABLE").map(|c| c.opt("ALWAYS").opt("REPLICA")))
    }
    match sub {
        Sub::ColumnSet => column(c).and_then(|c| c.kw("SET")).is_some_and(|c| {
            c.one_of(&["STATISTICS", "STORAGE", "COMPRESSION", "NOT NULL"])
                .is_some()
                || c.group().is_some_and(|(c, _)| c.end())
        }),
        Sub::ColumnDefault => column(c).and_then(|c| c.kw("SET DEFAULT")).is_some(),
        Sub::Identity => column(c)
            .and_then(|c| c.kw("ADD GENERATED"))
            .and_then(|c| c.one_of(&["ALWAYS", "BY DEFAULT"]))
            .and_then(|c| c.kw("AS IDENTITY"))
            .is_some_and(|c| c.end() || c.group().is_some_and(|(c, _)| c.end())),
        Sub::ReplicaIdentity => c
            .kw("REPLICA IDENTITY")
            .and_then(|c| c.one_of(&["FULL", "NOTHING", "DEFAULT"]))
            .is_some_and(Cursor::end),
        Sub::IndexUse => c
            .kw("REPLICA IDENTITY USING INDEX")
            .or_else(|| c.kw("CLUSTER ON"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        Sub::ForceRowSecurity => c.kw("FORCE ROW LEVEL SECURITY").is_some_and(Cursor::end),
        Sub::EnableRowSecurity => c.kw("ENABLE ROW LEVEL SECURITY").is_some_and(Cursor::end),
        Sub::Attach => c
            .kw("ATTACH PARTITION")
            .and_then(Cursor::name)
            .is_some_and(partition_bound),
        Sub::Constraint => c.kw("ADD CONSTRAINT").and_then(Cursor::name).is_some(),
        Sub::Trigger => enable(c)
            .and_then(|c| c.kw("TRIGGER"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        Sub::Rule => enable(c)
            .and_then(|c| c.kw("RULE"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
    }
}

/// `DEFAULT`, or `FOR VALUES IN (...)`, `FROM (...) TO (...)`, `WITH (MODULUS n,
/// REMAINDER n)` of constants, as pg_dump writes bounds: nothing in them is evaluated.
fn partition_bound(c: Cursor) -> bool {
    if c.kw("DEFAULT").is_some_and(Cursor::end) {
        return true;
    }
    let Some(c) = c.kw("FOR VALUES") else {
        return false;
    };
    fn constants(tokens: &[Token]) -> bool {
        tokens.iter().all(|token| match token {
            Token::Str {
                kind: StrKind::Standard,
                ..
            }
            | Token::Number(_) => true,
            Token::Op(o) => o == "," || o == "-",
            Token::Word(w) => [
                "MINVALUE",
                "MAXVALUE",
                "TRUE",
                "FALSE",
                "NULL",
                "MODULUS",
                "REMAINDER",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k)),
            _ => false,
        })
    }
    fn group(c: Cursor<'_>) -> Option<Cursor<'_>> {
        c.group()
            .filter(|(_, inner)| constants(inner))
            .map(|(c, _)| c)
    }
    c.kw("IN")
        .or_else(|| c.kw("WITH"))
        .and_then(group)
        .or_else(|| {
            c.kw("FROM")
                .and_then(group)
                .and_then(|c| c.kw("TO"))
                .and_then(group)
        })
        .is_some_and(Cursor::end)
}

/// `SELECT pg_catalog.<function>(<arguments>);`, the only calls pg_dump writes: each argument
/// a string (`'text'` matches any standard string; `'0-9'` a string of digits), a number
/// (`0-9`: any integer, `-0-9`: a signed one), or the word given.
fn call(tokens: &[Token], function: &str, arguments: &[&str]) -> bool {
    let [select, schema, dot, name, open, rest @ ..] = tokens else {
        return false;
    };
    if !(select.is_word("select")
        && schema.is_word("pg_catalog")
        && dot.is_op(".")
        && name.is_word(function)
        && open.is_op("("))
    {
        return false;
    }
    let mut rest = rest;
    for (n, want) in arguments.iter().enumerate() {
        if n > 0 {
            match rest {
                [comma, more @ ..] if comma.is_op(",") => rest = more,
                _ => return false,
            }
        }
        let (matched, more) = match (*want, rest) {
            (
                "'text'",
                [Token::Str {
                    kind: StrKind::Standard,
                    ..
                }, more @ ..],
            ) => (true, more),
            (
                "'0-9'",
                [Token::Str {
                    kind: StrKind::Standard,
                    text,
                    ..
                }, more @ ..],
            ) => (digits(text), more),
            ("-0-9", [minus, Token::Number(n), more @ ..]) if minus.is_op("-") => (digits(n), more),
            ("0-9" | "-0-9", [Token::Number(n), more @ ..]) => (digits(n), more),
            (word, [token, more @ ..]) => (
                token.is_word(word) || matches!(token, Token::Number(n) if n == word),
                more,
            ),
            _ => (false, rest),
        };
        if !matched {
            return false;
        }
        rest = more;
    }
    matches!(rest, [close, end] if close.is_op(")") && end.is_op(";"))
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The statements pg_dump writes into an entry of type `kind`, besides [`anywhere`]'s.
fn allowed(kind: &str, c: Cursor, tokens: &[Token]) -> bool {
    use Sub::*;
    let create = |what: &[&str]| {
        c.kw("CREATE")
            .map(|c| c.opt("OR REPLACE"))
            .and_then(|c| c.one_of(what))
    };
    let alter_named = |what: &str, then: &str| {
        c.kw(what)
            .and_then(Cursor::name)
            .and_then(|c| c.kw(then))
            .is_some_and(|c| c.one_clause())
    };
    match kind {
        "TABLE" => {
            create(&["TABLE", "UNLOGGED TABLE"])
                .and_then(Cursor::name)
                // CREATE TABLE ... AS runs a query; PARTITION OF evaluates its bounds.
                .is_some_and(|c| !c.has("AS") && !c.has_pair("PARTITION", "OF"))
                || alter_table(c, &[ColumnSet, ReplicaIdentity, ForceRowSecurity, Attach])
        }
        "TABLE ATTACH" => alter_table(c, &[Attach]),
        "DEFAULT" => {
            alter_table(c, &[ColumnDefault])
                || c.kw("ALTER VIEW")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ALTER"))
                    .map(|c| c.opt("COLUMN"))
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("SET DEFAULT"))
                    .is_some_and(|c| c.one_clause())
        }
        "SEQUENCE" => {
            create(&["SEQUENCE", "UNLOGGED SEQUENCE"])
                .and_then(Cursor::name)
                .is_some_and(|c| {
                    c.rest().iter().all(|item| {
                        matches!(item, Item::Token(Token::Word(_) | Token::Number(_)))
                            || matches!(item, Item::Token(t) if t.is_op("-"))
                    })
                })
                || alter_table(c, &[Identity])
        }
        "SEQUENCE OWNED BY" => c
            .kw("ALTER SEQUENCE")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("OWNED BY"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "SEQUENCE SET" => {
            call(tokens, "setval", &["'text'", "-0-9", "true"])
                || call(tokens, "setval", &["'text'", "-0-9", "false"])
        }
        "INDEX" => {
            create(&["INDEX", "UNIQUE INDEX"])
                .and_then(Cursor::name)
                .and_then(|c| c.kw("ON"))
                .map(|c| c.opt("ONLY"))
                .and_then(Cursor::name)
                .is_some()
                || alter_table(c, &[IndexUse])
                || c.kw("ALTER INDEX")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ALTER"))
                    .map(|c| c.opt("COLUMN"))
                    .and_then(|c| match c.next() {
                        Some(Item::Token(Token::Number(_))) => Some(c.step()),
                        _ => None,
                    })
                    .and_then(|c| c.kw("SET STATISTICS"))
                    .is_some()
        }
        "INDEX ATTACH" => c
            .kw("ALTER INDEX")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("ATTACH PARTITION"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" => {
            alter_table(c, &[Constraint, IndexUse]) || alter_named("ALTER DOMAIN", "ADD CONSTRAINT")
        }
        "VIEW" => create(&["VIEW", "RECURSIVE VIEW"])
            .and_then(Cursor::name)
            .is_some(),
        "MATERIALIZED VIEW" => {
            // With data, CREATE MATERIALIZED VIEW runs its query; pg_dump fills it later.
            create(&["MATERIALIZED VIEW"])
                .and_then(Cursor::name)
                .is_some_and(|c| {
                    let rest = c.rest();
                    rest.len() >= 3
                        && matches!(&rest[rest.len() - 3..], [Item::Token(w), Item::Token(n), Item::Token(d)]
                            if w.is_word("with") && n.is_word("no") && d.is_word("data"))
                })
                || c.kw("ALTER MATERIALIZED VIEW")
                    .and_then(Cursor::name)
                    .map(|c| subcommand(c, ColumnSet) && c.one_clause())
                    .unwrap_or(false)
        }
        "MATERIALIZED VIEW DATA" => c
            .kw("REFRESH MATERIALIZED VIEW")
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => {
            create(&["FUNCTION", "PROCEDURE", "AGGREGATE"])
                .and_then(Cursor::name)
                .and_then(Cursor::group)
                .is_some()
                || c.one_of(&["ALTER FUNCTION", "ALTER PROCEDURE"])
                    .and_then(Cursor::name)
                    .and_then(Cursor::group)
                    .and_then(|(c, _)| c.kw("DEPENDS ON EXTENSION"))
                    .and_then(Cursor::name)
                    .is_some_and(Cursor::end)
        }
        "OPERATOR" | "OPERATOR CLASS" | "OPERATOR FAMILY" => {
            c.kw("CREATE OPERATOR").is_some()
                || c.kw("ALTER OPERATOR FAMILY")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("USING"))
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ADD"))
                    .is_some()
        }
        "CAST" => c.kw("CREATE CAST").and_then(Cursor::group).is_some(),
        "CONVERSION" => c
            .kw("CREATE")
            .map(|c| c.opt("DEFAULT"))
            .and_then(|c| c.kw("CONVERSION"))
            .is_some(),
        "TYPE" | "SHELL TYPE" => c.kw("CREATE TYPE").and_then(Cursor::name).is_some(),
        "DOMAIN" => c.kw("CREATE DOMAIN").and_then(Cursor::name).is_some(),
        "COLLATION" => c.kw("CREATE COLLATION").and_then(Cursor::name).is_some(),
        // Schema elements (`CREATE SCHEMA s CREATE TABLE ...`) are not written.
        "SCHEMA" => c
            .kw("CREATE SCHEMA")
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "EXTENSION" => c
            .kw("CREATE EXTENSION")
            .map(|c| c.opt("IF NOT EXISTS"))
            .and_then(Cursor::name)
            .map(|c| c.opt("WITH"))
            .map(|c| c.kw("SCHEMA").and_then(Cursor::name).unwrap_or(c))
            .is_some_and(Cursor::end),
        "COMMENT" => c
            .kw("COMMENT ON")
            .filter(|c| {
                c.one_of(&["DATABASE", "ROLE", "TABLESPACE", "SUBSCRIPTION"])
                    .is_none()
            })
            .is_some_and(|c| {
                let rest = c.rest();
                rest.len() >= 2
                    && match &rest[rest.len() - 2..] {
                        [Item::Token(is), Item::Token(value)] => {
                            is.is_word("is")
                                && (value.is_word("null")
                                    || matches!(
                                        value,
                                        Token::Str {
                                            kind: StrKind::Standard,
                                            ..
                                        }
                                    ))
                        }
                        _ => false,
                    }
            }),
        "TEXT SEARCH CONFIGURATION"
        | "TEXT SEARCH DICTIONARY"
        | "TEXT SEARCH PARSER"
        | "TEXT SEARCH TEMPLATE" => {
            c.kw("CREATE TEXT SEARCH").is_some()
                || c.kw("ALTER TEXT SEARCH CONFIGURATION")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("ADD MAPPING FOR"))
                    .is_some()
        }
        "TRIGGER" => {
            create(&["TRIGGER", "CONSTRAINT TRIGGER"])
                .and_then(Cursor::name)
                .is_some()
                || alter_table(c, &[Trigger])
        }
        "RULE" => {
            create(&["RULE"]).and_then(Cursor::name).is_some()
                || c.kw("CREATE OR REPLACE VIEW")
                    .and_then(Cursor::name)
                    .is_some()
                || alter_table(c, &[Rule])
        }
        "POLICY" => c.kw("CREATE POLICY").and_then(Cursor::name).is_some(),
        "ROW SECURITY" => alter_table(c, &[EnableRowSecurity]),
        "PUBLICATION" => c.kw("CREATE PUBLICATION").and_then(Cursor::name).is_some(),
        "PUBLICATION TABLE" => alter_named("ALTER PUBLICATION", "ADD TABLE"),
        "PUBLICATION TABLES IN SCHEMA" => c
            .kw("ALTER PUBLICATION")
            .and_then(Cursor::name)
            .and_then(|c| c.kw("ADD TABLES IN SCHEMA"))
            .and_then(Cursor::name)
            .is_some_and(Cursor::end),
        "STATISTICS" => {
            c.kw("CREATE STATISTICS").and_then(Cursor::name).is_some()
                || c.kw("ALTER STATISTICS")
                    .and_then(Cursor::name)
                    .and_then(|c| c.kw("SET STATISTICS"))
                    .is_some()
        }
        // A large object made, then its contents written in a transaction of their own.
        "BLOB" | "BLOB METADATA" | "LARGE OBJECT" => call(tokens, "lo_create", &["'0-9'"]),
        "BLOBS" | "LARGE OBJECTS" => {
            is(tokens, &["BEGIN", ";"])
                || is(tokens, &["COMMIT", ";"])
                || call(tokens, "lo_open", &["'0-9'", "131072"])
                || call(tokens, "lowrite", &["0", "'text'"])
                || call(tokens, "lo_close", &["0"])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of `sql`, read as psql reads them.
    pub fn parse(sql: &str) -> Vec<Statement> {
        let mut lexer = psqlscan::Lexer::default();
        for line in sql.split_inclusive('\n') {
            lexer.line(line.as_bytes());
        }
        assert_eq!(lexer.take_refusal(), None, "{sql}");
        lexer.take_statements().collect()
    }

    fn check(kind: &str, sql: &str) -> Result<(), String> {
        let statements = parse(sql);
        assert_eq!(statements.len(), 1, "{sql}");
        entry_statement(kind, &statements[0])
    }

    #[test]
    fn entries_hold_what_pg_dump_writes_for_their_type() {
        for (kind, sql) in [
            ("TABLE", "CREATE TABLE public.t (\n    id integer NOT NULL,\n    d text DEFAULT 'a;b'::text\n)\nPARTITION BY RANGE (id);"),
            ("TABLE", "CREATE UNLOGGED TABLE s.\"T\" (k text) WITH (fillfactor='80');"),
            ("TABLE", "CREATE TABLE extra.typed OF extra.pair;"),
            ("TABLE", "ALTER TABLE ONLY extra.site ALTER COLUMN score SET (n_distinct=100);"),
            ("TABLE", "ALTER TABLE ONLY extra.site ALTER COLUMN note SET STATISTICS 500;"),
            ("TABLE", "ALTER TABLE ONLY extra.site REPLICA IDENTITY FULL;"),
            ("TABLE", "ALTER TABLE extra.site OWNER TO postgres;"),
            ("TABLE", "ALTER TABLE ONLY extra.event ATTACH PARTITION extra.event_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"),
            ("TABLE ATTACH", "ALTER TABLE ONLY extra.bucket ATTACH PARTITION extra.bucket_0 FOR VALUES WITH (modulus 2, remainder 0);"),
            ("TABLE ATTACH", "ALTER TABLE ONLY extra.event ATTACH PARTITION extra.event_rest DEFAULT;"),
            ("TABLE", "SET default_tablespace = '';"),
            ("COMMENT", "SET default_table_access_method = heap;"),
            ("DEFAULT", "ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);"),
            ("DEFAULT", "ALTER TABLE ONLY public.t ALTER COLUMN a SET DEFAULT ARRAY['x', 'y'];"),
            ("SEQUENCE", "CREATE SEQUENCE public.s\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1;"),
            ("SEQUENCE", "ALTER TABLE public.t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (\n    SEQUENCE NAME public.t_id_seq\n    START WITH 1\n);"),
            ("SEQUENCE OWNED BY", "ALTER SEQUENCE public.s OWNED BY public.t.id;"),
            ("SEQUENCE SET", "SELECT pg_catalog.setval('public.t_id_seq', 7, true);"),
            ("SEQUENCE SET", "SELECT pg_catalog.setval('public.\"Odd\"', -3, false);"),
            ("INDEX", "CREATE INDEX i ON ONLY public.t USING btree (lower(name)) WHERE (a > 1);"),
            ("INDEX", "CREATE UNIQUE INDEX i ON public.t USING btree (a, b);"),
            ("INDEX", "ALTER TABLE public.t CLUSTER ON i;"),
            ("INDEX ATTACH", "ALTER INDEX public.p_idx ATTACH PARTITION public.p_1_idx;"),
            ("CONSTRAINT", "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);"),
            ("FK CONSTRAINT", "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES public.u(id) DEFERRABLE INITIALLY DEFERRED;"),
            ("CHECK CONSTRAINT", "ALTER DOMAIN extra.label\n    ADD CONSTRAINT label_short CHECK ((length(VALUE) < 100)) NOT VALID;"),
            ("VIEW", "CREATE VIEW public.v AS\n SELECT t.a,\n    'a;b'::text AS odd,\n    tags[1:2] AS first\n   FROM public.t;"),
            ("MATERIALIZED VIEW", "CREATE MATERIALIZED VIEW extra.m AS\n SELECT 1 AS one\n  WITH NO DATA;"),
            ("MATERIALIZED VIEW DATA", "REFRESH MATERIALIZED VIEW extra.m;"),
            ("FUNCTION", "CREATE FUNCTION public.f(p bigint) RETURNS integer\n    LANGUAGE sql STABLE\n    AS $$ SELECT 1; $$;"),
            ("FUNCTION", "CREATE FUNCTION extra.s(a integer) RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT (a + 1);\nEND;"),
            ("PROCEDURE", "CREATE PROCEDURE extra.p(IN k text)\n    LANGUAGE sql\n    BEGIN ATOMIC\n INSERT INTO t (k) VALUES (p.k);\n SELECT CASE WHEN true THEN 1 ELSE 2 END AS \"case\";\nEND;"),
            ("AGGREGATE", "CREATE AGGREGATE extra.total(integer) (\n    SFUNC = extra.add,\n    STYPE = integer\n);"),
            ("OPERATOR", "CREATE OPERATOR extra.=== (\n    FUNCTION = extra.pair_eq\n);"),
            ("CAST", "CREATE CAST (extra.pair AS text) WITH FUNCTION extra.pair_text(extra.pair);"),
            ("TYPE", "CREATE TYPE extra.status AS ENUM (\n    'a',\n    'b'\n);"),
            ("DOMAIN", "CREATE DOMAIN extra.positive AS integer\n\tCONSTRAINT c CHECK ((VALUE > 0));"),
            ("COLLATION", "CREATE COLLATION public.natural_sort (provider = icu, locale = 'und-u-kn-true');"),
            ("SCHEMA", "CREATE SCHEMA extra;"),
            ("SCHEMA", "ALTER SCHEMA extra OWNER TO postgres;"),
            ("EXTENSION", "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;"),
            ("COMMENT", "COMMENT ON TABLE public.t IS 'sites; with a ''quote''';"),
            ("COMMENT", "COMMENT ON FUNCTION public.f(p bigint) IS 'x';"),
            ("COMMENT", "COMMENT ON LARGE OBJECT 424242 IS 'a greeting';"),
            ("TEXT SEARCH CONFIGURATION", "ALTER TEXT SEARCH CONFIGURATION extra.e\n    ADD MAPPING FOR asciiword WITH english_stem;"),
            ("TRIGGER", "CREATE TRIGGER t BEFORE UPDATE ON extra.site FOR EACH ROW EXECUTE FUNCTION extra.touch();"),
            ("TRIGGER", "ALTER TABLE extra.rack DISABLE TRIGGER rack_check;"),
            ("RULE", "CREATE RULE r AS\n    ON DELETE TO extra.scratch DO INSTEAD NOTHING;"),
            ("POLICY", "CREATE POLICY p ON extra.rack USING (true) WITH CHECK ((units < 100));"),
            ("ROW SECURITY", "ALTER TABLE extra.rack ENABLE ROW LEVEL SECURITY;"),
            ("PUBLICATION", "CREATE PUBLICATION p WITH (publish = 'insert, update');"),
            ("PUBLICATION TABLE", "ALTER PUBLICATION p ADD TABLE ONLY extra.rack;"),
            ("STATISTICS", "CREATE STATISTICS extra.s (dependencies) ON site_id, units FROM extra.rack;"),
            ("BLOB", "SELECT pg_catalog.lo_create('424242');"),
            ("BLOB METADATA", "ALTER LARGE OBJECT 424242 OWNER TO postgres;"),
            ("BLOBS", "BEGIN;"),
            ("BLOBS", "SELECT pg_catalog.lo_open('424242', 131072);"),
            ("BLOBS", "SELECT pg_catalog.lowrite(0, '\\x68656c6c6f');"),
            ("BLOBS", "SELECT pg_catalog.lo_close(0);"),
            ("BLOBS", "COMMIT;"),
        ] {
            assert_eq!(check(kind, sql), Ok(()), "{kind}: {sql}");
        }
        let copy = parse("COPY public.t (id) FROM stdin;\n");
        assert_eq!(entry_statement("TABLE DATA", &copy[0]), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        for (kind, sql, found) in [
            (
                "TABLE",
                "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$;",
                "`DO $$",
            ),
            (
                "TABLE",
                "SELECT 1;",
                "`SELECT 1;`, which pg_dump never writes into a TABLE entry",
            ),
            ("TABLE", "CREATE TABLE t AS SELECT f();", "TABLE entry"),
            (
                "TABLE",
                "CREATE TABLE t (a int) AS SELECT 1;",
                "TABLE entry",
            ),
            (
                "TABLE",
                "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (f());",
                "TABLE entry",
            ),
            (
                "TABLE",
                "ALTER TABLE t ALTER COLUMN a TYPE int USING f(a);",
                "TABLE entry",
            ),
            (
                "TABLE",
                "ALTER TABLE t OWNER TO x, ALTER COLUMN a TYPE int USING f(a);",
                "TABLE entry",
            ),
            (
                "TABLE ATTACH",
                "ALTER TABLE ONLY p ATTACH PARTITION c FOR VALUES IN (f());",
                "ATTACH",
            ),
            (
                "TABLE",
                "SELECT pg_catalog.set_config('search_path', 'evil', false);",
                "set_config",
            ),
            (
                "TABLE",
                "SET standard_conforming_strings = off;",
                "SET standard",
            ),
            ("TABLE", "SET client_encoding = 'SJIS';", "client_encoding"),
            ("TABLE", "RESET ALL;", "RESET"),
            (
                "TABLE",
                "DROP DATABASE IF EXISTS victim WITH (FORCE);",
                "a DROP DATABASE statement, which acts beyond the database",
            ),
            (
                "INDEX",
                "ALTER ROLE dev SET search_path = evil;",
                "an ALTER ROLE statement",
            ),
            (
                "TABLE",
                "GRANT ALL ON TABLE t TO public;",
                "a GRANT statement",
            ),
            (
                "ACL",
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;",
                "a REVOKE statement",
            ),
            ("TABLE", "SET ROLE admin;", "SET ROLE"),
            ("TABLE", "SET SESSION AUTHORIZATION admin;", "SET SESSION"),
            (
                "TABLE",
                "COPY public.t TO '/tmp/out';",
                "a COPY to or from a file or program",
            ),
            (
                "TABLE",
                "COPY public.t FROM PROGRAM 'id';",
                "a COPY to or from a file or program",
            ),
            ("INDEX", "COPY public.t (id) FROM stdin;", "INDEX entry"),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval('s', 1, true); ",
                "",
            ),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval('s', f(), true);",
                "SEQUENCE SET",
            ),
            (
                "SEQUENCE SET",
                "SELECT public.setval('s', 1, true);",
                "SEQUENCE SET",
            ),
            (
                "SEQUENCE SET",
                "SELECT pg_catalog.setval(E's', 1, true);",
                "SEQUENCE SET",
            ),
            (
                "BLOBS",
                "SELECT pg_catalog.lo_export(0, '/tmp/x');",
                "BLOBS",
            ),
            (
                "BLOB",
                "SELECT pg_catalog.lo_create('1'), pg_catalog.pg_sleep(1);",
                "BLOB",
            ),
            (
                "MATERIALIZED VIEW",
                "CREATE MATERIALIZED VIEW m AS SELECT f();",
                "MATERIALIZED VIEW",
            ),
            (
                "SCHEMA",
                "CREATE SCHEMA s CREATE TABLE t (a int);",
                "SCHEMA",
            ),
            ("COMMENT", "COMMENT ON DATABASE postgres IS 'x';", "COMMENT"),
            ("EXTENSION", "CREATE EXTENSION dblink;", ""),
            ("FUNCTION", "CALL extra.bump(1);", "CALL"),
            (
                "TABLE",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;",
                "TABLE entry",
            ),
            (
                "EVENT TRIGGER",
                "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f();",
                "EVENT TRIGGER entry",
            ),
        ] {
            let result = check(kind, sql);
            if found.is_empty() {
                assert_eq!(result, Ok(()), "{kind}: {sql}");
                continue;
            }
            let what = result.expect_err(sql);
            assert!(what.contains(found), "{kind}: {sql}: {what}");
        }
    }

    #[test]
    fn the_header_holds_settings_pg_dump_writes_once_each() {
        let mut header = Header::default();
        for sql in [
            "SET statement_timeout = 0;",
            "SET transaction_timeout = 0;",
            "SET client_encoding = 'UTF8';",
            "SET standard_conforming_strings = on;",
            "SELECT pg_catalog.set_config('search_path', '', false);",
            "SET check_function_bodies = false;",
            "SET xmloption = content;",
            "SET client_min_messages = warning;",
            "SET row_security = off;",
        ] {
            assert_eq!(header.statement(&parse(sql)[0]), Ok(()), "{sql}");
        }
        assert_eq!(header.finish(), Ok(()));
        assert_eq!(header.client_encoding.as_deref(), Some("UTF8"));
        for (sql, found) in [
            (
                "SET standard_conforming_strings = off;",
                "standard_conforming_strings = on",
            ),
            (
                "SET client_encoding = 'SJIS';",
                "not an encoding a PostgreSQL server has",
            ),
            ("SET client_encoding = 'sjis';", "not an encoding"),
            ("SET client_encoding = 'BIG5';", "not an encoding"),
            ("SET client_encoding = E'UTF8';", "only session settings"),
            ("SET search_path = evil;", "only session settings"),
            ("SET ROLE postgres;", "only session settings"),
            (
                "CREATE ROLE netpoint_injected;",
                "holds `CREATE ROLE netpoint_injected;` before its first table-of-contents entry",
            ),
            (
                "SELECT pg_catalog.set_config('search_path', 'evil', false);",
                "only session settings",
            ),
            (
                "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
                "only session settings",
            ),
            ("DO $$ BEGIN END $$;", "only session settings"),
        ] {
            let mut header = Header::default();
            let what = header.statement(&parse(sql)[0]).expect_err(sql);
            assert!(what.contains(found), "{sql}: {what}");
        }
        let mut twice = Header::default();
        let set = &parse("SET client_encoding = 'UTF8';")[0];
        assert_eq!(twice.statement(set), Ok(()));
        assert!(twice.statement(set).unwrap_err().contains("a second time"));
        let mut without = Header::default();
        assert_eq!(without.statement(set), Ok(()));
        assert!(without
            .finish()
            .unwrap_err()
            .contains("standard_conforming_strings"));
    }
}
