//! `blastnet bench`: detection speed (the measurement is `blastnet_lab::bench`).

use blastnet_lab::bench::BenchOptions;

/// Arguments of `blastnet bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Length of the test stream, minutes.
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Sample rate, Hz.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Skip the aubioonset comparison.
    #[arg(long)]
    pub no_aubio: bool,
    /// Keep the WAV (its path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Rounds of the end-to-end measurements (best and median reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Run `blastnet bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = BenchOptions {
        minutes: args.minutes,
        rate: args.rate,
        no_aubio: args.no_aubio,
        keep: args.keep,
        runs: args.runs,
    };
    blastnet_lab::bench::run(&opts, |line| println!("{line}"))
}
