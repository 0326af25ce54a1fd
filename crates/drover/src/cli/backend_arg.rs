//! `--backend [KIND=]URL[,slots=N][,max_concurrent=N][,max_loaded=N]...`,
//! the command line's way to say what a `[[backends]]` table says. Without
//! a kind, the hub detects it from the server. Checked here, so a mistake
//! is reported by quoting the flag as typed.

use drover_backends::{BackendKind, Endpoint, redact};
use drover_hub::BackendSpec;

/// Every option `--backend` takes after its URL, as `serve --help` lists
/// them (a test keeps the two the same).
pub const OPTIONS: [&str; 13] = [
    "slots",
    "max_concurrent",
    "max_loaded",
    "probe",
    "responses",
    "messages",
    "memory",
    "slot_buffer",
    "system",
    "margin",
    "name",
    "ca_file",
    "api_key",
];

pub fn parse(arg: &str) -> Result<BackendSpec, String> {
    // The flag may carry a key or a password: never repeat it whole.
    let shown = redact(arg.split(",api_key=").next().unwrap_or(arg));
    let lower = arg.trim_start().to_ascii_lowercase();
    let (kind, rest) = if lower.starts_with("http://") || lower.starts_with("https://") {
        ("", arg.trim_start())
    } else {
        let (kind, rest) = arg.split_once('=').ok_or_else(|| {
            format!(
                "--backend {shown:?}: expected URL or KIND=URL, for example \
                 http://10.0.0.102:1234 or lmstudio=http://10.0.0.102:1234"
            )
        })?;
        kind.parse::<BackendKind>()
            .map_err(|e| format!("--backend {shown:?}: {e}"))?;
        (kind, rest)
    };
    let mut parts = rest.split(',');
    let url = parts.next().unwrap_or_default().trim();
    if url.is_empty() {
        return Err(format!("--backend {shown:?}: the URL is missing"));
    }
    Endpoint::parse(url).map_err(|e| format!("--backend {shown:?}: {e}"))?;
    let mut config = BackendSpec {
        name: None,
        kind: kind.trim().to_string(),
        url: url.to_string(),
        slots: None,
        model_slots: Default::default(),
        api_key: None,
        ..BackendSpec::default()
    };
    for opt in parts {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| format!("--backend {shown:?}: option {opt:?} should be key=value"))?;
        match k.trim() {
            "slots" => {
                let n: u32 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--backend {shown:?}: slots must be a whole number above 0")
                })?;
                config.slots = Some(n);
            }
            "max_concurrent" | "max_loaded" => {
                let n: u32 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!(
                        "--backend {shown:?}: {} must be a whole number above 0",
                        k.trim()
                    )
                })?;
                if k.trim() == "max_loaded" {
                    config.max_loaded = Some(n);
                } else {
                    config.max_concurrent = Some(n);
                }
            }
            "probe" => match v.trim() {
                p @ ("list" | "generate") => config.probe = Some(p.to_string()),
                other => {
                    return Err(format!(
                        "--backend {shown:?}: probe {other:?} is not known (list, generate)"
                    ));
                }
            },
            "responses" | "messages" => {
                let on = match v.trim() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    other => {
                        return Err(format!(
                            "--backend {shown:?}: {k} must be true or false, not {other:?}"
                        ));
                    }
                };
                if k.trim() == "responses" {
                    config.responses = Some(on);
                } else {
                    config.messages = Some(on);
                }
            }
            "memory" | "slot_buffer" | "system" | "margin" => {
                let n = drover_core::size::parse(v)
                    .map_err(|e| format!("--backend {shown:?}: {k}: {e}"))?;
                match k.trim() {
                    "memory" => config.memory = Some(n),
                    "slot_buffer" => config.slot_buffer = Some(n),
                    "system" => config.system = Some(n),
                    _ => config.margin = Some(n),
                }
            }
            "name" => config.name = Some(v.trim().to_string()),
            "ca_file" => config.ca_file = Some(v.trim().into()),
            "api_key" => config.api_key = Some(v.trim().to_string()),
            other => {
                return Err(format!(
                    "--backend {shown:?}: unknown option {other:?} (known: {})",
                    OPTIONS.join(", ")
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kind_url_and_options() {
        let b = parse("lmstudio=http://10.0.0.102:1234").unwrap();
        assert_eq!(
            (b.kind.as_str(), b.url.as_str()),
            ("lmstudio", "http://10.0.0.102:1234")
        );
        let b = parse("openai=http://h:8000/v1,slots=8,name=gpu1").unwrap();
        assert_eq!(b.slots, Some(8));
        assert_eq!(b.name.as_deref(), Some("gpu1"));
        let b =
            parse("openai=http://h:11434,max_concurrent=4,probe=generate,messages=false").unwrap();
        assert_eq!(b.max_concurrent, Some(4));
        let limited = parse("http://h:11434,max_loaded=2").unwrap();
        assert_eq!(limited.max_loaded, Some(2));
        assert!(parse("http://h:11434,max_loaded=0").is_err());
        assert_eq!(b.probe.as_deref(), Some("generate"));
        assert_eq!(b.messages, Some(false));
    }

    #[test]
    fn a_url_alone_leaves_the_kind_to_detection() {
        let b = parse("http://10.0.0.5:8080,slots=2").unwrap();
        assert_eq!(
            (b.kind.as_str(), b.url.as_str()),
            ("", "http://10.0.0.5:8080")
        );
        assert_eq!(b.slots, Some(2));
        assert_eq!(parse("HTTP://h:1").unwrap().kind, "");
    }

    #[test]
    fn names_the_problem() {
        for (arg, want) in [
            ("x", "expected URL or KIND=URL"),
            ("openai=", "URL is missing"),
            ("openai=http://x,slots=0", "slots"),
            ("openai=http://x,color=red", "unknown option"),
            ("openai=http://x,max_concurrent=0", "max_concurrent"),
            ("openai=http://x,probe=ping", "probe \"ping\""),
            (
                "openai=http://x,messages=maybe",
                "messages must be true or false",
            ),
            ("lmstudo=http://x", "unknown backend kind \"lmstudo\""),
            ("openai=10.0.0.1:1234", "missing scheme"),
        ] {
            let err = parse(arg).unwrap_err();
            assert!(err.contains(want), "{arg}: {err}");
            assert!(err.starts_with("--backend \""), "{arg}: {err}");
        }
    }

    #[test]
    fn a_bad_flag_never_shows_its_secrets() {
        for arg in [
            "openai=http://u:pw@h:1,color=red",
            "openai=http://h:1,slots=0,api_key=sk-secret",
        ] {
            let err = parse(arg).unwrap_err();
            assert!(!err.contains("pw") && !err.contains("sk-secret"), "{err}");
        }
    }
}
