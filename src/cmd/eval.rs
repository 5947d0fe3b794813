//! `blastnet eval`: detection, timing and classification quality of the node
//! detector (`blastnet_lab::eval`); `--train FILE` fits the classifier instead.

use std::path::PathBuf;

use anyhow::{Context, Result};
use blastnet_lab::eval::{default_data_dir, load_config, train_model, EvalOptions};

/// Arguments of `blastnet eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory holding `shotspotter-pittsburgh-dev/` and `sounds-dev/`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Synthetic evaluation scenes per sample rate (60 s each).
    #[arg(long, default_value_t = 20)]
    pub scenes: usize,
    /// Hours of noise plus distractors for the false-alarm rate.
    #[arg(long, default_value_t = 4.0)]
    pub noise_hours: f64,
    /// Detector config as JSON (any subset of `DetectorConfig` fields); defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Skip the synthetic, sounds-dev or false-alarm parts (comma list: synth,shotspotter,sfx,noise).
    #[arg(long, default_value = "")]
    pub skip: String,
    /// Train the classifier and write the model JSON to this file instead of evaluating.
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Evaluate with this model JSON instead of the compiled-in one.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// Run `blastnet eval`.
pub fn run(args: Args) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    let config = load_config(args.config.as_deref()).context("--config")?;
    if let Some(out) = &args.train {
        return train_model(&data, out, &config);
    }
    let opts = EvalOptions {
        data,
        scenes: args.scenes,
        noise_hours: args.noise_hours,
        config,
        skip: args.skip.split(',').map(|s| s.trim().to_owned()).collect(),
        model: args.model,
    };
    blastnet_lab::eval::run(&opts)
}
