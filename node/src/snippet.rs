//! Waveform evidence: a short snippet around every detection, at a reduced
//! rate, for the snippet topic (`blastnet.snippet/1`, an extension). Pure:
//! the pipeline feeds it samples and detections, it hands back finished
//! [`Snippet`]s; the publisher sends them after their detections.
//!
//! Why these numbers:
//! - [`BEFORE_S`] 0.5 s before the onset shows the noise the pick rose
//!   out of; [`AFTER_S`] 1.0 s after holds the pulse and its coda (an
//!   explosion's positive phase lasts milliseconds to tens of
//!   milliseconds at these ranges; a gunshot's N-wave under 3 ms).
//! - [`MAX_RATE_HZ`] 8 kHz: blast energy lies well below 1 kHz and a
//!   muzzle blast's N-wave spectrum falls off above a few kHz, so a
//!   3 kHz passband shows the shape and is worth listening to; 1.5 s at
//!   8 kHz in 16 bits is 24 000 bytes, 32 000 in base64: half the 64 KiB
//!   payload cap ([`blastnet_contract::wire::SNIPPET_MAX_PAYLOAD_BYTES`]).
//!   The rate is the node's divided by a whole factor (48 kHz → 8 kHz,
//!   44.1 kHz → 7.35 kHz), so every kept sample is a node sample and its
//!   time is exact.
//! - The anti-alias filter is a linear-phase windowed-sinc low-pass
//!   applied centred (zero phase), so the pulse stays where the pick is:
//!   a causal filter would delay it by half its length (about 2 ms).
//!
//! Cost: the filter is evaluated only at the kept samples: 12 000 × ~160
//! taps ≈ 2 M multiply-adds per snippet, about a millisecond, once per
//! detection (the detector's per-sample work is not touched).

use std::collections::VecDeque;

use blastnet_contract::{Snippet, StreamKind, UtcNs};

use crate::source::StreamInfo;

/// Seconds kept before the onset.
pub const BEFORE_S: f64 = 0.5;
/// Seconds kept after the onset.
pub const AFTER_S: f64 = 1.0;
/// Highest rate of a snippet, Hz.
pub const MAX_RATE_HZ: u32 = 8000;

/// The decimation factor for a node rate: the smallest whole divisor of
/// `rate` that brings it to [`MAX_RATE_HZ`] or below (1 when it already
/// is). A rate with no such divisor near it (a prime rate) falls back to
/// the rounded ratio: its kept samples are still node samples, the
/// reported rate is rounded (under 0.02 % off for rates above 8 kHz).
pub fn decimation(rate: u32) -> u32 {
    if rate <= MAX_RATE_HZ {
        return 1;
    }
    let min = rate.div_ceil(MAX_RATE_HZ);
    // (`is_multiple_of` is newer than the MSRV.)
    (min..=min * 2)
        .find(|&d| rate / d * d == rate)
        .unwrap_or(min)
}

/// Windowed-sinc (Hamming) low-pass taps for decimating by `d`: pass band
/// to 0.375 of the new rate, stop band from its Nyquist (0.5), the
/// transition in between; unit gain at DC.
fn lowpass(d: u32) -> Vec<f64> {
    if d <= 1 {
        return vec![1.0];
    }
    let d = f64::from(d);
    // Cut-off mid-transition, as a fraction of the input rate.
    let fc = 0.4375 / d;
    let width = 0.125 / d;
    // Hamming: transition ≈ 3.3 / N (of the input rate), stop band ≈ -53 dB.
    let half = (3.3 / width / 2.0).ceil() as i64;
    let mut h: Vec<f64> = (-half..=half)
        .map(|k| {
            let k = k as f64;
            let sinc = if k == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * k).sin() / (std::f64::consts::PI * k)
            };
            let w = 0.54 + 0.46 * (std::f64::consts::PI * k / half as f64).cos();
            sinc * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for x in &mut h {
        *x /= sum;
    }
    h
}

struct Pending {
    seq: u64,
    /// Stream index of the onset (fractional).
    onset_index: f64,
    onset_utc: UtcNs,
    from: u64,
    to: u64,
}

struct StreamSnips {
    kind: StreamKind,
    rate: u32,
    factor: u32,
    taps: Vec<f64>,
    /// Stream index of `ring[0]`.
    ring_start: u64,
    ring: VecDeque<f32>,
    ring_cap: usize,
    pending: Vec<Pending>,
}

/// Snippets for every stream of one node.
pub struct SnippetMaker {
    node_id: String,
    streams: Vec<StreamSnips>,
}

