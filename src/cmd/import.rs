//! `blastnet import`: convert third-party recording releases into scenario folders.

use std::path::PathBuf;

/// Arguments of `blastnet import`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub source: Source,
}

/// Which release format.
#[derive(clap::Subcommand, Debug)]
pub enum Source {
    /// The public ShotSpotter live-fire release (Tech Note 098, CC BY 4.0):
    /// one scenario per test, local x/y/z mapped to WGS84 around a nominal origin.
    /// Get it with `scripts/fetch-shotspotter DIR`.
    Shotspotter {
        /// The release folder (its root, its `data/`, or one `FPn/`).
        release_dir: PathBuf,
        /// Where to write one scenario folder per test.
        out_dir: PathBuf,
    },
}

/// Run `blastnet import`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.source {
        Source::Shotspotter {
            release_dir,
            out_dir,
        } => {
            let done = blastnet_recording::import::shotspotter::import_all(&release_dir, &out_dir)?;
            let shots: usize = done
                .iter()
                .map(|s| s.manifest.truth.as_ref().map_or(0, Vec::len))
                .sum();
            for s in &done {
                println!("{}", s.dir.display());
            }
            eprintln!(
                "imported {} tests ({} shots with truth) into {}",
                done.len(),
                shots,
                out_dir.display()
            );
            Ok(())
        }
    }
}
