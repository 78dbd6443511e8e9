//! Plain-SQL dumps edited line by line and made reproducible: run-dependent lines removed,
//! settings an older server lacks dropped, and (for fixtures) rows in a stable order. Data
//! lines inside `COPY ... FROM stdin` blocks are never altered.

use std::io::{self, BufRead, Read, Write};

use super::{
    copy::{copy_target, is_copy_start},
    entry_header::entry_kind,
};

/// Streams a plain `pg_dump` through, dropping the lines that change from run to run:
/// `\restrict` / `\unrestrict` keys and the `-- Dumped from/by` version comments, each
/// with the blank line that follows it. Returns the bytes written.
pub fn normalise(input: impl BufRead, mut output: impl Write) -> io::Result<u64> {
    let mut written = 0;
    let mut filter = Filter::default();
    for line in split_lines(input) {
        let line = line?;
        if filter.keep(&line) {
            output.write_all(&line)?;
            written += line.len() as u64;
        }
    }
    output.flush()?;
    Ok(written)
}

pub fn normalise_str(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    normalise(text.as_bytes(), &mut out).expect("writing to memory");
    String::from_utf8(out).expect("input was UTF-8")
}

/// Like [`normalise`], and also sorts the rows of every `COPY` block, so that the same data
/// dumps to the same bytes whatever the physical order of the rows. Rows are ordered by their
/// first column (numerically when it is an integer, as ids are), then by the whole line.
pub fn normalise_sorted(input: impl BufRead, mut output: impl Write) -> io::Result<u64> {
    let mut written = 0;
    let mut filter = Filter::default();
    let mut rows: Option<Vec<Vec<u8>>> = None;
    let mut emit = |line: &[u8], output: &mut dyn Write| -> io::Result<()> {
        output.write_all(line)?;
        written += line.len() as u64;
        Ok(())
    };
    for line in split_lines(input) {
        let line = line?;
        match rows.as_mut() {
            Some(block) if line.as_slice() == b"\\.\n" => {
                block.sort_by(|a, b| row_key(a).cmp(&row_key(b)).then_with(|| a.cmp(b)));
                for row in block.iter() {
                    emit(row, &mut output)?;
                }
                filter.keep(&line);
                emit(&line, &mut output)?;
                rows = None;
            }
            Some(block) => block.push(line),
            None => {
                if filter.keep(&line) {
                    emit(&line, &mut output)?;
                }
                if is_copy_start(&line) {
                    rows = Some(Vec::new());
                }
            }
        }
    }
    output.flush()?;
    Ok(written)
}

/// Session settings a dump may set that older servers do not know, with the major that
/// introduced each.
const NEW_SETTINGS: &[(u32, &str)] = &[(17, "SET transaction_timeout ")];

/// The `SET` lines a server of `major` would reject.
pub fn settings_unknown_to(major: u32) -> Vec<&'static str> {
    NEW_SETTINGS
        .iter()
        .filter(|(since, _)| *since > major)
        .map(|(_, line)| *line)
        .collect()
}

/// [`normalise`] as a reader, for streaming a dump from `pg_dump` straight into `psql`;
/// also drops the `SET` lines starting with any of `drop_settings`.
pub fn normalising_reader<R: Read>(input: R, drop_settings: Vec<&'static str>) -> impl Read {
    edit_lines(input, normaliser(drop_settings))
}

/// The line editor behind [`normalising_reader`], to combine with others in one pass.
pub fn normaliser(drop_settings: Vec<&'static str>) -> impl FnMut(&mut Vec<u8>) -> Next {
    let mut filter = Filter {
        drop_settings,
        ..Filter::default()
    };
    move |line| {
        let copy = is_copy_start(line);
        if !filter.keep(line) {
            line.clear();
        }
        // Rows are kept as they are; the filter only needs to see the `\.` that ends them.
        if copy {
            Next::SkipRows
        } else {
            Next::Line
        }
    }
}

/// What a line editor wants after the line it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Line,
    /// The line started a `COPY` block whose rows this editor leaves alone: they may pass
    /// untouched, and the editor is next given the `\.` that ends them.
    SkipRows,
}

impl Next {
    /// Rows are skipped only when every editor of a pass skips them.
    pub fn and(self, other: Next) -> Next {
        match (self, other) {
            (Next::SkipRows, Next::SkipRows) => Next::SkipRows,
            _ => Next::Line,
        }
    }
}

