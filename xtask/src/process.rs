//! Child processes and signals: every tool we start is known, so that an interrupt
//! (SIGINT, SIGTERM, SIGHUP) can stop it, and the run then cleans up and exits with
//! 128 + the signal's number.
//!
//! The one platform difference lives here. On Linux a child dies with us
//! (`PR_SET_PDEATHSIG`), even when we are killed with SIGKILL. Elsewhere (macOS) there is
//! no such call: a child runs in a process group of its own, which [`end_children`] ends
//! when the run exits, fails or is interrupted; what a SIGKILL leaves behind ends on its
//! own (a session's input closes with us) or is cleaned up by the next run, as temporary
//! databases and containers are.

use std::{
    io::{self, BufRead, BufReader, Read},
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering},
        Mutex,
    },
    thread,
};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Set when a signal asked us to stop; long steps stop and clean up when they see it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that did.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Steps that must not be cut short (the swap): children are left to finish them.
static CRITICAL: AtomicUsize = AtomicUsize::new(0);
/// Set when a failing run keeps a change or leaves something it could not remove.
static LEFT_BEHIND: AtomicBool = AtomicBool::new(false);
/// Processes we started, by pid: tools an interrupt stops, and holders it leaves alone.
static CHILDREN: Mutex<Vec<Started>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Started {
    pid: u32,
    /// A session that holds a lock until the run has cleaned up: an interrupt leaves it.
    holder: bool,
}

/// Starts listening for SIGINT, SIGTERM and SIGHUP on a thread of its own.
pub fn handle_signals() -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            SIGNAL.store(signal, Ordering::SeqCst);
            INTERRUPTED.store(true, Ordering::SeqCst);
            if CRITICAL.load(Ordering::SeqCst) == 0 {
                stop_children();
            }
        }
    });
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether a signal asked us to stop and no step that must finish is running.
pub fn stop_requested() -> bool {
    interrupted() && CRITICAL.load(Ordering::SeqCst) == 0
}

pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Records that this run, should it fail, does not leave everything as it found it (a change
/// it keeps, or a leftover it could not remove): its last line then says what its error
/// says, never that nothing was changed.
pub fn note_left_behind() {
    LEFT_BEHIND.store(true, Ordering::SeqCst);
}

pub fn left_behind() -> bool {
    LEFT_BEHIND.load(Ordering::SeqCst)
}

/// The exit code for an interrupted run: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
pub fn interrupt_exit_code() -> Option<u8> {
    interrupted().then(|| 128 + SIGNAL.load(Ordering::SeqCst).clamp(1, 127) as u8)
}

/// Runs `f` to its end even if a signal arrives meanwhile; the signal is acted on after.
pub fn critical<T>(f: impl FnOnce() -> T) -> T {
    CRITICAL.fetch_add(1, Ordering::SeqCst);
    let out = f();
    CRITICAL.fetch_sub(1, Ordering::SeqCst);
    out
}

/// Starts `command` as a child that dies with us (see the module's notes) and that an
/// interrupt stops.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let child = start(command, false)?;
    if interrupted() && CRITICAL.load(Ordering::SeqCst) == 0 {
        stop_children();
    }
    Ok(child)
}

/// Starts `command` as a child that dies with us but that an interrupt leaves alone: a
/// session that holds a lock until the run has cleaned up.
pub fn spawn_holder(command: &mut Command) -> io::Result<Child> {
    start(command, true)
}

fn start(command: &mut Command, holder: bool) -> io::Result<Child> {
    platform::die_with_us(command);
    let mut children = CHILDREN.lock().unwrap();
    let child = command.spawn()?;
    children.retain(|started| is_our_child(started.pid));
    children.push(Started {
        pid: child.id(),
        holder,
    });
    Ok(child)
}

/// Sends SIGTERM to every tool still running (or not yet reaped) that we started.
fn stop_children() {
    signal_children(false, libc::SIGTERM);
}

/// Ends every process we started that is still running, holders too: called once, as the
/// run exits. On Linux they would die with us anyway; elsewhere this is what ends them.
pub fn end_children() {
    signal_children(true, libc::SIGTERM);
}

