//! Second-order Butterworth high- and low-pass sections (RBJ cookbook
//! biquads): run in place over a candidate window, or sample by sample on
//! the stream. Written here (a few lines) rather than pulling the `biquad`
//! crate: we need f64 state over an f32 buffer, in place.

/// Biquad coefficients (normalised, a0 = 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HighPass {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl HighPass {
    pub(crate) fn butterworth(fc_hz: f64, fs_hz: f64) -> Self {
        let (c, alpha, a0) = Self::bilinear(fc_hz, fs_hz);
        HighPass {
            b0: (1.0 + c) / 2.0 / a0,
            b1: -(1.0 + c) / a0,
            b2: (1.0 + c) / 2.0 / a0,
            a1: -2.0 * c / a0,
            a2: (1.0 - alpha) / a0,
        }
    }

    /// cos ω0, α = sin ω0 / (2Q) with Q = 1/√2, and a0 = 1 + α (RBJ cookbook).
    fn bilinear(fc_hz: f64, fs_hz: f64) -> (f64, f64, f64) {
        let w0 = 2.0 * std::f64::consts::PI * (fc_hz / fs_hz).clamp(1e-6, 0.49);
        let alpha = w0.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        (w0.cos(), alpha, 1.0 + alpha)
    }

    /// The low-pass of the same order and cut-off.
    pub(crate) fn butterworth_low(fc_hz: f64, fs_hz: f64) -> Self {
        let (c, alpha, a0) = Self::bilinear(fc_hz, fs_hz);
        HighPass {
            b0: (1.0 - c) / 2.0 / a0,
            b1: (1.0 - c) / a0,
            b2: (1.0 - c) / 2.0 / a0,
            a1: -2.0 * c / a0,
            a2: (1.0 - alpha) / a0,
        }
    }

    /// One sample through the section with state `s` (direct form II transposed).
    #[inline]
    pub(crate) fn step(&self, s: &mut [f64; 2], xin: f64) -> f64 {
        let y = self.b0 * xin + s[0];
        s[0] = self.b1 * xin - self.a1 * y + s[1];
        s[1] = self.b2 * xin - self.a2 * y;
        y
    }

    /// Filter `x` in place from rest (direct form II transposed).
    pub(crate) fn run(&self, x: &mut [f32]) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for v in x.iter_mut() {
            let xin = f64::from(*v);
            let y = self.b0 * xin + s1;
            s1 = self.b1 * xin - self.a1 * y + s2;
            s2 = self.b2 * xin - self.a2 * y;
            *v = y as f32;
        }
    }
}
