//! `blastnet simulate` (issue #3): write a synthetic scenario folder.

use std::path::PathBuf;

use anyhow::Context;
use blastnet_simulator::{preset, write_scenario, ScenarioSpec, WriteOptions, PRESETS};

/// Arguments of `blastnet simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A named scenario (see --list-presets).
    #[arg(long, conflicts_with = "spec")]
    pub preset: Option<String>,
    /// A scenario description file (TOML; `--print-spec` shows the format).
    #[arg(long, value_name = "FILE.toml")]
    pub spec: Option<PathBuf>,
    /// Seed for noise, errors and distractors (same seed, same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No GPS position error and no clock offset or drift: the manifest is exact.
    #[arg(long)]
    pub ideal: bool,
    /// Folder of real distractor clips to mix in (e.g. $BLASTNET_DATA/sounds-dev).
    #[arg(long, value_name = "DIR")]
    pub distractors: Option<PathBuf>,
    /// Output scenario folder (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["list_presets", "print_spec"])]
    pub out: Option<PathBuf>,
    /// List the preset names and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// Print the scenario description (TOML) of --preset or --spec and exit.
    #[arg(long)]
    pub print_spec: bool,
}

/// Run `blastnet simulate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list_presets {
        for (name, what) in PRESETS {
            println!("{name:14} {what}");
        }
        return Ok(());
    }
    let spec: ScenarioSpec = match (&args.preset, &args.spec) {
        (Some(name), None) => preset(name, args.seed)?,
        (None, Some(file)) => ScenarioSpec::load(file)?,
        _ => anyhow::bail!("give either --preset NAME or --spec FILE.toml (see --list-presets)"),
    };
    if args.print_spec {
        print!("{}", spec.to_toml());
        return Ok(());
    }
    let out = args.out.context("--out DIR is required")?;
    let opts = WriteOptions {
        ideal: args.ideal,
        distractor_dir: args.distractors.clone(),
    };
    let m = write_scenario(&spec, args.seed, &opts, &out)?;
    let truth = m.truth.as_deref().unwrap_or_default();
    let count = |k: blastnet_contract::SourceKind| truth.iter().filter(|t| t.kind == k).count();
    let bytes: u64 = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!("{}", out.display());
    println!(
        "{}: {} nodes, {} explosions, {} gunshots, {} launches, {} distractors, {:.1} s, acoustic {} Hz{}, seed {}{}, {:.1} MB",
        spec.name,
        m.nodes.len(),
        count(blastnet_contract::SourceKind::Explosion),
        count(blastnet_contract::SourceKind::Gunshot),
        count(blastnet_contract::SourceKind::Launch),
        truth.iter().filter(|t| !t.kind.is_blast()).count(),
        spec.duration_s,
        spec.rates.acoustic_hz,
        if spec.rates.seismic_hz > 0 { format!(", seismic {} Hz", spec.rates.seismic_hz) } else { String::new() },
        args.seed,
        if args.ideal { ", ideal" } else { "" },
        bytes as f64 / 1e6,
    );
    Ok(())
}
