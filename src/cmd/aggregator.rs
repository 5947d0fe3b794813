//! `blastnet aggregator` (issue #6).

/// Arguments of `blastnet aggregator`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet aggregator`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet aggregator` is not built yet (issue #6)")
}
