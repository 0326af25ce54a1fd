//! `drover agent install` and `drover serve install`: a systemd unit and
//! an environment file (a launchd plist on macOS) that run this binary as
//! a service, written where the system looks for them, and what to run
//! next. `--dry-run` only prints them. The environment file holds the
//! secrets (a join token, an admin key): it is made readable by its owner
//! only, and the unit reads it rather than naming them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::files::write_whole;

#[derive(clap::Args, Clone)]
pub struct InstallArgs {
    /// Print what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the unit goes (default: /etc/systemd/system; on macOS,
    /// ~/Library/LaunchAgents).
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// The environment file (default: /etc/drover/agent.env or
    /// /etc/drover/drover.env).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The drover binary the service runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct AgentInstallArgs {
    #[command(flatten)]
    pub install: InstallArgs,
    /// The hub's URL.
    #[arg(long)]
    pub hub: String,
    /// A join token for its first start (kept in the environment file).
    #[arg(long)]
    pub token: Option<String>,
    /// The agent's config file (its services).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How the hub shows this machine.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Clone)]
pub struct ServeInstallArgs {
    #[command(flatten)]
    pub install: InstallArgs,
    /// The hub's config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the hub listens.
    #[arg(long)]
    pub listen: Option<String>,
}

/// What an install writes: the service definition and its environment.
struct Plan {
    unit_path: PathBuf,
    unit: String,
    env_path: PathBuf,
    env: String,
    next: String,
}

fn binary(asked: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match asked {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().context("cannot tell where this binary is")?,
    };
    let path = path
        .canonicalize()
        .with_context(|| format!("no binary at {}", path.display()))?;
    Ok(path)
}

/// A value for an environment file, quoted the way systemd reads it.
fn env_line(key: &str, value: &str) -> anyhow::Result<String> {
    if value.contains(['\n', '\r']) {
        bail!("{key} cannot hold a line break");
    }
    let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!("{key}=\"{quoted}\"\n"))
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// A systemd unit that runs `binary` with `args`, its environment from
/// `env_file`, restarted whenever it stops, its state in
/// `/var/lib/{state}`.
fn systemd_unit(
    description: &str,
    binary: &Path,
    args: &str,
    env_file: &str,
    state: &str,
) -> anyhow::Result<String> {
    let exe = absolute(binary)?;
    if exe.contains(char::is_whitespace) {
        bail!("the binary's path {exe:?} has a space: install it somewhere without one");
    }
    Ok(format!(
        "[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile={env_file}
ExecStart={exe} {args}
Restart=always
RestartSec=2
StateDirectory={state}
Environment=XDG_STATE_HOME=/var/lib
# SIGTERM to drover, which stops what it runs in order; whatever is left
# after the timeout is killed.
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"
    ))
}

/// A launchd agent that runs `binary` with `args`, its environment from
/// `env` (launchd reads no environment files), kept alive.
fn launchd_plist(
    label: &str,
    binary: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<String> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut program = format!("    <string>{}</string>\n", esc(&absolute(binary)?));
    for a in args {
        program.push_str(&format!("    <string>{}</string>\n", esc(a)));
    }
    let mut vars = String::new();
    for (k, v) in env {
        vars.push_str(&format!(
            "    <key>{}</key>\n    <string>{}</string>\n",
            esc(k),
            esc(v)
        ));
    }
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{label}</string>
  <key>ProgramArguments</key>
  <array>
{program}  </array>
  <key>EnvironmentVariables</key>
  <dict>
{vars}  </dict>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <true/>
</dict>
</plist>
"#
    ))
}

fn mac() -> bool {
    cfg!(target_os = "macos")
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set: say where the plist goes with --unit-dir")
}

/// What one kind of service is called where it is installed.
struct Kind {
    /// launchd's label.
    label: &'static str,
    /// systemd's unit, and its state directory under /var/lib.
    unit: &'static str,
    description: &'static str,
    env_file: &'static str,
    env_header: &'static str,
    /// Arguments systemd's unit adds (where a system service keeps data).
    system_args: &'static [&'static str],
}

const AGENT: Kind = Kind {
    label: "dev.drover.agent",
    unit: "drover-agent",
    description: "drover node agent",
    env_file: "/etc/drover/agent.env",
    env_header: "# drover agent: read by drover-agent.service\n",
    system_args: &[],
};

const HUB: Kind = Kind {
    label: "dev.drover.hub",
    unit: "drover",
    description: "drover hub",
    env_file: "/etc/drover/drover.env",
    env_header: "# drover hub: read by drover.service (DROVER_ADMIN_KEY and other DROVER_* settings go here)\n",
    system_args: &["--data-dir", "/var/lib/drover"],
};

