//! `blastnet node` (issue #5).

/// Arguments of `blastnet node`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet node`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet node` is not built yet (issue #5)")
}