impl SnippetMaker {
    /// For `streams`; `max_latency_s[i]`: the longest a pick of stream `i`
    /// can come after its onset (the detector's latency), so that the
    /// samples before the onset are still held when the pick arrives.
    pub fn new(node_id: &str, streams: &[StreamInfo], max_latency_s: &[f64]) -> SnippetMaker {
        SnippetMaker {
            node_id: node_id.to_string(),
            streams: streams
                .iter()
                .enumerate()
                .map(|(i, info)| {
                    let factor = decimation(info.sample_rate);
                    let taps = lowpass(factor);
                    let lat = max_latency_s.get(i).copied().unwrap_or(0.0).max(0.0);
                    let keep_s = BEFORE_S + AFTER_S + lat + 0.5;
                    let ring_cap = (keep_s * f64::from(info.sample_rate)) as usize + taps.len();
                    StreamSnips {
                        kind: info.kind,
                        rate: info.sample_rate,
                        factor,
                        ring_cap,
                        taps,
                        ring_start: 0,
                        // Room for a block beyond the cap before it is trimmed.
                        ring: VecDeque::with_capacity(ring_cap + 16_384),
                        pending: Vec::new(),
                    }
                })
                .collect(),
        }
    }

    /// Samples `first_index..` of `stream`; snippets completed by them are
    /// pushed to `out`.
    pub fn samples(
        &mut self,
        stream: usize,
        first_index: u64,
        block: &[f32],
        out: &mut Vec<Snippet>,
    ) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.ring.is_empty() || s.ring_start + s.ring.len() as u64 != first_index {
            s.ring.clear();
            s.ring_start = first_index;
        }
        s.ring.extend(block.iter().copied());
        // Keep what pending snippets still need, however long.
        let keep_from = s.pending.iter().map(|p| p.from).min().unwrap_or(u64::MAX);
        let excess = (s.ring.len().saturating_sub(s.ring_cap) as u64)
            .min(keep_from.saturating_sub(s.ring_start));
        if excess > 0 {
            s.ring.drain(..excess as usize);
            s.ring_start += excess;
        }
        self.ready(stream, false, out);
    }

    /// Detection `seq` of `stream`, onset at (fractional) stream index
    /// `onset_index`, `onset_utc`. Its snippet is pushed to `out` once the
    /// samples up to [`AFTER_S`] after the onset have come.
    pub fn detection(
        &mut self,
        stream: usize,
        onset_index: f64,
        seq: u64,
        onset_utc: UtcNs,
        out: &mut Vec<Snippet>,
    ) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let rate = f64::from(s.rate);
        let onset = onset_index.max(0.0);
        s.pending.push(Pending {
            seq,
            onset_index: onset,
            onset_utc,
            from: (onset - BEFORE_S * rate).max(0.0).floor() as u64,
            to: (onset + AFTER_S * rate).ceil() as u64,
        });
        self.ready(stream, false, out);
    }

    /// The samples of `stream` stop following on (a gap): its pending
    /// snippets are finished with what there is.
    pub fn gap(&mut self, stream: usize, out: &mut Vec<Snippet>) {
        self.ready(stream, true, out);
        if let Some(s) = self.streams.get_mut(stream) {
            s.ring.clear();
        }
    }

    /// The end of the data: every pending snippet with what there is.
    pub fn finish(&mut self, out: &mut Vec<Snippet>) {
        for i in 0..self.streams.len() {
            self.ready(i, true, out);
        }
    }

    fn ready(&mut self, stream: usize, all: bool, out: &mut Vec<Snippet>) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let end = s.ring_start + s.ring.len() as u64;
        // The common case (no snippet due) allocates nothing.
        if !s.pending.iter().any(|p| all || p.to <= end) {
            return;
        }
        let (done, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut s.pending)
            .into_iter()
            .partition(|p| all || p.to <= end);
        s.pending = keep;
        for p in done {
            if let Some(snip) = s.make(&self.node_id, &p) {
                out.push(snip);
            }
        }
    }
}

impl StreamSnips {
    fn make(&self, node_id: &str, p: &Pending) -> Option<Snippet> {
        let end = self.ring_start + self.ring.len() as u64;
        let from = p.from.max(self.ring_start);
        let to = p.to.min(end);
        if to <= from {
            return None;
        }
        let y = decimate_centred(
            &self.ring,
            &self.taps,
            (from - self.ring_start) as usize,
            (to - self.ring_start) as usize,
            self.factor.max(1) as usize,
        );
        let rate = (f64::from(self.rate) / f64::from(self.factor.max(1))).round() as u32;
        let start_utc = p
            .onset_utc
            .add_secs_f64(-(p.onset_index - from as f64) / f64::from(self.rate));
        Some(Snippet::encode(
            node_id, p.seq, self.kind, start_utc, rate, &y,
        ))
    }
}

