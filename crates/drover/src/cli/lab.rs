//! `drover lab`: the scheduler in virtual time, against round robin,
//! least-connections, an oracle and the ideal, on the same seeded traces.

#[derive(clap::Args)]
pub struct LabArgs {
    /// A scenario, named for the fleet's shape and what happens to it, or
    /// "all".
    #[arg(long, default_value = "all", value_parser = scenarios())]
    pub scenario: String,
    /// Seeds every trace; the same seed gives the same tables.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stretches the steady traffic (1.0 = a few minutes of virtual time).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

/// "all" and every scenario's name, for `--help` and for clap to check.
fn scenarios() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        std::iter::once("all").chain(drover_lab::scenario_names().iter().copied()),
    )
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = if args.scenario == "all" {
        drover_lab::scenario_names().to_vec()
    } else {
        vec![args.scenario.as_str()]
    };
    for name in names {
        let reports = drover_lab::run(name, args.seed, args.scale)
            .map_err(|e| anyhow::anyhow!("{e}, or all"))?;
        for report in reports {
            println!("{report}");
        }
    }
    Ok(())
}
