//! `blastnet plan <layout>`: the CRLB accuracy map and coverage of a node
//! layout (the planner is `blastnet_lab::plan`).

use std::path::PathBuf;

use blastnet_lab::plan::{report_for, Overrides};

/// Arguments of `blastnet plan`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Layout file (TOML, or JSON when named *.json): `[[nodes]]` id, lat, lon, alt_m, plus `[options]`.
    pub layout: PathBuf,
    /// Also write every grid cell as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Override `options.charge_kg` (kg TNT equivalent).
    #[arg(long)]
    pub charge_kg: Option<f64>,
    /// Override `options.pick_sigma_s` (1-sigma onset pick error, seconds).
    #[arg(long)]
    pub pick_sigma_s: Option<f64>,
    /// Override `options.grid_extent_m` (half-width of the square grid, metres).
    #[arg(long)]
    pub extent_m: Option<f64>,
    /// Override `options.grid_step_m` (cell size, metres).
    #[arg(long)]
    pub step_m: Option<f64>,
}

/// Run `blastnet plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let over = Overrides {
        charge_kg: args.charge_kg,
        pick_sigma_s: args.pick_sigma_s,
        extent_m: args.extent_m,
        step_m: args.step_m,
    };
    let text = report_for(&args.layout, &over, args.csv.as_deref())?;
    super::print_out(&text)
}
