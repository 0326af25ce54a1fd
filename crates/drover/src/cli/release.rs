//! `drover release publish FILE --version V` and `drover release ls`:
//! builds of drover the hub keeps for node agents, each with its SHA-256;
//! `drover nodes update` (`rollout.rs`) rolls one out.

use anyhow::{Context, bail};
use bytes::Bytes;
use drover_proto::releases::{ReleaseInfo, ReleaseList};
use http::{HeaderName, HeaderValue, Method};

use super::http::{Hub, check, segment};
use super::jobs::{print_json, say};

#[derive(clap::Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub target: Hub,
    /// Print the hub's JSON instead.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(clap::Subcommand)]
pub enum ReleaseCommand {
    /// Keep a build of drover in the hub's store as version V, with its
    /// SHA-256, for `drover nodes update --version V`.
    Publish {
        /// The build: a drover binary.
        file: std::path::PathBuf,
        #[arg(long)]
        version: String,
        /// What it runs on (default: what this machine is).
        #[arg(long, default_value = std::env::consts::OS)]
        os: String,
        #[arg(long, default_value = std::env::consts::ARCH)]
        arch: String,
    },
    /// Every release the hub keeps.
    Ls,
}

pub async fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    match args.command {
        ReleaseCommand::Publish {
            file,
            version,
            os,
            arch,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if data.is_empty() {
                bail!("{} is empty", file.display());
            }
            let sha256 = super::files::sha256_hex(&data);
            let header = |name: &'static str,
                          value: &str|
             -> anyhow::Result<(HeaderName, HeaderValue)> {
                Ok((
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).with_context(|| format!("{name}: {value:?}"))?,
                ))
            };
            let headers = vec![
                header("x-drover-sha256", &sha256)?,
                header("x-drover-os", &os)?,
                header("x-drover-arch", &arch)?,
            ];
            let path = format!("/admin/releases/{}", segment(&version));
            let answer = api
                .send(Method::PUT, &path, headers, Some(Bytes::from(data)))
                .await?;
            check(answer.status, &answer.json)?;
            let kept: ReleaseInfo =
                serde_json::from_value(answer.json).context("unexpected answer")?;
            if args.json {
                return print_json(&kept);
            }
            say(&format!(
                "release {} kept: {} bytes, sha256 {}\nroll it out with drover nodes update --version {}\n",
                kept.version, kept.bytes, kept.sha256, kept.version
            ))
        }
        ReleaseCommand::Ls => {
            let (status, body) = api.call(Method::GET, "/admin/releases", None).await?;
            check(status, &body)?;
            let list: ReleaseList = serde_json::from_value(body).context("unexpected answer")?;
            if args.json {
                return print_json(&list);
            }
            if list.releases.is_empty() {
                return say(
                    "no releases: publish one with drover release publish ./drover --version V\n",
                );
            }
            let mut out = String::new();
            for r in &list.releases {
                out.push_str(&format!(
                    "{}  {}/{}  {} bytes  sha256 {}\n",
                    r.version, r.os, r.arch, r.bytes, r.sha256
                ));
            }
            say(&out)
        }
    }
}
