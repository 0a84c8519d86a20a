//! Child processes that cannot outlive the test bed: every server the bed starts (Envoy, the
//! IdP, the shop's services) is a [`Proc`].
//!
//! - It dies with its parent: `PR_SET_PDEATHSIG(SIGKILL)` is set in the child before `exec`,
//!   so a parent killed by any signal (SIGKILL included) or by a panic takes it along. The
//!   signal fires when the *thread* that spawned the child ends, so spawn from a thread that
//!   lives as long as the child (the main thread, a test's thread, a runtime worker — never a
//!   `spawn_blocking` thread).
//! - It runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
//!   parent, which then stops its children in order ([`Proc::stop`]: SIGTERM, a grace period,
//!   SIGKILL) instead of everything dying at once.
//! - Its stdout and stderr go to one log file; [`Proc::tail`] shows the last lines, e.g. when
//!   it exits during start-up.

use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A supervised child process (see the module doc).
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({} pid {})", self.name, self.child.id())
    }
}

/// Makes `cmd` die with this process and run in its own process group (see the module doc).
pub fn tie_to_parent(cmd: &mut Command) {
    // SAFETY: between fork and exec only async-signal-safe calls are made (getpid/getppid,
    // setpgid, prctl, _exit); nothing allocates.
    let parent = std::process::id();
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

impl Proc {
    /// Starts `cmd` as `name`, its output appended to `log`.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Self> {
        Self::start(name, cmd, log, false)
    }

    /// Starts `cmd` with its stdout piped to the caller ([`Proc::take_stdout`]); stderr to
    /// `log`.
    pub fn spawn_piped(name: &str, cmd: Command, log: &Path) -> Result<Self> {
        Self::start(name, cmd, log, true)
    }

    fn start(name: &str, mut cmd: Command, log: &Path, piped: bool) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| log.display().to_string())?;
        let stdout = if piped {
            Stdio::piped()
        } else {
            Stdio::from(out.try_clone()?)
        };
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(out);
        tie_to_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            status: None,
        })
    }

    /// The child's stdout, when started with [`Proc::spawn_piped`] (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// "`name` exited (status); its last lines: …" — for start-up failures.
    pub fn exit_report(&mut self, lines: usize) -> String {
        let status = self
            .exited()
            .map_or_else(|| "still running".to_owned(), |s| s.to_string());
        format!(
            "{} exited during start-up ({status}); last lines of {}:\n{}",
            self.name,
            self.log.display(),
            self.tail(lines)
        )
    }

    fn signal(&self, sig: libc::c_int) {
        // The whole group: a launcher script's children (e.g. the PyPI envoy wrapper) too.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on our own child's process group / pid.
        unsafe {
            if libc::kill(-pid, sig) != 0 {
                libc::kill(pid, sig);
            }
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`. Returns at once if it has exited.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kills it now (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGKILL);
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The last `lines` lines of a file ("" when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

/// Ends this process's children when it is asked to stop: on SIGINT, SIGTERM or SIGHUP the
/// returned future completes (with the signal's name), so the caller can drop what it started
/// and exit. (SIGKILL cannot be caught: [`tie_to_parent`] covers it.)
pub async fn stop_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    })
}