fn signal_children(holders_too: bool, signal: libc::c_int) {
    for started in CHILDREN.lock().unwrap().iter() {
        if (holders_too || !started.holder) && is_our_child(started.pid) {
            platform::signal(started.pid, signal);
        }
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::{io, os::unix::process::CommandExt, process::Command};

    /// The kernel kills the child when we die, however we die.
    pub fn die_with_us(command: &mut Command) {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The child itself: it shares our process group, so that a terminal's Ctrl-C
    /// reaches it as it does any command's.
    pub fn signal(pid: u32, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the caller checked that `pid` is a child we
        // have not reaped, so it cannot name another process.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use std::{os::unix::process::CommandExt, process::Command};

    /// A process group of its own (its pid), which [`super::end_children`] ends as we
    /// exit, along with whatever the child started.
    pub fn die_with_us(command: &mut Command) {
        command.process_group(0);
    }

    /// The child's whole process group.
    pub fn signal(pid: u32, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the caller checked that `pid` is a child we
        // have not reaped, so its process group is still the one it leads.
        unsafe {
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

/// Makes `command`'s child a session of its own: it outlives this run and a terminal
/// closing, and is none of the tools [`end_children`] ends.
pub fn detach(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether a process with this pid exists (`kill(pid, 0)`, on any Unix).
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `pid` is a child of ours that has not been reaped: only then is the pid still
/// surely ours to signal.
fn is_our_child(pid: u32) -> bool {
    // SAFETY: waitid with WNOWAIT only inspects; `info` is a plain struct it fills.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// `command.spawn_tool()`: [`spawn`] at the end of a builder chain.
pub trait SpawnTool {
    fn spawn_tool(&mut self) -> io::Result<Child>;
}

impl SpawnTool for Command {
    fn spawn_tool(&mut self) -> io::Result<Child> {
        spawn(self)
    }
}

/// Reads a child's stderr on a thread, keeping the last 64 KiB.
pub fn collect_stderr(stderr: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    collect_stderr_with(stderr, |_| false)
}

/// [`collect_stderr`], except for the lines `take` takes.
pub fn collect_stderr_with(
    stderr: impl Read + Send + 'static,
    mut take: impl FnMut(&str) -> bool + Send + 'static,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut kept = String::new();
        let mut reader = BufReader::new(stderr);
        let mut raw = Vec::new();
        // Read to the end whatever the bytes: a child blocks once the pipe is full.
        while reader.read_until(b'\n', &mut raw).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&raw);
            let line = line.strip_suffix('\n').unwrap_or(&line);
            if !take(line) {
                kept.push_str(line);
                kept.push('\n');
                if kept.len() > 64 * 1024 {
                    keep_last_lines(&mut kept, 32 * 1024);
                }
            }
            raw.clear();
        }
        kept
    })
}

/// Drops the start of `text` so that about `bytes` remain, cutting after a newline (or at a
/// character boundary when no newline is near), never inside a character.
fn keep_last_lines(text: &mut String, bytes: usize) {
    let mut cut = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(newline) = text[cut..].find('\n') {
        if newline + 1 < text.len() - cut {
            cut += newline + 1;
        }
    }
    text.drain(..cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_whole_characters_and_reads_past_bad_bytes() {
        // 3-byte characters, so that the 32 KiB cut lands inside one unless it is moved.
        let line = "ошибка: 日本語のメッセージ".repeat(40);
        let mut input = Vec::new();
        for n in 0..200 {
            input.extend_from_slice(format!("{n} {line}\n").as_bytes());
        }
        input.extend_from_slice(b"bad \xff\xfe bytes\n");
        input.extend_from_slice("ERROR:  last line\n".as_bytes());
        let kept = collect_stderr(std::io::Cursor::new(input)).join().unwrap();
        assert!(kept.len() <= 64 * 1024, "{}", kept.len());
        assert!(kept.ends_with("ERROR:  last line\n"), "{kept}");
        assert!(kept.contains("bad \u{fffd}\u{fffd} bytes"));
        let first = kept.lines().next().unwrap();
        assert!(first.ends_with(&line), "{first}");

        let mut text = "é".repeat(10);
        keep_last_lines(&mut text, 5);
        assert_eq!(text, "éé");
    }

    #[test]
    fn an_interrupt_stops_tools_and_the_exit_ends_holders_too() {
        use std::os::unix::process::ExitStatusExt;
        let sleeper = || {
            let mut command = Command::new("sleep");
            command.arg("30");
            command
        };
        let mut tool = spawn(&mut sleeper()).unwrap();
        let mut holder = spawn_holder(&mut sleeper()).unwrap();
        stop_children();
        assert_eq!(tool.wait().unwrap().signal(), Some(libc::SIGTERM));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            holder.try_wait().unwrap(),
            None,
            "a holder outlives the interrupt"
        );
        assert!(alive(holder.id()));
        end_children();
        assert_eq!(holder.wait().unwrap().signal(), Some(libc::SIGTERM));
    }
}
