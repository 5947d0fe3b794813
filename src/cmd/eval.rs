//! `blastnet eval`: detection, timing and classification quality of the node
//! detector (`blastnet_lab::eval`); `--train FILE` fits the classifier
//! instead; `--locate N` judges the pipeline's locations over N random
//! scenes (`blastnet_lab::eval::locate`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use blastnet_lab::eval::locate::{locate, LocateOptions};
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
    /// Judge locations instead: replay N random scenes (seeds
    /// --seed-base..+N) through the pipeline and score them against truth.
    #[arg(long, value_name = "N")]
    pub locate: Option<u64>,
    /// First seed of --locate. Tuning seeds are 0..100; the held-back report
    /// seeds start at 10000 (never look at them while tuning).
    #[arg(long, default_value_t = 0, requires = "locate")]
    pub seed_base: u64,
    /// Scenes replayed at once by --locate.
    #[arg(long, default_value_t = 2, requires = "locate")]
    pub threads: usize,
}

/// Run `blastnet eval`.
pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.locate {
        let end = args
            .seed_base
            .checked_add(n)
            .context("--seed-base + --locate overflows")?;
        let report = locate(&LocateOptions {
            seeds: args.seed_base..end,
            threads: args.threads,
            progress: true,
        })?;
        println!("{report}");
        return Ok(());
    }
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