/// What installing `kind` writes: `args` for the binary, `vars` for its
/// environment.
fn plan(
    kind: &Kind,
    install: &InstallArgs,
    args: &[String],
    vars: &[(String, String)],
) -> anyhow::Result<Plan> {
    let bin = binary(install.binary.as_deref())?;
    if let Some(bad) = args.iter().find(|a| a.contains(char::is_whitespace)) {
        bail!("{bad:?} has a space, which a unit's command line cannot carry");
    }
    if mac() {
        let dir = match &install.unit_dir {
            Some(d) => d.clone(),
            None => home()?.join("Library/LaunchAgents"),
        };
        let unit_path = dir.join(format!("{}.plist", kind.label));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return Ok(Plan {
            unit: launchd_plist(kind.label, &bin, &args, vars)?,
            next: format!("launchctl load -w {}", unit_path.display()),
            unit_path,
            env_path: PathBuf::new(),
            env: String::new(),
        });
    }
    let env_path = install
        .env_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(kind.env_file));
    let dir = install
        .unit_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/systemd/system"));
    let mut env = kind.env_header.to_string();
    for (k, v) in vars {
        env.push_str(&env_line(k, v)?);
    }
    let mut cli: Vec<&str> = args.iter().take(1).map(String::as_str).collect();
    cli.extend(kind.system_args);
    cli.extend(args.iter().skip(1).map(String::as_str));
    Ok(Plan {
        unit: systemd_unit(
            kind.description,
            &bin,
            &cli.join(" "),
            &absolute(&env_path)?,
            kind.unit,
        )?,
        unit_path: dir.join(format!("{}.service", kind.unit)),
        env_path,
        env,
        next: format!(
            "systemctl daemon-reload && systemctl enable --now {}",
            kind.unit
        ),
    })
}

pub fn agent(args: AgentInstallArgs) -> anyhow::Result<()> {
    let mut vars = vec![("DROVER_HUB".to_string(), args.hub.clone())];
    if let Some(token) = &args.token {
        vars.push(("DROVER_JOIN_TOKEN".into(), token.clone()));
    }
    if let Some(config) = &args.config {
        vars.push(("DROVER_AGENT_CONFIG".into(), absolute(config)?));
    }
    let mut cli = vec!["agent".to_string()];
    if let Some(name) = &args.name {
        cli.extend(["--name".to_string(), name.clone()]);
    }
    carry_out(
        &plan(&AGENT, &args.install, &cli, &vars)?,
        args.install.dry_run,
    )
}

pub fn serve(args: ServeInstallArgs) -> anyhow::Result<()> {
    let mut vars = Vec::new();
    if let Some(config) = &args.config {
        vars.push(("DROVER_CONFIG".to_string(), absolute(config)?));
    }
    let mut cli = vec!["serve".to_string()];
    if let Some(listen) = &args.listen {
        cli.extend(["--listen".to_string(), listen.clone()]);
    }
    carry_out(
        &plan(&HUB, &args.install, &cli, &vars)?,
        args.install.dry_run,
    )
}

fn carry_out(plan: &Plan, dry_run: bool) -> anyhow::Result<()> {
    let has_env = !plan.env.is_empty();
    if dry_run {
        let mut out = format!("# {}\n{}", plan.unit_path.display(), plan.unit);
        if has_env {
            out.push_str(&format!(
                "\n# {} (0600)\n{}",
                plan.env_path.display(),
                plan.env
            ));
        }
        out.push_str(&format!("\n# then: {}\n", plan.next));
        return super::jobs::say(&out);
    }
    let root = || "(run it as root?)";
    write_whole(&plan.unit_path, plan.unit.as_bytes(), 0o644).with_context(root)?;
    let mut said = format!("wrote {}\n", plan.unit_path.display());
    if has_env {
        write_whole(&plan.env_path, plan.env.as_bytes(), 0o600).with_context(root)?;
        said.push_str(&format!(
            "wrote {} (readable by its owner only)\n",
            plan.env_path.display()
        ));
    }
    said.push_str(&format!("now run: {}\n", plan.next));
    super::jobs::say(&said)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_environment_value_is_quoted_and_a_line_break_refused() {
        assert_eq!(
            env_line("K", r#"a "b" \c"#).unwrap(),
            "K=\"a \\\"b\\\" \\\\c\"\n"
        );
        assert!(env_line("K", "a\nb").is_err());
    }

    #[test]
    fn the_plist_runs_the_binary_with_its_environment() {
        let plist = launchd_plist(
            "dev.drover.agent",
            Path::new("/usr/local/bin/drover"),
            &["agent"],
            &[("DROVER_HUB".into(), "http://hub:8700/?a&b".into())],
        )
        .unwrap();
        assert!(
            plist.contains("<string>/usr/local/bin/drover</string>\n    <string>agent</string>")
        );
        assert!(
            plist.contains("<key>DROVER_HUB</key>\n    <string>http://hub:8700/?a&amp;b</string>")
        );
        assert!(plist.contains("<key>KeepAlive</key>\n  <true/>"));
    }
}
