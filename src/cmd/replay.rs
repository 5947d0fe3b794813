//! `blastnet replay` (issue #7).

/// Arguments of `blastnet replay`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `blastnet replay`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`blastnet replay` is not built yet (issue #7)")
}