/// A reader that passes its input on line by line (each with its `\n`), letting `edit`
/// rewrite every line in place; a line left empty is dropped. Rows of a `COPY` block that
/// `edit` skips are passed on in bulk, without being split into lines.
pub fn edit_lines<R: Read, F: FnMut(&mut Vec<u8>) -> Next>(input: R, edit: F) -> impl Read {
    LineEditor {
        input: io::BufReader::with_capacity(1 << 20, input),
        edit,
        line: Vec::new(),
        pos: 0,
        skipping: false,
        run: 0,
    }
}

struct LineEditor<R, F> {
    input: io::BufReader<R>,
    edit: F,
    line: Vec<u8>,
    pos: usize,
    /// Inside a `COPY` block whose rows pass untouched, at the start of a line unless
    /// `run` is left.
    skipping: bool,
    /// Bytes of whole rows known to come before the block's `\.`, not yet passed on.
    run: usize,
}

const END_OF_COPY: &[u8] = b"\\.\n";

impl<R: Read, F: FnMut(&mut Vec<u8>) -> Next> LineEditor<R, F> {
    /// Measures the next run of whole rows in the buffer; false when the buffer holds no
    /// whole row (the block's end, or a row longer than the buffer, comes next).
    fn next_run(&mut self) -> io::Result<bool> {
        let buffered = self.input.fill_buf()?;
        if buffered.starts_with(END_OF_COPY) {
            return Ok(false);
        }
        self.run = match memchr::memmem::find(buffered, b"\n\\.\n") {
            Some(at) => at + 1,
            None => memchr::memrchr(b'\n', buffered).map_or(0, |at| at + 1),
        };
        Ok(self.run > 0)
    }

    /// Reads one line into `self.line` and lets `edit` see it unless it is a skipped row.
    fn next_line(&mut self) -> io::Result<bool> {
        self.line.clear();
        self.pos = 0;
        if self.input.read_until(b'\n', &mut self.line)? == 0 {
            return Ok(false);
        }
        if !self.line.ends_with(b"\n") {
            self.line.push(b'\n');
        }
        if self.skipping && self.line != END_OF_COPY {
            return Ok(true);
        }
        self.skipping = (self.edit)(&mut self.line) == Next::SkipRows;
        Ok(true)
    }
}

impl<R: Read, F: FnMut(&mut Vec<u8>) -> Next> Read for LineEditor<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            if self.pos < self.line.len() {
                let n = (self.line.len() - self.pos).min(buf.len() - written);
                buf[written..written + n].copy_from_slice(&self.line[self.pos..self.pos + n]);
                self.pos += n;
                written += n;
            } else if self.skipping && (self.run > 0 || self.next_run()?) {
                let buffered = self.input.fill_buf()?;
                let n = self.run.min(buf.len() - written);
                buf[written..written + n].copy_from_slice(&buffered[..n]);
                self.input.consume(n);
                self.run -= n;
                written += n;
            } else if !self.next_line()? {
                break;
            }
        }
        Ok(written)
    }
}

fn row_key(row: &[u8]) -> (u8, i128, &[u8]) {
    let first = row
        .split(|&b| b == b'\t' || b == b'\n')
        .next()
        .unwrap_or(row);
    match std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse::<i128>().ok())
    {
        Some(number) => (0, number, first),
        None => (1, 0, first),
    }
}

/// A writer that counts the rows of each `COPY` block passing through it on the way to
/// `inner`, by the table name the `COPY` line gives: what a bundle's manifest records.
pub struct RowCounter<W> {
    inner: W,
    /// The current line; inside a block only its first bytes, enough to see `\.`.
    line: Vec<u8>,
    in_copy: bool,
    table: String,
    rows: u64,
    after_dashes: bool,
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Table-of-contents entries seen, as [`crate::plain::toc::scan`] counts them.
    pub entries: u64,
}

