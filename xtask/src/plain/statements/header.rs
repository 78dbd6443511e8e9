//! The session settings pg_dump writes before the first table-of-contents entry.

use psqlscan::{Statement, StrKind, Token};

use super::shape::{is, plain_value};

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
