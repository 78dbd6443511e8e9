//! A statement read as pg_dump writes it: its tokens compared with a pattern, and its shape
//! (parenthesised groups as single items) walked by a cursor.

use psqlscan::{StrKind, Token};

/// Whether `tokens` are exactly `pattern`: words compared without case, names and
/// strings as written (`'text'`).
pub(super) fn is(tokens: &[Token], pattern: &[&str]) -> bool {
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

/// A setting's value as pg_dump writes it: a word, a number or a short plain string.
pub(super) fn plain_value(value: &Token) -> bool {
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

/// A statement's tokens with every parenthesised or bracketed group as one item, and
/// without its `;`.
pub(super) struct Shape<'a> {
    pub(super) items: Vec<Item<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Item<'a> {
    Token(&'a Token),
    /// What stands between `(` and `)` (or `[` and `]`).
    Group(&'a [Token]),
}

impl<'a> Shape<'a> {
    pub(super) fn of(tokens: &'a [Token]) -> Shape<'a> {
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
pub(super) struct Cursor<'a> {
    pub(super) items: &'a [Item<'a>],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn next(&self) -> Option<Item<'a>> {
        self.items.get(self.at).copied()
    }

    pub(super) fn step(self) -> Cursor<'a> {
        Cursor {
            at: self.at + 1,
            ..self
        }
    }

    /// The keywords `words` (space-separated), in any case.
    pub(super) fn kw(self, words: &str) -> Option<Cursor<'a>> {
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
    pub(super) fn opt(self, words: &str) -> Cursor<'a> {
        self.kw(words).unwrap_or(self)
    }

    /// One of `choices`.
    pub(super) fn one_of(self, choices: &[&str]) -> Option<Cursor<'a>> {
        choices.iter().find_map(|words| self.kw(words))
    }

    /// A name, possibly qualified: `a`, `"A"`, `s.a`.
    pub(super) fn name(self) -> Option<Cursor<'a>> {
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
    pub(super) fn group(self) -> Option<(Cursor<'a>, &'a [Token])> {
        match self.next() {
            Some(Item::Group(inner)) => Some((self.step(), inner)),
            _ => None,
        }
    }

    pub(super) fn end(self) -> bool {
        self.at == self.items.len()
    }

    pub(super) fn rest(self) -> &'a [Item<'a>] {
        &self.items[self.at..]
    }

    /// Nothing follows but single tokens and groups, with no `,` between them: one
    /// subcommand, not a list of them.
    pub(super) fn one_clause(self) -> bool {
        !self
            .rest()
            .iter()
            .any(|item| matches!(item, Item::Token(token) if token.is_op(",")))
    }

    /// The keywords `first` and `second` come one after the other somewhere after this point.
    pub(super) fn has_pair(self, first: &str, second: &str) -> bool {
        self.rest().windows(2).any(|pair| {
            matches!(pair, [Item::Token(a), Item::Token(b)] if a.is_word(first) && b.is_word(second))
        })
    }

    /// The keyword `word` comes somewhere after this point, outside parentheses.
    pub(super) fn has(self, word: &str) -> bool {
        self.rest()
            .iter()
            .any(|item| matches!(item, Item::Token(token) if token.is_word(word)))
    }
}

pub(super) fn op<'a>(c: Cursor<'a>, op: &str) -> Option<Cursor<'a>> {
    match c.next() {
        Some(Item::Token(token)) if token.is_op(op) => Some(c.step()),
        _ => None,
    }
}

/// `SELECT pg_catalog.<function>(<arguments>);`, the only calls pg_dump writes: each argument
/// a string (`'text'` matches any standard string; `'0-9'` a string of digits), a number
/// (`0-9`: any integer, `-0-9`: a signed one), or the word given.
pub(super) fn call(tokens: &[Token], function: &str, arguments: &[&str]) -> bool {
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

pub(super) fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}
