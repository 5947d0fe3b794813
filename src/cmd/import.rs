//! `blastnet import` (issue #7).

/// Arguments of `blastnet import`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet import`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet import` is not built yet (issue #7)")
}
