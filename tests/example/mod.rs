//! Running an example's real binary for end-to-end tests on loopback.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running example, stopped with SIGTERM when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// The example's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The binary of example `name`, built on first use (`cargo test` builds an example only as a
/// test harness, so a fresh checkout does not have it yet).
pub fn example_binary(name: &str) -> PathBuf {
    // Names built by this test process; the lock also keeps two tests from building at once.
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join(name);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", name, "--manifest-path"])
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("run cargo to build the {name} example: {e}"));
        assert!(status.success(), "building the {name} example failed");
        built.push(name.to_string());
    }
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

/// Starts example `name` on an ephemeral loopback port with `args`; its first line of output
/// must be `<name> listening on ADDR ...`.
pub fn start(name: &str, args: &[&str]) -> Server {
    start_limited(name, args, None)
}

/// Like [`start`], with the process's descriptor limit (`RLIMIT_NOFILE`) set to `nofile`.
pub fn start_limited(name: &str, args: &[&str], nofile: Option<u64>) -> Server {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(example_binary(name));
    cmd.args(["--addr", "127.0.0.1:0"]).args(args).stdout(Stdio::piped());
    if let Some(n) = nofile {
        let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
        // which is async-signal-safe, on a struct it owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start the {name} example: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.split_whitespace().nth(3).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("banner: {line:?}"));
    Server { child, addr }
}

/// Runs example `name` with `args`, which it must refuse at start: returns its exit code and
/// what it wrote to stderr.
pub fn refused(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(example_binary(name))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run the {name} example: {e}"));
    assert!(!out.status.success(), "{name} {args:?} started; stdout: {}", String::from_utf8_lossy(&out.stdout));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A command as a RESP multibulk array, for the Redis-protocol examples.
pub fn cmd(words: &[&[u8]]) -> Vec<u8> {
    let mut m = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        m.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        m.extend_from_slice(w);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
