//! The scheduler of a parallel load: post-data statements on their own sessions while the
//! data sessions are still loading, and the events and failure they share.

use std::{
    collections::{HashSet, VecDeque},
    io::{self, BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Mutex,
    },
    time::Duration,
};

use anyhow::bail;
use indicatif::ProgressBar;

use crate::{
    context::Context,
    pg::{self, DbUrl},
    pipeline::load,
    plain::post_data::PostJob,
    process, term,
};

/// What the sessions of a load tell the scheduler.
pub enum Event {
    /// A line an index session printed on stderr.
    Line(usize, String),
    /// An index session's stderr closed: it has exited.
    Closed(usize),
    /// A data session has loaded this table (`public.t`, as the dump names it).
    Loaded(String),
    /// A data session has finished (its failure, if any, is in [`Failure`]).
    StreamEnded,
}

/// What a session prints on stderr when it has finished a job.
pub const DONE: &str = "np:done ";

/// The post-data part of a load: its statements, and the tables whose data is on its way.
pub struct PostData {
    pub header: String,
    pub jobs: Vec<PostJob>,
    /// Tables still being loaded: indexes on them wait.
    pub loading: HashSet<String>,
    /// Data sessions still running: foreign keys and the rest wait for all of them.
    pub streams: usize,
    /// Ask for a checkpoint once the data is in; see [`spawn_flush`].
    pub flush: bool,
}

/// A session that will ask the server for a checkpoint. A load that replaces a database
/// ends by dropping the previous one, and `DROP DATABASE` forces a checkpoint that writes
/// every page of the new copy to disk while nothing else runs. Asked for when the table
/// data is in, most of that writing overlaps the index builds instead. It needs superuser
/// or `pg_checkpoint`; without them it fails quietly and nothing changes.
pub fn spawn_flush(cx: &Context, url: &DbUrl) -> anyhow::Result<Child> {
    let mut psql = load::spawn_psql_load(cx, url)?;
    // Nobody reads why a checkpoint was refused.
    drop(psql.stderr.take());
    Ok(psql)
}

pub struct Session {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub running: Option<usize>,
    pub stderr: String,
}

/// Runs the post-data jobs on up to `sessions` psql sessions on `url` while data sessions
/// are still loading: an index starts as soon as its table is in; foreign keys and the rest
/// wait for all data and all indexes. Within a stage, statements that would lock each other
/// out never run together. Stops at the first failure, here or in a data session.
pub fn run_post_data(
    cx: &Context,
    url: &DbUrl,
    mut post: PostData,
    sessions: usize,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    failure: &Failure,
) -> anyhow::Result<()> {
    let tools = &cx.tools;
    let (tx, rx) = events;
    let sessions = sessions.clamp(1, post.jobs.len().max(1));
    let mut workers = Vec::new();
    if !post.jobs.is_empty() {
        for n in 0..sessions {
            let mut child = load::spawn_psql_load(cx, url)?;
            let stderr = child.stderr.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(Event::Line(n, line)).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Event::Closed(n));
            });
            let mut stdin = child.stdin.take().unwrap();
            // A write error means psql has already gone; its stderr says why.
            let _ = stdin.write_all(post.header.as_bytes());
            workers.push(Session {
                child,
                stdin: Some(stdin),
                running: None,
                stderr: String::new(),
            });
        }
    }
    drop(tx);
    let mut flush = match post.flush {
        true => Some(spawn_flush(cx, url)?),
        false => None,
    };
    // `max_parallel_maintenance_workers` came with PostgreSQL 11.
    let tune_workers = tools.server_major(url).is_some_and(|major| major >= 11);
    let result = schedule(
        &mut post,
        &mut workers,
        &rx,
        url,
        failure,
        &mut flush,
        tune_workers,
    );
    if let Some(mut flush) = flush {
        if result.is_err() {
            let _ = flush.kill();
        }
        drop(flush.stdin.take());
        let _ = flush.wait();
    }
    for worker in &mut workers {
        drop(worker.stdin.take());
        if result.is_err() {
            let _ = worker.child.kill();
        }
    }
    for worker in &mut workers {
        let status = worker.child.wait()?;
        if result.is_ok() && !status.success() {
            bail!("restore into {url} failed while adding indexes and constraints: psql exited with {status}");
        }
    }
    result
}

