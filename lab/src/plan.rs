//! The deployment planner (`blastnet plan <layout>`): for a node layout, the Cramér–Rao accuracy map
//! and the coverage (where at least `min_nodes` nodes hear a given charge),
//! so a planner can choose node spacing for a target accuracy (issue #8).
//!
//! The layout file (TOML, or JSON when it ends in `.json`) lists the nodes
//! (`id`, `lat`, `lon`, `alt_m`) and `[options]`; see
//! `hardware/layouts/city-12.toml` for every option with its default.
//!
//! Model, per grid cell (a source on the ground at the cell):
//! - a node hears the source when the peak incident overpressure at its range
//!   is at least the threshold: `blastnet_contract::blast::peak_overpressure_pa`
//!   (Kingery–Bulmash surface burst or Kinney–Graham free air; beyond the
//!   fitted range it falls as 1/R, spherical spreading), optionally reduced by
//!   an excess attenuation in dB/km (ground, buildings, absorption: a site
//!   assumption the planner states);
//! - the cell is covered when at least `min_nodes` nodes hear it, and its
//!   accuracy is the CRLB of a TDOA fix from those nodes
//!   (`blastnet_aggregator_core::crlb`, straight rays, uniform wind), each
//!   arrival with sigma = sqrt(pick² + clock²).
//!
//! The computing part ([`Plan::evaluate`]) is pure; [`report_for`] reads the
//! file and returns the report.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use blastnet_aggregator_core::{crlb, Arrival, Bound, Dims, Phase, Propagation};
use blastnet_contract::blast::{peak_overpressure_pa, Burst};
use blastnet_contract::check::{Check, FieldError};
use blastnet_contract::{Enu, EnuFrame, Geodetic};
use serde::Deserialize;

/// What the command line may override in a layout's `[options]`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `options.charge_kg` (kg TNT equivalent).
    pub charge_kg: Option<f64>,
    /// `options.pick_sigma_s` (1-sigma onset pick error, seconds).
    pub pick_sigma_s: Option<f64>,
    /// `options.grid_extent_m` (half-width of the square grid, metres).
    pub extent_m: Option<f64>,
    /// `options.grid_step_m` (cell size, metres).
    pub step_m: Option<f64>,
}

/// Read a layout, apply the overrides, evaluate it and return the report
/// (and, with `csv`, write every grid cell there).
pub fn report_for(layout: &Path, over: &Overrides, csv: Option<&Path>) -> anyhow::Result<String> {
    let mut plan = Plan::from_file(layout)?;
    let file = layout.display().to_string();
    let check = |v: Option<f64>, flag: &str, min: f64, max: f64| -> anyhow::Result<Option<f64>> {
        match v {
            Some(x) if !(x.is_finite() && x >= min && x <= max) => {
                anyhow::bail!("--{flag}: expected a value in {min}..={max}, got {x}")
            }
            other => Ok(other),
        }
    };
    if let Some(w) = check(over.charge_kg, "charge-kg", 1e-6, 1e7)? {
        plan.charge_kg = w;
    }
    if let Some(s) = check(over.pick_sigma_s, "pick-sigma-s", 1e-9, 10.0)? {
        plan.pick_sigma_s = s;
    }
    if let Some(e) = check(over.extent_m, "extent-m", 1.0, 200_000.0)? {
        plan.extent_m = e;
    }
    if let Some(s) = check(over.step_m, "step-m", 0.1, 100_000.0)? {
        plan.step_m = s;
    }
    plan.check_grid(&Check::new(&file))?;
    let grid = plan.evaluate();
    let mut text = plan.report(&file, &grid);
    if let Some(path) = csv {
        std::fs::write(path, plan.csv(&grid))
            .with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(text, "grid written to {}", path.display());
    }
    Ok(text)
}

// ---------------------------------------------------------------------------
// The layout file.

/// What the layout file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    #[serde(default)]
    options: OptionsFile,
    nodes: Vec<NodeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: String,
    lat: f64,
    lon: f64,
    alt_m: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OptionsFile {
    charge_kg: Option<f64>,
    burst: Option<String>,
    pick_sigma_s: Option<f64>,
    clock_sigma_s: Option<f64>,
    temperature_c: Option<f64>,
    wind_mps: Option<[f64; 2]>,
    threshold_pa: Option<f64>,
    threshold_db: Option<f64>,
    excess_attenuation_db_per_km: Option<f64>,
    grid_extent_m: Option<f64>,
    grid_step_m: Option<f64>,
    min_nodes: Option<usize>,
    accuracy_classes_m: Option<Vec<f64>>,
    source_alt_m: Option<f64>,
    dims: Option<String>,
}

