//! What the statements of a plain dump are, read the way PostgreSQL's lexer reads them
//! (strings, quoted names, dollar quotes and comments skipped): pg_dump writes no statement
//! that acts outside the database it loads into, so an import refuses a file that has one.

/// Statements, by their first two words, that a plain pg_dump of one database never writes
/// and that act beyond it: other databases, roles, tablespaces, the server's configuration,
/// the role the session runs as.
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Code,
    Quoted { escapes: bool },
    Name,
    Dollar(Vec<u8>),
    Comment(u32),
}

/// Reads a dump's lines outside `COPY` data, one after another, and remembers the first
/// statement that a dump of one database would not hold.
#[derive(Debug)]
pub struct Guard {
    state: State,
    /// The first two words of the statement being read, upper-cased.
    words: Vec<String>,
    word: Vec<u8>,
    /// The first foreign statement found: the line it starts on (counted from 1) and its
    /// first words.
    pub found: Option<(u64, String)>,
    line: u64,
    starts_at: u64,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard {
            state: State::Code,
            words: Vec::new(),
            word: Vec::new(),
            found: None,
            line: 0,
            starts_at: 0,
        }
    }
}

impl Guard {
    /// Feeds line `number` (counted from 1, with its newline). `COPY ... FROM stdin;` lines and the data that
    /// follows them are the caller's to skip; a `COPY` statement that reaches here is one that
    /// pg_dump does not write (`COPY ... TO` a file or program), and counts as foreign.
    pub fn line(&mut self, number: u64, line: &[u8]) {
        self.line = number;
        let mut at = 0;
        while at < line.len() {
            let byte = line[at];
            let next = line.get(at + 1).copied();
            match &mut self.state {
                State::Comment(depth) => {
                    if byte == b'*' && next == Some(b'/') {
                        *depth -= 1;
                        at += 1;
                        if *depth == 0 {
                            self.state = State::Code;
                        }
                    } else if byte == b'/' && next == Some(b'*') {
                        *depth += 1;
                        at += 1;
                    }
                }
                State::Quoted { escapes } => {
                    if *escapes && byte == b'\\' {
                        at += 1;
                    } else if byte == b'\'' {
                        if next == Some(b'\'') {
                            at += 1;
                        } else {
                            self.state = State::Code;
                        }
                    }
                }
                State::Name => {
                    if byte == b'"' {
                        if next == Some(b'"') {
                            at += 1;
                        } else {
                            self.end_word();
                            self.state = State::Code;
                        }
                    } else {
                        self.word.push(byte);
                    }
                }
                State::Dollar(tag) => {
                    if line[at..].starts_with(tag) {
                        at += tag.len() - 1;
                        self.state = State::Code;
                    }
                }
                State::Code => at = self.code(line, at),
            }
            at += 1;
        }
    }