impl<W: Write> RowCounter<W> {
    pub fn new(inner: W) -> RowCounter<W> {
        RowCounter {
            inner,
            line: Vec::new(),
            in_copy: false,
            table: String::new(),
            rows: 0,
            after_dashes: false,
            counts: Default::default(),
            entries: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (part, ends_line) = match memchr::memchr(b'\n', data) {
                Some(at) => (&data[..=at], true),
                None => (data, false),
            };
            let keep = if self.in_copy {
                part.len()
                    .min(END_OF_COPY.len() + 1 - self.line.len().min(END_OF_COPY.len() + 1))
            } else {
                part.len()
            };
            self.line.extend_from_slice(&part[..keep]);
            data = &data[part.len()..];
            if ends_line {
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        if self.in_copy {
            if self.line == END_OF_COPY {
                self.in_copy = false;
                *self
                    .counts
                    .entry(std::mem::take(&mut self.table))
                    .or_default() += self.rows;
            } else {
                self.rows += 1;
            }
        } else if is_copy_start(&self.line) {
            self.in_copy = true;
            self.table = copy_target(&self.line).unwrap_or_default();
            self.rows = 0;
        } else if self.after_dashes && entry_kind(&self.line).is_some() {
            self.entries += 1;
        }
        self.after_dashes = !self.in_copy && self.line == b"--\n";
        self.line.clear();
    }
}

impl<W: Write> Write for RowCounter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Default)]
struct Filter {
    in_copy: bool,
    drop_next_blank: bool,
    drop_settings: Vec<&'static str>,
}

impl Filter {
    fn keep(&mut self, line: &[u8]) -> bool {
        if self.in_copy {
            if line == b"\\.\n" {
                self.in_copy = false;
            }
            return true;
        }
        if std::mem::take(&mut self.drop_next_blank) && line == b"\n" {
            return false;
        }
        if is_copy_start(line) {
            self.in_copy = true;
            return true;
        }
        let run_dependent = run_dependent(line);
        if self
            .drop_settings
            .iter()
            .any(|prefix| line.starts_with(prefix.as_bytes()))
        {
            return false;
        }
        if run_dependent {
            self.drop_next_blank = true;
            return false;
        }
        true
    }
}

/// `\restrict` / `\unrestrict` keys and the `-- Dumped from/by` version comments.
fn run_dependent(line: &[u8]) -> bool {
    line.starts_with(b"\\restrict ")
        || line.starts_with(b"\\unrestrict ")
        || line.starts_with(b"-- Dumped from database version")
        || line.starts_with(b"-- Dumped by pg_dump version")
}

/// Whether a load may drop `line` (with the blank line after it): a run-dependent line, or
/// a setting an older server lacks. The guard lets such a line stand only where psql would
/// read it as a whole statement or comment, so that dropping it changes nothing else.
pub fn may_be_dropped(line: &[u8]) -> bool {
    run_dependent(line)
        || NEW_SETTINGS
            .iter()
            .any(|(_, prefix)| line.starts_with(prefix.as_bytes()))
}