/// 20 µPa, the reference of dB SPL.
const P_REF_PA: f64 = 20e-6;
/// Largest number of cells evaluated (a 1001 × 1001 grid).
const MAX_CELLS: usize = 1_002_001;
/// Widest ASCII map, characters.
const MAP_MAX_COLUMNS: usize = 121;
/// Map characters of the accuracy classes, best first.
const CLASS_CHARS: &[u8] = b"ABCDEFGH";

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Node ids and positions.
    pub nodes: Vec<(String, Geodetic)>,
    /// Charge, kg TNT equivalent.
    pub charge_kg: f64,
    /// Burst type of the scaling law.
    pub burst: Burst,
    /// 1-sigma onset pick error, s.
    pub pick_sigma_s: f64,
    /// 1-sigma clock error, s.
    pub clock_sigma_s: f64,
    /// Air temperature, °C.
    pub temperature_c: f64,
    /// Uniform wind [east, north], m/s, blowing TO.
    pub wind_mps: [f64; 2],
    /// Detection threshold (peak overpressure), Pa.
    pub threshold_pa: f64,
    /// Excess attenuation beyond spherical spreading, dB/km.
    pub excess_db_per_km: f64,
    /// Half-width of the square grid around the node centroid, m.
    pub extent_m: f64,
    /// Cell size, m.
    pub step_m: f64,
    /// Nodes that must hear a source for it to count as covered.
    pub min_nodes: usize,
    /// Upper bounds of the accuracy classes (CRLB horizontal 1-sigma), m, increasing.
    pub classes_m: Vec<f64>,
    /// Source altitude, m (default: the mean node altitude).
    pub source_alt_m: f64,
    /// Fix model of the bound.
    pub dims: Dims,
    frame: EnuFrame,
    nodes_enu: Vec<Enu>,
}

/// One evaluated point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointResult {
    /// ENU east of the source, m.
    pub e: f64,
    /// ENU north of the source, m.
    pub n: f64,
    /// Nodes that hear it.
    pub heard: usize,
    /// The bound, when covered and the geometry determines a fix.
    pub bound: Option<Bound>,
}

/// The evaluated grid, rows south to north, columns west to east.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Cells per side.
    pub side: usize,
    /// Cell index range: -half..=half on each axis.
    pub half: i64,
    /// Row-major (north index, then east index), from (-half, -half).
    pub cells: Vec<PointResult>,
}