pub fn schedule(
    post: &mut PostData,
    workers: &mut [Session],
    rx: &mpsc::Receiver<Event>,
    url: &DbUrl,
    failure: &Failure,
    flush: &mut Option<Child>,
    tune_workers: bool,
) -> anyhow::Result<()> {
    let jobs = &post.jobs;
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    // Stable: within a stage the largest tables first, ties (and stage 3) in dump order.
    order.sort_by_key(|&i| {
        let job = &jobs[i];
        let weight = if job.stage == 3 { 0 } else { job.weight };
        (job.stage, std::cmp::Reverse(weight))
    });
    let mut pending: VecDeque<usize> = order.into();
    loop {
        process::check_interrupted()?;
        if failure.failed.load(Ordering::SeqCst) {
            bail!("stopped: a data session failed");
        }
        let data_done = post.streams == 0;
        let mut running: Vec<usize> = workers.iter().filter_map(|w| w.running).collect();
        if pending.is_empty() && running.is_empty() && data_done {
            return Ok(());
        }
        let stage = running
            .iter()
            .chain(pending.front())
            .map(|&i| jobs[i].stage)
            .min()
            .unwrap_or(0);
        let ready = |job: &PostJob| match (&job.tables, job.stage) {
            _ if data_done => true,
            (Some(tables), 0) => tables.iter().all(|t| !post.loading.contains(t)),
            _ => false,
        };
        // Data sessions count against the jobs: indexes fill the cores they leave idle.
        let capacity = workers.len().saturating_sub(post.streams);
        for worker in workers.iter_mut().filter(|w| w.running.is_none()) {
            if running.len() >= capacity {
                break;
            }
            let Some(pos) = pending.iter().position(|&i| {
                jobs[i].stage == stage
                    && ready(&jobs[i])
                    && !running.iter().any(|&r| jobs[r].conflicts(&jobs[i]))
            }) else {
                break;
            };
            let mut job = pending.remove(pos).unwrap();
            let mut sql = String::new();
            if tune_workers && jobs[job].stage == 0 {
                // An index build's parallel workers only help while cores would idle: with
                // every session busy they cost a fifth more CPU for the same index.
                let alone = running.is_empty()
                    && post.streams == 0
                    && !pending.iter().any(|&i| {
                        jobs[i].stage == stage && ready(&jobs[i]) && !jobs[i].conflicts(&jobs[job])
                    });
                sql.push_str(match alone {
                    true => "RESET max_parallel_maintenance_workers;\n",
                    false => "SET max_parallel_maintenance_workers = 0;\n",
                });
            }
            sql.push_str(&jobs[job].sql);
            // Statements that run alone go in one batch: one round trip instead of many.
            while jobs[job].tables.is_none() {
                match pending.front() {
                    Some(&next) if jobs[next].stage == stage && jobs[next].tables.is_none() => {
                        pending.pop_front();
                        sql.push_str(&jobs[next].sql);
                        job = next;
                    }
                    _ => break,
                }
            }
            let stdin = worker.stdin.as_mut().unwrap();
            let sent = stdin
                .write_all(sql.as_bytes())
                .and_then(|()| {
                    let done = load::own_command(&format!("\\warn {DONE}{job}"));
                    stdin.write_all(format!("\n{done}").as_bytes())
                })
                .and_then(|()| stdin.flush());
            if sent.is_err() {
                // psql has stopped; its stderr, read below, says why.
                worker.stdin = None;
            }
            worker.running = Some(job);
            running.push(job);
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Line(n, line)) => match line.strip_prefix(DONE) {
                Some(_) => workers[n].running = None,
                None => {
                    workers[n].stderr.push_str(&line);
                    workers[n].stderr.push('\n');
                }
            },
            Ok(Event::Closed(n)) => {
                let message = pg::first_error(&workers[n].stderr)
                    .unwrap_or_else(|| "psql stopped unexpectedly".to_string());
                bail!(
                    "restore into {url} failed while adding indexes and constraints: {}",
                    pg::scrub(url, &message)
                );
            }
            Ok(Event::Loaded(table)) => {
                post.loading.remove(&table);
            }
            Ok(Event::StreamEnded) => {
                post.streams = post.streams.saturating_sub(1);
                if post.streams == 0 {
                    if let Some(mut stdin) = flush.as_mut().and_then(|f| f.stdin.take()) {
                        // Best effort: it only moves disk writes earlier.
                        let _ = stdin.write_all(b"checkpoint;\n");
                    }
                    let left = pending.len() + running.len();
                    term::detail(format!(
                        "table data loaded; {left} index and constraint statements to go"
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("restore into {url} failed: its sessions stopped")
            }
        }
    }
}

/// Feeds a data session, turning its "loaded" lines into events.
pub fn feed_data(
    url: &DbUrl,
    psql: Child,
    input: &mut dyn Read,
    bar: &ProgressBar,
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<u64> {
    let tx = tx.clone();
    load::feed_psql_with(url, psql, input, &|n| bar.inc(n), move |line| {
        match line.strip_prefix(load::LOADED) {
            Some(table) => {
                let _ = tx.send(Event::Loaded(table.to_string()));
                true
            }
            None => false,
        }
    })
}

/// Sessions of a load that stop early when one of them fails.
#[derive(Default)]
pub struct Failure {
    pub failed: AtomicBool,
    pub first: Mutex<Option<anyhow::Error>>,
}

impl Failure {
    pub fn record(&self, err: anyhow::Error) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            *self.first.lock().unwrap() = Some(err);
        }
    }

    pub fn check(&self) -> io::Result<()> {
        match self.failed.load(Ordering::SeqCst) {
            true => Err(io::Error::other("stopped: another session failed")),
            false => Ok(()),
        }
    }

    pub fn into_result(self) -> anyhow::Result<()> {
        match self.first.into_inner().unwrap() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// A reader that fails as soon as another session has failed.
pub struct Stoppable<'a, R: ?Sized> {
    pub inner: &'a mut R,
    pub failure: &'a Failure,
}

impl<R: Read + ?Sized> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.failure.check()?;
        self.inner.read(buf)
    }
}
