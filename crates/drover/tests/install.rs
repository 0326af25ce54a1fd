//! `drover agent install` and `drover serve install`: the systemd units
//! they write pass `systemd-analyze verify`, the environment file holding
//! the join token is its owner's only, and `--dry-run` writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn drover(args: &[&str]) -> std::process::Output {
    drover_tests::command(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .output()
        .expect("drover runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `systemd-analyze verify UNIT`: what it found wrong, if anything (it
/// exits 0 on some warnings, so its output counts too).
fn verify(unit: &Path) -> String {
    let out = Command::new("systemd-analyze")
        // Its findings on standard error, not the journal.
        .env("SYSTEMD_LOG_TARGET", "console")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (scripts/setup installs systemd)");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status)
    }
}

#[test]
fn the_agents_and_the_hubs_units_pass_systemd_analyze_verify() {
    let dir = std::env::temp_dir().join(format!("drover-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let units = dir.join("units");
    let env = dir.join("etc").join("agent.env");
    let (units_s, env_s) = (units.to_str().unwrap(), env.to_str().unwrap());

    let dry = drover(&[
        "agent",
        "install",
        "--hub",
        "http://hub:8700",
        "--token",
        "drv_j_secret",
        "--unit-dir",
        units_s,
        "--env-file",
        env_s,
        "--dry-run",
    ]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let shown = text(&dry.stdout);
    assert!(shown.contains("drover-agent.service"), "{shown}");
    assert!(
        shown.contains("DROVER_JOIN_TOKEN=\"drv_j_secret\""),
        "{shown}"
    );
    assert!(!units.exists() && !env.exists(), "a dry run writes nothing");

    let made = drover(&[
        "agent",
        "install",
        "--hub",
        "http://hub:8700",
        "--token",
        "drv_j_secret",
        "--name",
        "gpu-box",
        "--unit-dir",
        units_s,
        "--env-file",
        env_s,
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let said = text(&made.stdout);
    assert!(
        said.contains("systemctl daemon-reload && systemctl enable --now drover-agent"),
        "{said}"
    );
    let unit = units.join("drover-agent.service");
    let written = std::fs::read_to_string(&unit).unwrap();
    assert!(
        written.contains(&format!("EnvironmentFile={env_s}")),
        "{written}"
    );
    assert!(written.contains(" agent --name gpu-box\n"), "{written}");
    assert!(
        !written.contains("drv_j_secret"),
        "the secret stays in the env file"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert_eq!(verify(&unit), "");

    let hub_env = dir.join("etc").join("drover.env");
    let made = drover(&[
        "serve",
        "install",
        "--listen",
        "0.0.0.0:8700",
        "--unit-dir",
        units_s,
        "--env-file",
        hub_env.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let unit = units.join("drover.service");
    let written = std::fs::read_to_string(&unit).unwrap();
    assert!(
        written.contains(" serve --data-dir /var/lib/drover --listen 0.0.0.0:8700\n"),
        "{written}"
    );
    assert_eq!(verify(&unit), "");

    // A unit systemd would refuse is caught by the same check.
    std::fs::write(
        &unit,
        written.replace("Restart=always", "Restart=sometimes"),
    )
    .unwrap();
    let found = verify(&unit);
    assert!(
        found.contains("Failed to parse service restart specifier"),
        "the check can fail: {found:?}"
    );

    // Bad input names the problem.
    let bad = drover(&[
        "agent",
        "install",
        "--hub",
        "http://h",
        "--token",
        "a\nb",
        "--dry-run",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("DROVER_JOIN_TOKEN cannot hold a line break"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
