//! `blastnet plan` (issue #8).

/// Arguments of `blastnet plan`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet plan`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet plan` is not built yet (issue #8)")
}
