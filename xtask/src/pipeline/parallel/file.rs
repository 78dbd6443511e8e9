//! Loading a plain dump file on several sessions: byte ranges of its data entries taken
//! from a shared queue.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, Read},
    sync::{mpsc, Mutex},
};

use anyhow::Context as _;
use indicatif::ProgressBar;

use crate::{
    bundle::{Pinned, PinnedReader},
    context::Context,
    pg::DbUrl,
    pipeline::budget::{jobs_within_limits, Sessions},
    pipeline::{leak_scan, load},
    plain::{
        copy,
        lines::{self},
        post_data::post_jobs,
        toc,
    },
    term,
};

use super::schedule::{feed_data, run_post_data, Event, Failure, PostData, Stoppable};

/// A checked plain dump file, loaded on several sessions.
pub struct DumpFile<'a> {
    pub pinned: &'a Pinned,
    /// Its entries.
    pub toc: &'a toc::Toc,
    /// The `SET` lines an older target would reject.
    pub drop_settings: &'a [&'static str],
    pub bar: &'a ProgressBar,
    /// The load replaces an existing database (see [`super::schedule::spawn_flush`]).
    pub replaces: bool,
    /// The columns the leak scan leaves alone.
    pub covered: &'a leak_scan::Covered,
}

impl DumpFile<'_> {
    /// Loads the file into the empty database `temp`: schema first, then table data spread
    /// over the sessions (largest tables first), then indexes and constraints side by side.
    /// Returns [`FileLoad::OneStream`], having changed nothing, when the file must be loaded
    /// in one stream. The rows are leak-scanned as they stream.
    pub fn load(&self, cx: &Context, temp: &DbUrl) -> anyhow::Result<FileLoad> {
        load_file(cx, temp, self)
    }
}

fn load_file(cx: &Context, temp: &DbUrl, file: &DumpFile) -> anyhow::Result<FileLoad> {
    let DumpFile {
        pinned,
        toc,
        drop_settings,
        bar,
        replaces,
        covered,
    } = *file;
    let jobs = cx.jobs;
    if jobs < 2 {
        return Ok(FileLoad::OneStream);
    }
    let path = &pinned.path;
    let Some(sections) = toc::sections(toc) else {
        term::detail(format!(
            "loading {} in one stream: not laid out as a whole-database pg_dump",
            path.display()
        ));
        return Ok(FileLoad::OneStream);
    };
    // At most a loading psql and a post-data session per job, and the checkpoint session.
    let sessions = jobs_within_limits(
        cx,
        jobs,
        &[Sessions {
            url: temp,
            per_job: 2,
            fixed: 1,
        }],
    );
    if sessions < 2 {
        return Ok(FileLoad::OneStream);
    }
    let read_normalised = |start: u64, end: u64| -> anyhow::Result<String> {
        let mut text = String::new();
        lines::normalising_reader(pinned.range(start, end), drop_settings.to_vec())
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text)
    };
    let header = read_normalised(0, toc.header_end)?;

    let started = std::time::Instant::now();
    bar.set_message("schema");
    let psql = load::spawn_psql_load(cx, temp)?;
    let mut pre =
        lines::normalising_reader(pinned.range(0, sections.pre_end), drop_settings.to_vec());
    load::feed_psql(temp, psql, &mut pre, &|n| bar.inc(n))?;

    phase_done("schema", &started);
    // The loaded schema tells which columns hold text.
    let scanner = leak_scan::Scanner::start(cx, temp, covered)?;
    bar.set_message("data");
    let mut sizes = HashMap::new();
    let mut ranges = Vec::new();
    for &i in &sections.data {
        let entry = &toc.entries[i];
        let mut head = vec![0; 4096.min((entry.end - entry.start) as usize)];
        pinned
            .range(entry.start, entry.end)
            .read_exact(&mut head)
            .with_context(|| format!("reading {}", path.display()))?;
        let table = String::from_utf8_lossy(&head)
            .lines()
            .find_map(|line| copy::copy_target(line.as_bytes()));
        if let Some(table) = table {
            sizes.insert(table, entry.end - entry.start);
        }
        ranges.push((entry.start, entry.end));
    }
    ranges.sort_by_key(|(start, end)| std::cmp::Reverse(end - start));
    let post = header.clone() + &read_normalised(sections.post_start, toc.len)?;
    let (post_header, jobs) = post_jobs(&post, &sizes);
    let streams = sessions.min(sections.data.len());
    let post = PostData {
        header: post_header,
        jobs,
        loading: sizes.keys().cloned().collect(),
        streams,
        flush: replaces,
    };
    let queue = Mutex::new(VecDeque::from(ranges));
    let mut loaders = Vec::new();
    for _ in 0..streams {
        loaders.push(load::spawn_psql_load(cx, temp)?);
    }
    let failure = Failure::default();
    let (tx, rx) = mpsc::channel();
    let post_result = std::thread::scope(|scope| {
        for psql in loaders {
            let (failure, queue, header, bar, tx, scanner) = (
                &failure,
                &queue,
                &header,
                bar.clone(),
                tx.clone(),
                scanner.as_ref(),
            );
            scope.spawn(move || {
                let ranges = Ranges {
                    file: pinned,
                    queue,
                    current: pinned.range(0, 0),
                    left: 0,
                };
                let ranges: Box<dyn Read> = match scanner {
                    Some(scanner) => Box::new(scanner.reader(ranges)),
                    None => Box::new(ranges),
                };
                let mut reader = Stoppable {
                    inner: &mut header
                        .as_bytes()
                        .chain(lines::edit_lines(ranges, load::loaded_marker())),
                    failure,
                };
                if let Err(err) = feed_data(temp, psql, &mut reader, &bar, &tx) {
                    failure.record(err);
                }
                let _ = tx.send(Event::StreamEnded);
            });
        }
        let result = run_post_data(cx, temp, post, sessions, (tx, rx), &failure);
        if let Err(err) = &result {
            failure.record(anyhow::anyhow!("{err:#}"));
        }
        result
    });
    failure.into_result()?;
    post_result?;
    phase_done("data, indexes and constraints", &started);
    Ok(FileLoad::Loaded(scanner.map(leak_scan::Scanner::report)))
}

/// How [`DumpFile::load`] went.
pub enum FileLoad {
    /// The file must be loaded in one stream; nothing was changed.
    OneStream,
    /// Loaded, with the leak scan of its rows (`None` when the scan is turned off).
    Loaded(Option<leak_scan::Report>),
}

pub fn phase_done(phase: &str, started: &std::time::Instant) {
    term::detail(format!(
        "{phase} loaded at {}",
        term::human_duration(started.elapsed())
    ));
}

/// Byte ranges of a file, taken one after another from a queue shared between sessions.
pub struct Ranges<'a> {
    file: &'a Pinned,
    queue: &'a Mutex<VecDeque<(u64, u64)>>,
    current: PinnedReader<'a>,
    left: u64,
}

impl Read for Ranges<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some((start, end)) = self.queue.lock().unwrap().pop_front() else {
                return Ok(0);
            };
            self.current = self.file.range(start, end);
            self.left = end - start;
        }
        let max = buf.len().min(self.left as usize);
        let n = self.current.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}