/// Lines with their `\n` (the last one gets one if it lacked it), as raw bytes.
fn split_lines(mut input: impl BufRead) -> impl Iterator<Item = io::Result<Vec<u8>>> {
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                Some(Ok(line))
            }
            Err(err) => Some(Err(err)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plain::SAMPLE_DUMP as RAW;

    #[test]
    fn drops_run_dependent_lines_only() {
        let out = normalise_str(RAW);
        assert!(
            out.starts_with("--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n")
        );
        assert!(!out.contains("\\restrict AbC") && !out.contains("Dumped"));
        assert!(
            out.contains("10\t\\restrict inside data\n2\t\n\n1\tb\n\\.\n"),
            "COPY data untouched"
        );
        assert!(out.ends_with("-- PostgreSQL database dump complete\n--\n\n"));
        assert_eq!(normalise_str(&out), out, "idempotent");
        let mut streamed = String::new();
        normalising_reader(RAW.as_bytes(), Vec::new())
            .read_to_string(&mut streamed)
            .unwrap();
        assert_eq!(streamed, out);
    }

    #[test]
    fn same_data_in_another_order_sorts_the_same() {
        let mut a = Vec::new();
        normalise_sorted(RAW.as_bytes(), &mut a).unwrap();
        let shuffled = RAW.replace(
            "10\t\\restrict inside data\n2\t\n\n1\tb\n",
            "1\tb\n\n10\t\\restrict inside data\n2\t\n",
        );
        let mut b = Vec::new();
        normalise_sorted(shuffled.as_bytes(), &mut b).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert!(!text.contains("unrestrict"), "{text}");
        assert!(
            text.contains("FROM stdin;\n1\tb\n2\t\n10\t\\restrict inside data\n\n\\.\n"),
            "{text}"
        );
    }

    #[test]
    fn downgrades_drop_settings_older_servers_lack() {
        let dump =
            "SET statement_timeout = 0;\nSET transaction_timeout = 0;\nSET lock_timeout = 0;\n";
        let mut out = String::new();
        normalising_reader(dump.as_bytes(), settings_unknown_to(15))
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "SET statement_timeout = 0;\nSET lock_timeout = 0;\n");
        assert!(settings_unknown_to(17).is_empty());
    }

    /// Hands out its input `step` bytes at a time, so lines and `\\.` straddle reads.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Runs `edit_lines` with an editor that upper-cases every line it is shown and skips
    /// the rows of `COPY` blocks whose table name contains `skip`; returns the output and
    /// the lines the editor saw.
    fn edited(input: &str, step: usize, out_step: usize) -> (String, Vec<String>) {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = seen.clone();
        let mut reader = edit_lines(
            Trickle {
                data: input.as_bytes(),
                step,
            },
            move |line: &mut Vec<u8>| {
                log.borrow_mut()
                    .push(String::from_utf8_lossy(line).into_owned());
                let skip = is_copy_start(line) && line.windows(4).any(|w| w == b"skip");
                line.make_ascii_uppercase();
                if skip {
                    Next::SkipRows
                } else {
                    Next::Line
                }
            },
        );
        let mut out = Vec::new();
        let mut buf = vec![0; out_step];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let seen = seen.borrow().clone();
        (String::from_utf8(out).unwrap(), seen)
    }

    #[test]
    fn skipped_rows_pass_untouched_whatever_the_reads() {
        let rows = "1\tx\n2\t\\.\n\n3\ty \\\\.\n";
        let input = format!(
            "set a;\nCOPY public.skip (id, v) FROM stdin;\n{rows}\\.\ncopy me;\n\
             COPY public.edit (id) FROM stdin;\nrow\n\\.\nCOPY public.skip2 (id) FROM stdin;\n\\.\nend"
        );
        let expected = format!(
            "SET A;\nCOPY PUBLIC.SKIP (ID, V) FROM STDIN;\n{rows}\\.\nCOPY ME;\n\
             COPY PUBLIC.EDIT (ID) FROM STDIN;\nROW\n\\.\nCOPY PUBLIC.SKIP2 (ID) FROM STDIN;\n\\.\nEND\n"
        );
        for step in [1, 2, 3, 5, 7, 64, 4096] {
            for out_step in [1, 3, 1 << 16] {
                let (out, seen) = edited(&input, step, out_step);
                assert_eq!(out, expected, "reads of {step}, output reads of {out_step}");
                assert!(
                    !seen.iter().any(|l| l.starts_with(['1', '2', '3'])),
                    "{seen:?}"
                );
                assert!(
                    seen.contains(&"row\n".to_string()),
                    "rows of edited tables are seen"
                );
                assert_eq!(seen.iter().filter(|l| *l == "\\.\n").count(), 3, "{seen:?}");
            }
        }
    }

    #[test]
    fn skipped_rows_cut_short_still_end_in_a_newline() {
        let (out, seen) = edited("COPY public.skip (id) FROM stdin;\n1\n2", 3, 8);
        assert_eq!(out, "COPY PUBLIC.SKIP (ID) FROM STDIN;\n1\n2\n");
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn rows_are_counted_whatever_the_writes() {
        let dump = "SET x = 1;\nCOPY public.t (a) FROM stdin;\n1\n\\.5\n\\\\.\n2\n\\.\n\n\
                    COPY \"odd\"\"\".u (a) FROM stdin;\n\\.\nCOPY public.t (a) FROM stdin;\nx\n\\.\n";
        for step in [1, 2, 3, 7, 1000] {
            let mut counter = RowCounter::new(Vec::new());
            for chunk in dump.as_bytes().chunks(step) {
                counter.write_all(chunk).unwrap();
            }
            assert_eq!(
                counter.into_inner_counts(),
                [
                    ("\"odd\"\"\".u".to_string(), 0),
                    ("public.t".to_string(), 5)
                ],
                "step {step}"
            );
        }
    }

    impl<W> RowCounter<W> {
        fn into_inner_counts(self) -> Vec<(String, u64)> {
            self.counts.into_iter().collect()
        }
    }
}
