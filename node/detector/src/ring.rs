//! Fixed-capacity history of raw samples, addressed by absolute index.

/// The last `capacity` samples of a stream.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buf: Vec<f32>,
    mask: usize,
    /// Absolute index of the next sample to be written.
    end: u64,
}

impl Ring {
    /// Capacity is rounded up to a power of two.
    pub(crate) fn new(min_capacity: usize) -> Self {
        let cap = min_capacity.max(16).next_power_of_two();
        Ring {
            buf: vec![0.0; cap],
            mask: cap - 1,
            end: 0,
        }
    }

    /// Oldest absolute index still held.
    pub(crate) fn oldest(&self) -> u64 {
        self.end.saturating_sub(self.buf.len() as u64)
    }

    pub(crate) fn push_slice(&mut self, x: &[f32]) {
        let mut x = x;
        while !x.is_empty() {
            let pos = (self.end as usize) & self.mask;
            let take = x.len().min(self.buf.len() - pos);
            self.buf[pos..pos + take].copy_from_slice(&x[..take]);
            self.end += take as u64;
            x = &x[take..];
        }
    }

    /// Copy absolute `[start, start + dst.len())` into `dst`; the caller keeps
    /// the range within `[oldest(), end)`.
    pub(crate) fn copy_to(&self, start: u64, dst: &mut [f32]) {
        let mut pos = (start as usize) & self.mask;
        let mut d = dst;
        while !d.is_empty() {
            let take = d.len().min(self.buf.len() - pos);
            d[..take].copy_from_slice(&self.buf[pos..pos + take]);
            d = &mut d[take..];
            pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_copies_by_absolute_index() {
        let mut r = Ring::new(16);
        let data: Vec<f32> = (0..40).map(|i| i as f32).collect();
        for c in data.chunks(7) {
            r.push_slice(c);
        }
        assert_eq!(r.oldest(), 24);
        let mut out = [0f32; 10];
        r.copy_to(27, &mut out);
        assert_eq!(out.to_vec(), (27..37).map(|i| i as f32).collect::<Vec<_>>());
    }
}