/// Outputs computed side by side in [`decimate_centred`].
const LANES: usize = 8;

/// The centred (zero-phase) filter `taps` at ring positions `from`, `from +
/// d`, ... below `to`, the ring's edges held: output `c` is
/// `Σ_k taps[k] · ring[clamp(c + k − half)]`, summed in order of `k`.
///
/// Evaluated as the direct formula is, bit for bit (each output's sum runs
/// in order of `k`, no reassociation), but laid out for speed: the ring's
/// span under the filter is copied once, as f64 with its edges held, into
/// `d` polyphase rows (row `r` holds window samples `r, r + d, ...`), so
/// that for a given tap `LANES` consecutive outputs read `LANES`
/// consecutive values of one row, and their `LANES` independent sums run
/// side by side in vector registers. (Measured: with the direct formula,
/// one sequential sum of ~160 taps per output on a ring indexed tap by
/// tap, the snippets were ~45 % of a one-hour 48 kHz replay.)
fn decimate_centred(
    ring: &VecDeque<f32>,
    taps: &[f64],
    from: usize,
    to: usize,
    d: usize,
) -> Vec<f64> {
    let half = taps.len() / 2;
    let last = ring.len() as i64 - 1;
    // Window sample w is ring[clamp(from + w − half)]; row r, column m holds
    // window sample m d + r.
    let span = to - from + taps.len();
    let cols = span.div_ceil(d);
    let mut rows = vec![0.0f64; d * cols];
    for (r, row) in rows.chunks_exact_mut(cols).enumerate() {
        for (m, slot) in row.iter_mut().enumerate() {
            let w = m * d + r;
            if w >= span {
                break;
            }
            let j = (from as i64 + w as i64 - half as i64).clamp(0, last) as usize;
            *slot = f64::from(ring[j]);
        }
    }
    // Window sample o d + k of output o is row k mod d, column o + k div d.
    let at: Vec<usize> = (0..taps.len()).map(|k| (k % d) * cols + k / d).collect();
    let n_out = (to - from).div_ceil(d);
    let mut y = Vec::with_capacity(n_out);
    let mut o = 0;
    while o + LANES <= n_out {
        let acc = lanes(taps, &at, &rows, o);
        y.extend_from_slice(&acc);
        o += LANES;
    }
    for o in o..n_out {
        y.push(taps.iter().zip(&at).map(|(&h, &a)| h * rows[a + o]).sum());
    }
    y
}

