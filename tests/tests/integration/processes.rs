//! The processes the test bed starts end with their parent however it ends: xtask and the tests
//! leave no Envoy, IdP or service behind (a closed terminal, `timeout`, `| head`, a crash).

use meshwright_testbed::proc::Proc;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "MESHWRIGHT_PROC_PARENT";

/// Not a test of its own: run by the test below as the parent process. It starts a child the
/// way the bed does, prints the child's pid and waits to be killed.
#[test]
fn proc_parent_role() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    let child = Proc::spawn("sleeper", cmd, &dir.path().join("sleeper.log")).unwrap();
    // On a line of its own: libtest has printed the test's name without a newline.
    println!("\nmeshwright-child-pid {}", child.pid());
    std::thread::sleep(Duration::from_secs(600));
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn children_die_with_their_parent_whatever_signal_ends_it() {
    for (name, sig) in [
        ("SIGKILL", libc::SIGKILL),
        ("SIGTERM", libc::SIGTERM),
        ("SIGHUP", libc::SIGHUP),
        ("SIGINT", libc::SIGINT),
    ] {
        let mut parent = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "processes::proc_parent_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = parent.stdout.take().unwrap();
        let pid: u32 = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("meshwright-child-pid ")
                    .and_then(|p| p.trim().parse().ok())
            })
            .expect("the parent reports its child");
        assert!(alive(pid), "{name}: the child runs");
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(parent.id() as i32, sig) };
        let _ = parent.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "{name}: the child outlived its parent");
    }
}
