//! `blastnet eval` (issue #4).

/// Arguments of `blastnet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet eval` is not built yet (issue #4)")
}
