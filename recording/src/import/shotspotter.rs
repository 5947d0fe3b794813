//! The public ShotSpotter live-fire release (Tech Note 098, CC BY 4.0):
//! `FPn/test_xxx/` folders with 12 kHz WAVs, a JSON per WAV (UTC of the first
//! sample, sensor x/y/z in a local frame), the survey of the firing position,
//! the weather, and ShotSpotter's own pulse picks and per-shot groupings.
//!
//! Each test becomes one scenario: local x/y/z are taken as East/North/Up
//! metres around a nominal origin and mapped to WGS84 (the release anonymised
//! positions, so the origin is arbitrary; TDOA geometry is unchanged). The
//! audio is copied beside the manifest.
//!
//! Truth (evaluation only): the surveyed position; the discharge time is not
//! in the release (`approximate_time_utc` is a note-taker's time), so each
//! shot's time is estimated as the median over ShotSpotter's grouped pulses of
//! arrival − distance / c(T). That uses ShotSpotter's picks, which is fine for
//! truth and never reaches the detection or location path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blastnet_contract::manifest::MANIFEST_FORMAT;
use blastnet_contract::physics::sound_speed;
use blastnet_contract::{
    Enu, EnuFrame, Environment, Geodetic, Manifest, NodeSpec, SourceKind, StreamKind, StreamSpec,
    TruthSource, UtcNs,
};
use serde::Deserialize;

use crate::RecordingError;

/// Nominal origin for the anonymised local frames (Pittsburgh, PA).
pub const NOMINAL_ORIGIN: Geodetic = Geodetic::new(40.4406, -79.9959, 0.0);

#[derive(Debug, Clone, Deserialize)]
struct Xyz {
    x: f64,
    y: f64,
    z: f64,
}

#[derive(Debug, Deserialize)]
struct AudioMeta {
    serial_number: String,
    timestamp: String,
    location: Xyz,
}

#[derive(Debug, Deserialize)]
struct Survey {
    test_id: u32,
    firing_position: String,
    num_rounds: u32,
    firearm: String,
    survey_location: Xyz,
}

#[derive(Debug, Deserialize)]
struct Weather {
    temperature: f64,
    #[serde(default)]
    speed: f64,
    #[serde(default)]
    direction: f64,
}

/// One pulse of `allpulses.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pulse {
    /// Pulse id.
    pub pulse_uuid: String,
    /// Sensor serial.
    pub serial_number: String,
    /// ShotSpotter's arrival time (zero crossing at the start of the pulse).
    pub arrival_time_utc: String,
    /// ShotSpotter's own signal-to-noise ratio of the pulse, dB, where given.
    #[serde(default, rename = "signal_to_noise_dB")]
    pub signal_to_noise_db: Option<f64>,
    location: Xyz,
}

/// One shot of `nlos-tuples.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tuple {
    /// Shot index within the test.
    pub shot_index: u32,
    /// Pulses ShotSpotter grouped for this shot.
    pub pulse_uuids: Vec<String>,
}

/// What one imported test produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The scenario folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, RecordingError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordingError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| RecordingError::Metadata {
        path: path.to_path_buf(),
        detail: format!("field `{}`: {}", e.path(), e.inner()),
    })
}

fn utc(path: &Path, field: &str, text: &str) -> Result<UtcNs, RecordingError> {
    UtcNs::parse(text).map_err(|e| RecordingError::Metadata {
        path: path.to_path_buf(),
        detail: format!("field `{field}`: {e}"),
    })
}