impl Plan {
    /// Read and check a layout file (TOML, or JSON by extension). Errors name the file and field.
    pub fn from_file(path: &Path) -> anyhow::Result<Plan> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{file}: cannot read the layout file"))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Plan::parse(&text, is_json, &file)
    }

    /// Parse and check layout text; errors name `file` and the field.
    pub fn parse(text: &str, json: bool, file: &str) -> anyhow::Result<Plan> {
        let raw: LayoutFile = if json {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de)
                .map_err(|e| anyhow::anyhow!("{file}: field {}: {}", e.path(), e.inner()))?
        } else {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{file}: TOML syntax: {}", e.to_string().trim())
            })?;
            serde_path_to_error::deserialize(toml::Value::Table(table))
                .map_err(|e| anyhow::anyhow!("{file}: field {}: {}", e.path(), e.inner()))?
        };
        Ok(Plan::check(raw, &Check::new(file))?)
    }

    fn check(raw: LayoutFile, c: &Check) -> Result<Plan, FieldError> {
        if raw.nodes.len() < 3 {
            return Err(c.err(
                "nodes",
                format!("expected at least 3 nodes, got {}", raw.nodes.len()),
            ));
        }
        let mut nodes = Vec::with_capacity(raw.nodes.len());
        for (i, n) in raw.nodes.iter().enumerate() {
            c.name(&format!("nodes[{i}].id"), &n.id)?;
            if nodes.iter().any(|(id, _): &(String, Geodetic)| *id == n.id) {
                return Err(c.err(
                    &format!("nodes[{i}].id"),
                    format!("expected a unique id, got {:?} again", n.id),
                ));
            }
            let lat = c.range(&format!("nodes[{i}].lat"), n.lat, -90.0, 90.0)?;
            let lon = c.range(&format!("nodes[{i}].lon"), n.lon, -180.0, 180.0)?;
            let alt = c.range(&format!("nodes[{i}].alt_m"), n.alt_m, -1000.0, 10_000.0)?;
            nodes.push((n.id.clone(), Geodetic::new(lat, lon, alt)));
        }
        let o = &raw.options;
        let burst = match o.burst.as_deref().unwrap_or("surface") {
            "surface" => Burst::Surface,
            "free_air" => Burst::FreeAir,
            other => {
                return Err(c.err(
                    "options.burst",
                    format!("expected \"surface\" or \"free_air\", got {other:?}"),
                ))
            }
        };
        let threshold_pa = match (o.threshold_pa, o.threshold_db) {
            (Some(_), Some(_)) => {
                return Err(c.err(
                    "options.threshold_db",
                    "expected either threshold_pa or threshold_db, not both, got both",
                ))
            }
            (Some(p), None) => c.range("options.threshold_pa", p, 1e-4, 1e6)?,
            (None, Some(db)) => {
                P_REF_PA * 10f64.powf(c.range("options.threshold_db", db, 14.0, 234.0)? / 20.0)
            }
            // 2 Pa = 100 dB re 20 µPa peak.
            (None, None) => 2.0,
        };
        let classes_m = o
            .accuracy_classes_m
            .clone()
            .unwrap_or_else(|| vec![1.0, 2.0, 5.0, 10.0, 25.0]);
        if classes_m.is_empty() || classes_m.len() > CLASS_CHARS.len() {
            return Err(c.err(
                "options.accuracy_classes_m",
                format!(
                    "expected 1..={} bounds in metres, got {} bounds",
                    CLASS_CHARS.len(),
                    classes_m.len()
                ),
            ));
        }
        for (i, w) in classes_m.iter().enumerate() {
            let f = format!("options.accuracy_classes_m[{i}]");
            c.range(&f, *w, 1e-6, 1e7)?;
            if i > 0 && *w <= classes_m[i - 1] {
                return Err(c.err(&f, format!("expected bounds in increasing order, got {w}")));
            }
        }
        let dims = match o.dims.as_deref().unwrap_or("ground") {
            "ground" => Dims::Ground,
            "free" => Dims::Free,
            other => {
                return Err(c.err(
                    "options.dims",
                    format!("expected \"ground\" or \"free\", got {other:?}"),
                ))
            }
        };
        let min_nodes = o.min_nodes.unwrap_or(4);
        if min_nodes < dims.unknowns() || min_nodes > nodes.len() {
            return Err(c.err(
                "options.min_nodes",
                format!(
                    "expected {}..={} (unknowns of the fix ..= number of nodes), got {min_nodes}",
                    dims.unknowns(),
                    nodes.len()
                ),
            ));
        }
        let wind = o.wind_mps.unwrap_or([0.0, 0.0]);
        for (i, w) in wind.iter().enumerate() {
            c.range(&format!("options.wind_mps[{i}]"), *w, -60.0, 60.0)?;
        }
        // Frame origin: centroid of the nodes' positions, mean altitude.
        let k = nodes.len() as f64;
        let mean_alt = nodes.iter().map(|n| n.1.alt_m).sum::<f64>() / k;
        let origin = Geodetic::new(
            nodes.iter().map(|n| n.1.lat).sum::<f64>() / k,
            mean_lon(nodes.iter().map(|n| n.1.lon)),
            mean_alt,
        );
        let frame = EnuFrame::new(origin);
        let nodes_enu = nodes.iter().map(|n| frame.to_enu(n.1)).collect();
        let plan = Plan {
            charge_kg: c.range("options.charge_kg", o.charge_kg.unwrap_or(1.0), 1e-6, 1e7)?,
            burst,
            pick_sigma_s: c.range(
                "options.pick_sigma_s",
                o.pick_sigma_s.unwrap_or(5e-4),
                1e-9,
                10.0,
            )?,
            clock_sigma_s: c.range(
                "options.clock_sigma_s",
                o.clock_sigma_s.unwrap_or(1e-6),
                0.0,
                10.0,
            )?,
            temperature_c: c.range(
                "options.temperature_c",
                o.temperature_c.unwrap_or(15.0),
                -60.0,
                60.0,
            )?,
            wind_mps: wind,
            threshold_pa,
            excess_db_per_km: c.range(
                "options.excess_attenuation_db_per_km",
                o.excess_attenuation_db_per_km.unwrap_or(0.0),
                0.0,
                1000.0,
            )?,
            extent_m: c.range(
                "options.grid_extent_m",
                o.grid_extent_m.unwrap_or(2000.0),
                1.0,
                200_000.0,
            )?,
            step_m: c.range(
                "options.grid_step_m",
                o.grid_step_m.unwrap_or(50.0),
                0.1,
                100_000.0,
            )?,
            min_nodes,
            classes_m,
            source_alt_m: c.range(
                "options.source_alt_m",
                o.source_alt_m.unwrap_or(mean_alt),
                -1000.0,
                20_000.0,
            )?,
            dims,
            nodes,
            frame,
            nodes_enu,
        };
        plan.check_grid(c)?;
        Ok(plan)
    }

    /// The grid must fit in [`MAX_CELLS`].
    pub fn check_grid(&self, c: &Check) -> Result<(), FieldError> {
        let side = 2 * (self.extent_m / self.step_m).floor() as usize + 1;
        if side.saturating_mul(side) > MAX_CELLS {
            return Err(c.err("options.grid_step_m", format!("expected at most {MAX_CELLS} cells (grid_extent_m / grid_step_m <= 500), got {side}×{side} cells")));
        }
        Ok(())
    }

    /// The ENU frame origin (node centroid, mean altitude).
    pub fn origin(&self) -> Geodetic {
        self.frame.origin()
    }

    /// 1-sigma timing error of one arrival, s.
    pub fn sigma_s(&self) -> f64 {
        self.pick_sigma_s.hypot(self.clock_sigma_s)
    }

    /// The propagation model.
    pub fn propagation(&self) -> Propagation {
        Propagation {
            wind_mps: self.wind_mps,
            ..Propagation::still_air(self.temperature_c)
        }
    }

    /// Peak overpressure at `range_m` from the charge, Pa, after excess attenuation.
    pub fn peak_pa(&self, range_m: f64) -> f64 {
        let p = peak_overpressure_pa(self.burst, range_m, self.charge_kg);
        p * 10f64.powf(-self.excess_db_per_km * range_m / 1000.0 / 20.0)
    }

    /// The range out to which the peak stays at or above the threshold, m
    /// (bisection: the peak falls monotonically with range).
    pub fn hearing_range_m(&self) -> f64 {
        let (mut lo, mut hi) = (0.01_f64, 1e7_f64);
        if self.peak_pa(lo) < self.threshold_pa {
            return 0.0;
        }
        if self.peak_pa(hi) >= self.threshold_pa {
            return hi;
        }
        for _ in 0..200 {
            let mid = (lo * hi).sqrt();
            if self.peak_pa(mid) >= self.threshold_pa {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi / lo < 1.0 + 1e-12 {
                break;
            }
        }
        lo
    }

    /// Which nodes hear a source at ENU (`e`, `n`) and the bound of a fix from them.
    pub fn point(&self, e: f64, n: f64) -> PointResult {
        let src = Enu::new(e, n, self.source_alt_m - self.frame.origin().alt_m);
        let sigma = self.sigma_s();
        let arrivals: Vec<Arrival> = self
            .nodes_enu
            .iter()
            .filter(|p| self.peak_pa(p.distance(src)) >= self.threshold_pa)
            .map(|p| Arrival {
                position: *p,
                time_s: 0.0,
                sigma_s: sigma,
                phase: Phase::Acoustic,
            })
            .collect();
        let bound = if arrivals.len() >= self.min_nodes {
            crlb(&arrivals, src, &self.propagation(), self.dims).ok()
        } else {
            None
        };
        PointResult {
            e,
            n,
            heard: arrivals.len(),
            bound,
        }
    }

    /// Evaluate every grid cell.
    pub fn evaluate(&self) -> Grid {
        let half = (self.extent_m / self.step_m).floor() as i64;
        let side = (2 * half + 1) as usize;
        let mut cells = Vec::with_capacity(side * side);
        for j in -half..=half {
            for i in -half..=half {
                cells.push(self.point(i as f64 * self.step_m, j as f64 * self.step_m));
            }
        }
        Grid { side, half, cells }
    }

    fn class_of(&self, c: &PointResult) -> u8 {
        match c.bound {
            Some(b) => self
                .classes_m
                .iter()
                .position(|w| b.horizontal_m <= *w)
                .map_or(b'+', |k| CLASS_CHARS[k]),
            None if c.heard >= self.min_nodes => b'?',
            None if c.heard > 0 => b'.',
            None => b' ',
        }
    }

    /// The ASCII map (north up), legend and summary.
    pub fn report(&self, file: &str, grid: &Grid) -> String {
        let mut s = String::new();
        let o = self.origin();
        let c = self.propagation().sound_speed_mps;
        let _ = writeln!(s, "blastnet plan: {file}");
        let _ = writeln!(
            s,
            "  {} nodes; frame origin (node centroid) {:.6}, {:.6}, {:.1} m",
            self.nodes.len(),
            o.lat,
            o.lon,
            o.alt_m
        );
        let burst = match self.burst {
            Burst::Surface => "surface burst, Kingery-Bulmash",
            Burst::FreeAir => "free-air burst, Kinney-Graham",
        };
        let _ = writeln!(
            s,
            "  charge {} kg TNT ({burst}); threshold {:.3} Pa peak ({:.1} dB re 20 uPa), excess attenuation {} dB/km",
            self.charge_kg,
            self.threshold_pa,
            20.0 * (self.threshold_pa / P_REF_PA).log10(),
            self.excess_db_per_km
        );
        let _ = writeln!(
            s,
            "  heard out to {:.0} m from the charge",
            self.hearing_range_m()
        );
        let _ = writeln!(
            s,
            "  timing sigma {:.3e} s per arrival (pick {:.3e} s, clock {:.3e} s); sound speed {:.2} m/s at {} C, wind [{}, {}] m/s",
            self.sigma_s(),
            self.pick_sigma_s,
            self.clock_sigma_s,
            c,
            self.temperature_c,
            self.wind_mps[0],
            self.wind_mps[1]
        );
        let _ = writeln!(
            s,
            "  grid +/-{} m, step {} m: {}x{} cells; fix model {}; covered = heard by >= {} nodes",
            self.extent_m,
            self.step_m,
            grid.side,
            grid.side,
            match self.dims {
                Dims::Ground => "ground (e, n, t0)",
                Dims::Free => "3D (e, n, u, t0)",
            },
            self.min_nodes
        );
        s.push('\n');
        self.map(&mut s, grid);
        s.push('\n');
        let _ = writeln!(s, "legend (CRLB horizontal 1-sigma):");
        let mut prev = 0.0;
        for (k, w) in self.classes_m.iter().enumerate() {
            let _ = writeln!(s, "  {}  {prev} .. {w} m", CLASS_CHARS[k] as char);
            prev = *w;
        }
        let _ = writeln!(s, "  +  > {prev} m");
        let _ = writeln!(
            s,
            "  ?  covered, but the geometry gives no fix (e.g. collinear nodes)"
        );
        let _ = writeln!(
            s,
            "  .  heard by 1..{} nodes (not covered)",
            self.min_nodes - 1
        );
        let _ = writeln!(s, "     heard by none");
        let _ = writeln!(s, "  *  node");
        s.push('\n');
        let cell_km2 = self.step_m * self.step_m / 1e6;
        let total = grid.cells.len();
        let covered = grid
            .cells
            .iter()
            .filter(|c| c.heard >= self.min_nodes)
            .count();
        let _ = writeln!(
            s,
            "coverage: {:.2} % of the grid ({:.3} km2 of {:.3} km2) heard by >= {} nodes",
            100.0 * covered as f64 / total as f64,
            covered as f64 * cell_km2,
            total as f64 * cell_km2,
            self.min_nodes
        );
        for w in &self.classes_m {
            let n = grid
                .cells
                .iter()
                .filter(|c| c.bound.is_some_and(|b| b.horizontal_m <= *w))
                .count();
            let _ = writeln!(
                s,
                "within {w} m: {:.2} % of the grid ({:.3} km2)",
                100.0 * n as f64 / total as f64,
                n as f64 * cell_km2
            );
        }
        let centre = self.point(0.0, 0.0);
        match centre.bound {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "CRLB at the array centre: horizontal {:.6} m, origin {:.6e} s (1-sigma), heard by {} nodes",
                    b.horizontal_m, b.origin_s, centre.heard
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "CRLB at the array centre: none (heard by {} nodes, {} needed)",
                    centre.heard, self.min_nodes
                );
            }
        }
        s
    }

    fn map(&self, s: &mut String, grid: &Grid) {
        // Downsample wide grids for the terminal (the CSV keeps every cell).
        let stride = grid.side.div_ceil(MAP_MAX_COLUMNS).max(1) as i64;
        let shown: Vec<i64> = (-grid.half..=grid.half)
            .filter(|i| i.rem_euclid(stride) == 0)
            .collect();
        let step = self.step_m * stride as f64;
        let mut rows: Vec<Vec<u8>> = shown
            .iter()
            .rev()
            .map(|&j| {
                shown
                    .iter()
                    .map(|&i| {
                        let idx = (j + grid.half) as usize * grid.side + (i + grid.half) as usize;
                        self.class_of(&grid.cells[idx])
                    })
                    .collect()
            })
            .collect();
        let lo = shown.first().copied().unwrap_or(0) as f64 * self.step_m;
        let hi = shown.last().copied().unwrap_or(0) as f64 * self.step_m;
        for p in &self.nodes_enu {
            let inside = |v: f64| v >= lo - step / 2.0 && v < hi + step / 2.0;
            if inside(p.e) && inside(p.n) {
                let col = ((p.e - lo) / step).round() as usize;
                let row = ((hi - p.n) / step).round() as usize;
                if let Some(c) = rows.get_mut(row).and_then(|r| r.get_mut(col)) {
                    *c = b'*';
                }
            }
        }
        let _ = writeln!(
            s,
            "map: north up, one character per {step} m cell (rows look stretched), x = {lo}..{hi} m east"
        );
        for r in rows {
            s.push_str("  |");
            s.push_str(&String::from_utf8_lossy(&r));
            s.push_str("|\n");
        }
    }

    /// Every cell as CSV.
    pub fn csv(&self, grid: &Grid) -> String {
        let mut s =
            String::from("e_m,n_m,lat,lon,nodes_heard,covered,crlb_horizontal_m,crlb_origin_s\n");
        let u = self.source_alt_m - self.frame.origin().alt_m;
        for c in &grid.cells {
            let g = self.frame.to_geodetic(Enu::new(c.e, c.n, u));
            let (h, t) = match c.bound {
                Some(b) => (b.horizontal_m.to_string(), b.origin_s.to_string()),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                s,
                "{},{},{:.7},{:.7},{},{},{h},{t}",
                c.e,
                c.n,
                g.lat,
                g.lon,
                c.heard,
                c.heard >= self.min_nodes
            );
        }
        s
    }
}