/// Outputs `o .. o + LANES` of [`decimate_centred`] (`at[k]`: where tap
/// `k` of output 0 reads in `rows`). Eight named sums, not an array: the
/// array stayed in memory, each addition waiting on a store and a load.
#[inline(never)]
fn lanes(taps: &[f64], at: &[usize], rows: &[f64], o: usize) -> [f64; LANES] {
    // (The neutral element of `f64: Sum` is -0.0: the same here.)
    let (mut s0, mut s1, mut s2, mut s3) = (-0.0f64, -0.0f64, -0.0f64, -0.0f64);
    let (mut s4, mut s5, mut s6, mut s7) = (-0.0f64, -0.0f64, -0.0f64, -0.0f64);
    for (&h, &a) in taps.iter().zip(at) {
        let Some(x) = rows[a + o..].first_chunk::<LANES>() else {
            break; // cannot happen: the rows cover every tap of every output
        };
        s0 += h * x[0];
        s1 += h * x[1];
        s2 += h * x[2];
        s3 += h * x[3];
        s4 += h * x[4];
        s5 += h * x[5];
        s6 += h * x[6];
        s7 += h * x[7];
    }
    [s0, s1, s2, s3, s4, s5, s6, s7]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decimation_divides_the_rate_to_at_most_8_khz() {
        assert_eq!(decimation(48_000), 6);
        assert_eq!(decimation(44_100), 6);
        assert_eq!(decimation(16_000), 2);
        assert_eq!(decimation(8_000), 1);
        assert_eq!(decimation(200), 1);
        assert_eq!(decimation(96_000), 12);
        for r in [22_050u32, 32_000, 48_000, 96_000, 192_000] {
            let d = decimation(r);
            assert!(r / d <= MAX_RATE_HZ && r / d * d == r, "{r} / {d}");
        }
    }

    /// The filter passes the pass band and stops what would alias: checked
    /// against a direct evaluation of its frequency response.
    #[test]
    fn the_anti_alias_filter_passes_low_and_stops_above_the_new_nyquist() {
        let d = 6;
        let h = lowpass(d);
        let gain = |f_over_fs: f64| {
            let (mut re, mut im) = (0.0, 0.0);
            for (k, x) in h.iter().enumerate() {
                let w = 2.0 * std::f64::consts::PI * f_over_fs * k as f64;
                re += x * w.cos();
                im -= x * w.sin();
            }
            (re * re + im * im).sqrt()
        };
        // 48 kHz in: 1 kHz and 3 kHz pass (within 0.1 dB), 4.5 kHz and up stop (-40 dB).
        for f in [100.0, 1000.0, 3000.0] {
            let g = gain(f / 48_000.0);
            assert!((g - 1.0).abs() < 0.012, "{f} Hz: gain {g}");
        }
        for f in [4500.0, 6000.0, 10_000.0, 20_000.0] {
            let g = gain(f / 48_000.0);
            assert!(g < 0.01, "{f} Hz: gain {g}");
        }
    }

    /// The fast decimator against the direct formula, bit for bit: on a
    /// ring that wraps in memory, at both held edges and in between, for
    /// output counts that do and do not fill whole lanes.
    #[test]
    fn decimation_equals_the_direct_formula_bit_for_bit() {
        let taps = lowpass(6);
        let half = (taps.len() / 2) as i64;
        let mut ring: VecDeque<f32> = VecDeque::with_capacity(4096);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        // Fill, then drain the front and refill: the ring's storage wraps.
        for _ in 0..3000 {
            ring.push_back(noise());
        }
        ring.drain(..2000);
        for _ in 0..2500 {
            ring.push_back(noise());
        }
        assert!(!ring.as_slices().1.is_empty(), "the ring should wrap");
        let last = ring.len() as i64 - 1;
        for (from, to, d) in [
            (0, ring.len(), 6),
            (5, 400, 6),
            (1000, 1013, 6),
            (3200, ring.len(), 6),
            (7, 90, 1),
            (0, 3, 6),
        ] {
            let fast = decimate_centred(&ring, &taps, from, to, d);
            let direct: Vec<f64> = (from..to)
                .step_by(d)
                .map(|c| {
                    taps.iter()
                        .enumerate()
                        .map(|(k, h)| {
                            h * f64::from(
                                ring[(c as i64 + k as i64 - half).clamp(0, last) as usize],
                            )
                        })
                        .sum()
                })
                .collect();
            assert_eq!(fast.len(), direct.len(), "{from}..{to} by {d}");
            for (i, (a, b)) in fast.iter().zip(&direct).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{from}..{to} by {d}: output {i}");
            }
        }
    }

    #[test]
    fn a_snippet_holds_the_onset_at_its_time_with_the_pulse_after_it() {
        let rate = 48_000u32;
        let info = StreamInfo {
            kind: StreamKind::Acoustic,
            sample_rate: rate,
        };
        let mut m = SnippetMaker::new("n01", &[info], &[0.3]);
        let t0 = UtcNs::parse("2024-01-01T00:00:00Z").unwrap();
        // Noise-free: a 5 ms pulse starting at sample 96 000 (2.0 s).
        let onset = 96_000u64;
        let x: Vec<f32> = (0..5 * rate as u64)
            .map(|i| {
                if (onset..onset + 240).contains(&i) {
                    10.0 * (1.0 - (i - onset) as f32 / 240.0)
                } else {
                    0.0
                }
            })
            .collect();
        let mut out = Vec::new();
        for (b, block) in x.chunks(1000).enumerate() {
            let first = (b * 1000) as u64;
            m.samples(0, first, block, &mut out);
            // The pick comes 0.25 s after the onset, as a detector's would.
            if first == onset + 12_000 {
                m.detection(0, onset as f64, 7, t0.at_sample(onset, rate), &mut out);
            }
        }
        m.finish(&mut out);
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(s.seq, 7);
        assert_eq!(s.sample_rate_hz, 8000);
        let counts = s.check().unwrap();
        assert_eq!(counts.len(), 12_000);
        assert_eq!(s.start_utc, t0.at_sample(onset - 24_000, rate));
        let peak = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| c.unsigned_abs())
            .unwrap()
            .0;
        // The pulse's peak is its first sample: the snippet's within the
        // filter's smearing (a few output samples) of 0.5 s.
        let peak_t = s.time_of(peak).secs_since(t0.at_sample(onset, rate));
        assert!(
            peak_t.abs() < 3.0 / 8000.0,
            "peak {peak_t} s from the onset"
        );
        let amp = f64::from(counts[peak]) * s.scale;
        assert!((amp - 10.0).abs() < 1.0, "peak amplitude {amp}");
    }
}