/// The test folders (`FPn/test_xxx`) under a release directory (either the
/// release root, its `data/` folder, or one firing position), sorted.
pub fn test_dirs(release: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    let mut out = Vec::new();
    let root = if release.join("data").is_dir() {
        release.join("data")
    } else {
        release.to_path_buf()
    };
    collect(&root, 0, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(RecordingError::Metadata {
            path: release.to_path_buf(),
            detail: "no test_xxx folders with a test_xxx.survey.json found: expected the ShotSpotter release layout (data/FPn/test_xxx/)".into(),
        });
    }
    Ok(out)
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), RecordingError> {
    let name = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("test_") && dir.join(format!("{name}.survey.json")).is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    if depth > 3 {
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).map_err(|source| RecordingError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd.flatten() {
        if entry.path().is_dir() {
            collect(&entry.path(), depth + 1, out)?;
        }
    }
    Ok(())
}

/// ShotSpotter's pulses and per-shot groupings of one test (for evaluating picks).
pub fn pulses(test_dir: &Path) -> Result<(Vec<Pulse>, Vec<Tuple>), RecordingError> {
    let name = test_name(test_dir);
    let p: Vec<Pulse> = read_json(&test_dir.join(format!("{name}.allpulses.json")))?;
    let t: Vec<Tuple> = read_json(&test_dir.join(format!("{name}.nlos-tuples.json")))?;
    Ok((p, t))
}

fn test_name(test_dir: &Path) -> String {
    test_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One released sensor recording of a test: its WAV and what its JSON says.
#[derive(Debug, Clone)]
pub struct SensorAudio {
    /// Sensor serial.
    pub serial_number: String,
    /// UTC of the first sample.
    pub start: UtcNs,
    /// The WAV file.
    pub wav: PathBuf,
    /// Position in the test's anonymised local frame (x east, y north, z up, m).
    pub local: Enu,
}

/// The sensor recordings of one test folder, sorted by file name.
pub fn sensor_audio(test_dir: &Path) -> Result<Vec<SensorAudio>, RecordingError> {
    let mut wavs: Vec<PathBuf> = std::fs::read_dir(test_dir)
        .map_err(|source| RecordingError::Open {
            path: test_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    wavs.sort();
    wavs.into_iter()
        .map(|wav| {
            let meta_path = wav.with_extension("json");
            let meta: AudioMeta = read_json(&meta_path)?;
            let start = utc(&meta_path, "timestamp", &meta.timestamp)?;
            Ok(SensorAudio {
                serial_number: meta.serial_number,
                start,
                wav,
                local: Enu::new(meta.location.x, meta.location.y, meta.location.z),
            })
        })
        .collect()
}

/// The site every imported test is recorded at (one city network).
pub const SITE: &str = "shotspotter-pittsburgh";

/// Import every test under `release` into `out/<FPn>-<test_xxx>/`.
pub fn import_all(release: &Path, out: &Path) -> Result<Vec<Imported>, RecordingError> {
    test_dirs(release)?
        .iter()
        .map(|t| import_test(t, out))
        .collect()
}

/// Import one test folder into `out/<FPn>-<test_xxx>/`.
pub fn import_test(test_dir: &Path, out: &Path) -> Result<Imported, RecordingError> {
    let name = test_name(test_dir);
    let survey_path = test_dir.join(format!("{name}.survey.json"));
    let survey: Survey = read_json(&survey_path)?;
    let weather_path = test_dir.join(format!("{name}.weather.json"));
    let weather: Option<Weather> = if weather_path.is_file() {
        Some(read_json(&weather_path)?)
    } else {
        None
    };
    let frame = EnuFrame::new(NOMINAL_ORIGIN);
    let to_geo = |p: &Xyz| frame.to_geodetic(Enu::new(p.x, p.y, p.z));

    let scen_name = format!("{}-{}", survey.firing_position, name);
    let dir = out.join(&scen_name);
    std::fs::create_dir_all(&dir).map_err(|source| RecordingError::Open {
        path: dir.clone(),
        source,
    })?;

    let mut nodes = Vec::new();
    for audio in sensor_audio(test_dir)? {
        let (wav, start) = (&audio.wav, audio.start);
        let file = format!("{}.wav", audio.serial_number);
        std::fs::copy(wav, dir.join(&file)).map_err(|source| RecordingError::Open {
            path: wav.clone(),
            source,
        })?;
        let g = frame.to_geodetic(audio.local);
        nodes.push(NodeSpec {
            id: audio.serial_number.clone(),
            lat: g.lat,
            lon: g.lon,
            alt_m: g.alt_m,
            position_uncertainty_m: None,
            streams: vec![StreamSpec {
                file,
                channel: 0,
                kind: StreamKind::Acoustic,
                start_utc: start,
                sensitivity: 1.0,
            }],
        });
    }
    if nodes.is_empty() {
        return Err(RecordingError::Metadata {
            path: test_dir.to_path_buf(),
            detail: "no .wav files in this test folder".into(),
        });
    }

    let temperature_c = weather.as_ref().map_or(10.0, |w| w.temperature);
    // METAR direction is where the wind comes FROM; SPEC wind_mps is where it blows TO.
    let wind_mps = weather.as_ref().map_or([0.0, 0.0], |w| {
        let to = (w.direction + 180.0).to_radians();
        [w.speed * to.sin(), w.speed * to.cos()]
    });
    let shooter = Enu::new(
        survey.survey_location.x,
        survey.survey_location.y,
        survey.survey_location.z,
    );
    let sg = to_geo(&survey.survey_location);
    let c = sound_speed(temperature_c);
    let (pulses, tuples) = pulses(test_dir).unwrap_or_default();
    let by_id: BTreeMap<&str, &Pulse> = pulses.iter().map(|p| (p.pulse_uuid.as_str(), p)).collect();
    let mut truth = Vec::new();
    for t in &tuples {
        let mut origins: Vec<i64> = t
            .pulse_uuids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()))
            .filter_map(|p| {
                let at = UtcNs::parse(&p.arrival_time_utc).ok()?;
                let d = Enu::new(p.location.x, p.location.y, p.location.z).distance(shooter);
                Some(at.add_secs_f64(-d / c).0)
            })
            .collect();
        if origins.is_empty() {
            continue;
        }
        origins.sort_unstable();
        truth.push(TruthSource {
            time_utc: UtcNs(origins[origins.len() / 2]),
            lat: sg.lat,
            lon: sg.lon,
            alt_m: sg.alt_m,
            kind: SourceKind::Gunshot,
            yield_kg_tnt: None,
            label: Some(format!(
                "{} shot {} of {} (survey position ±2.5 m; time estimated from ShotSpotter pulses)",
                survey.firearm,
                t.shot_index + 1,
                survey.num_rounds
            )),
        });
    }
    let manifest = Manifest {
        // One deployment: every test of the release was heard by the same
        // city network, so what one test teaches applies to the next.
        site: Some(SITE.into()),
        format: MANIFEST_FORMAT.into(),
        name: scen_name,
        description: format!(
            "ShotSpotter Pittsburgh live-fire test {} at {} ({} x {}), imported by `blastnet import shotspotter`. \
             Source: ShotSpotter, Inc., Tech Note 098, CC BY 4.0. Positions in an anonymised local frame mapped around a nominal origin.",
            survey.test_id, survey.firing_position, survey.num_rounds, survey.firearm
        ),
        environment: Some(Environment {
            temperature_c,
            wind_mps,
            relative_humidity_pct: None,
        }),
        nodes,
        truth: Some(truth),
    };
    let mpath = dir.join(crate::MANIFEST_FILE);
    std::fs::write(&mpath, manifest.to_json_pretty()).map_err(|source| RecordingError::Open {
        path: mpath.clone(),
        source,
    })?;
    Ok(Imported { dir, manifest })
}