/// Mean of longitudes that may straddle ±180°.
fn mean_lon(lons: impl Iterator<Item = f64>) -> f64 {
    let (mut x, mut y) = (0.0, 0.0);
    for l in lons {
        let (s, c) = l.to_radians().sin_cos();
        x += c;
        y += s;
    }
    y.atan2(x).to_degrees()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SQUARE: &str = r#"
[options]
charge_kg = 1.0
threshold_pa = 20.0
pick_sigma_s = 0.001
clock_sigma_s = 0.0
grid_extent_m = 1000
grid_step_m = 100

[[nodes]]
id = "a"
lat = 40.0
lon = -80.0
alt_m = 300
[[nodes]]
id = "b"
lat = 40.002
lon = -80.0
alt_m = 300
[[nodes]]
id = "c"
lat = 40.0
lon = -79.998
alt_m = 300
[[nodes]]
id = "d"
lat = 40.002
lon = -79.998
alt_m = 300
"#;

    #[test]
    fn hearing_range_inverts_the_peak_law() {
        let p = Plan::parse(SQUARE, false, "square.toml").unwrap();
        let r = p.hearing_range_m();
        assert!(
            (p.peak_pa(r) / 20.0 - 1.0).abs() < 1e-9,
            "peak at {r} m: {}",
            p.peak_pa(r)
        );
        let mut q = p.clone();
        q.excess_db_per_km = 10.0;
        assert!(q.hearing_range_m() < r);
    }

    #[test]
    fn a_bad_field_is_named() {
        let bad_lat = SQUARE.replace("lat = 40.002", "lat = 140.002");
        let e = Plan::parse(&bad_lat, false, "square.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("square.toml") && e.contains("nodes[1].lat"),
            "{e}"
        );
        let bad_charge = SQUARE.replace("charge_kg = 1.0", "charge_kg = \"big\"");
        let e = Plan::parse(&bad_charge, false, "square.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("square.toml") && e.contains("options.charge_kg"),
            "{e}"
        );
    }
}
