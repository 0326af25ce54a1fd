//! The first hour of a new user: the `drover` binary itself, started as a
//! person would start it, saying each problem once and plainly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn drover() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    // The test runner's own DROVER_* variables must not leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DROVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DROVER_LOG", "warn");
    // Its own key store, never the user's.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("drover-cli-test-{}-{n}", std::process::id()));
    cmd.env("DROVER_DATA_DIR", dir);
    cmd
}

/// Runs a command that should fail at start; returns its stderr. One that
/// starts instead is killed after 30 s and fails the test.
fn fails(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("it started instead of failing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "expected a clean failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Starts `drover serve ...` and returns its banner line, then stops it.
fn banner(cmd: &mut Command) -> String {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("listening on") {
                let _ = tx.send(Ok(line));
                return;
            }
        }
        let _ = tx.send(Err(seen));
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    match line {
        Ok(Ok(line)) => line,
        Ok(Err(seen)) => panic!("exited without a banner:\n{seen}"),
        Err(_) => panic!("no banner within 30 s"),
    }
}

#[test]
fn a_bad_backend_flag_is_quoted_and_said_once() {
    let err = fails(drover().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "lmstudo=http://x",
    ]));
    assert_eq!(
        err.matches("unknown backend kind \"lmstudo\"").count(),
        1,
        "{err}"
    );
    assert!(err.contains("--backend \"lmstudo=http://x\""), "{err}");
    let err = fails(drover().args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "openai=10.0.0.1:1234",
    ]));
    assert_eq!(err.matches("missing scheme").count(), 1, "{err}");
}

#[test]
fn a_bad_environment_variable_is_named() {
    let err = fails(
        drover()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DROVER_QUEUE__TIMOUT", "5s"),
    );
    assert!(
        err.contains("DROVER_QUEUE__TIMOUT") && err.contains("timout"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let err = fails(
            drover()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .env("DROVER_ADMIN_KEY", OsStr::from_bytes(b"\xff\xfe")),
        );
        assert!(
            err.contains("DROVER_ADMIN_KEY") && err.contains("UTF-8"),
            "{err}"
        );
    }
}

#[test]
fn a_numeric_admin_key_from_the_environment_is_a_key() {
    let line = banner(
        drover()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DROVER_ADMIN_KEY", "123456"),
    );
    assert!(line.contains("127.0.0.1:"), "{line}");
}

#[test]
fn listen_takes_a_host_name() {
    let line = banner(drover().args(["serve", "--listen", "localhost:0"]));
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[test]
fn beyond_loopback_needs_insecure_and_the_banner_gives_usable_urls() {
    let err = fails(drover().args(["serve", "--listen", "0.0.0.0:0"]));
    assert!(
        err.contains("--insecure") && err.contains("beyond loopback"),
        "{err}"
    );
    let line = banner(drover().args(["serve", "--listen", "0.0.0.0:0", "--insecure"]));
    assert!(line.contains("http://127.0.0.1:"), "{line}");
    assert!(!line.contains("http://0.0.0.0"), "{line}");
}

#[test]
fn plan_reproduces_seed_002s_figures_and_names_what_fits_when_asked_for_too_much() {
    let out = drover()
        .args([
            "plan",
            "--memory",
            "128G",
            "--model-size",
            "15G",
            "x6",
            "--slot-buffer",
            "3G",
            "--system",
            "8G",
            "--margin",
            "12G",
            "--response-time",
            "3s",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    for want in [
        "116G of 128G",
        "6 x 15G = 90G",
        "Slots:            6",
        "120 requests per minute",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let out = drover()
        .args([
            "plan",
            "--memory",
            "128G",
            "--model-size",
            "15G",
            "x7",
            "--slot-buffer",
            "3G",
            "--system",
            "8G",
            "--margin",
            "12G",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Does not fit"), "{text}");
    assert!(text.contains("the first 6 of 7 models"), "{text}");
    // What is missing, not a "0G left".
    assert!(text.contains("Short:            18G"), "{text}");
    assert!(!text.contains("Left:"), "{text}");
    // A small model is not "0G", one model is not "1 models".
    let out = drover()
        .args(["plan", "--memory", "8G", "--model-size", "300M"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 x 300M = 300M"), "{text}");
    assert!(!text.contains("0G"), "{text}");
    // A bad flag is clap's usage error (status 2), naming the value.
    let out = drover()
        .args(["plan", "--memory", "lots", "--model-size", "15G"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"lots\" is not a size"), "{err}");
}

#[test]
fn serve_help_names_every_backend_option() {
    // The options the parser knows, from its own complaint.
    let err = fails(drover().args(["serve", "--backend", "http://127.0.0.1:9,bogus=1"]));
    let known = err
        .split("(known: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{err}"));
    let help = drover().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for option in known.split(", ") {
        assert!(
            help.contains(&format!("{option}=")),
            "serve --help does not name {option}:\n{help}"
        );
    }
}

#[test]
fn a_port_in_use_suggests_another_drover() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = fails(drover().args(["serve", "--listen", &addr]));
    assert!(err.contains("something else listens there"), "{err}");
    assert!(err.contains("another drover?"), "{err}");
}
