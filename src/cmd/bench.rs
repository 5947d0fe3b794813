//! `blastnet bench` (issue #4).

/// Arguments of `blastnet bench`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet bench`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet bench` is not built yet (issue #4)")
}