    /// One byte of code at `at`; returns the index of the last byte it used.
    fn code(&mut self, line: &[u8], at: usize) -> usize {
        let byte = line[at];
        let next = line.get(at + 1).copied();
        if byte.is_ascii_alphanumeric() || byte == b'_' || (byte == b'$' && !self.word.is_empty()) {
            if self.words.is_empty() && self.word.is_empty() {
                self.starts_at = self.line;
            }
            self.word.push(byte);
            return at;
        }
        let escapes = byte == b'\'' && matches!(self.word.as_slice(), b"E" | b"e");
        self.end_word();
        match byte {
            b'-' if next == Some(b'-') => return line.len(),
            b'/' if next == Some(b'*') => {
                self.state = State::Comment(1);
                return at + 1;
            }
            b'\'' => self.state = State::Quoted { escapes },
            b'"' => {
                if self.words.is_empty() {
                    self.starts_at = self.line;
                }
                self.state = State::Name;
            }
            b'$' => {
                let tag_end = line[at + 1..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .map(|n| at + 1 + n);
                if let Some(end) = tag_end.filter(|&end| line[end] == b'$') {
                    self.state = State::Dollar(line[at..=end].to_vec());
                    return end;
                }
            }
            b';' => self.end_statement(),
            _ => {}
        }
        at
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let word = String::from_utf8_lossy(&self.word).to_ascii_uppercase();
        self.word.clear();
        if self.words.len() < 2 {
            self.words.push(word);
            if self.found.is_none() && self.foreign() {
                self.found = Some((self.starts_at, self.words.join(" ")));
            }
        }
    }

    /// Whether the words read so far start a foreign statement.
    fn foreign(&self) -> bool {
        let first = self.words[0].as_str();
        if first == "COPY" {
            return true;
        }
        FOREIGN.iter().any(|(verb, objects)| {
            *verb == first
                && (objects.is_empty()
                    || self
                        .words
                        .get(1)
                        .is_some_and(|object| objects.contains(&object.as_str())))
        })
    }

    fn end_statement(&mut self) {
        self.end_word();
        if let Some((start, words)) = &mut self.found {
            // `DROP` alone was foreign only once its object was known.
            if *start == self.starts_at && self.words.len() == 2 {
                *words = self.words.join(" ");
            }
        }
        self.words.clear();
    }

    /// The first foreign statement, once the input has ended.
    pub fn finish(mut self) -> Option<(u64, String)> {
        self.end_statement();
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_foreign(sql: &str) -> Option<(u64, String)> {
        let mut guard = Guard::default();
        for (n, line) in sql.split_inclusive('\n').enumerate() {
            guard.line(n as u64 + 1, line.as_bytes());
        }
        guard.finish()
    }

    #[test]
    fn what_pg_dump_writes_passes() {
        let dump = "SET statement_timeout = 0;\n\
            SELECT pg_catalog.set_config('search_path', '', false);\n\
            -- DROP DATABASE in a comment\n/* and DROP ROLE /* nested */ here */\n\
            CREATE FUNCTION public.f() RETURNS void LANGUAGE plpgsql AS $_$\nBEGIN\n  DROP DATABASE x;\nEND\n$_$;\n\
            COMMENT ON TABLE public.t IS 'it; DROP DATABASE y; ''quoted''';\n\
            ALTER TABLE ONLY public.t ALTER COLUMN d SET DEFAULT E'a\\'; DROP ROLE z; ';\n\
            CREATE TABLE public.\"DROP DATABASE\" (id integer, a$b text);\n\
            SET default_tablespace = '';\n\
            ALTER TABLE public.t OWNER TO netbox;\n";
        assert_eq!(first_foreign(dump), None);
    }

    #[test]
    fn statements_beyond_the_database_are_found_however_written() {
        for (sql, line) in [
            ("SELECT 1;\nDROP DATABASE victim;\n", 2),
            ("SELECT 1; drop\n  database\n victim;\n", 1),
            ("SELECT 1; /* x */ DROP /* y */ DATABASE \"victim\";", 1),
            ("CREATE ROLE evil SUPERUSER;", 1),
            ("ALTER SYSTEM SET fsync = off;", 1),
            ("SET ROLE admin;", 1),
            ("SET SESSION AUTHORIZATION admin;", 1),
            ("GRANT admin TO dev;", 1),
            ("COPY public.t TO '/tmp/out';", 1),
            ("COPY public.t FROM PROGRAM 'id';", 1),
            ("SELECT 'x';\nREASSIGN OWNED BY a TO b;", 2),
        ] {
            let found = first_foreign(sql);
            assert_eq!(found.as_ref().map(|f| f.0), Some(line), "{sql}: {found:?}");
        }
        assert_eq!(
            first_foreign("SELECT 1;\nDROP DATABASE victim WITH (FORCE);\nSELECT 2;\n")
                .map(|f| f.1),
            Some("DROP DATABASE".to_string())
        );
    }
}
