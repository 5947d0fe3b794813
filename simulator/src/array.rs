//! The horizontal shape of a node array: convex hull, centroid and aperture.
//! The random scene generator places sources by it (inside the hull, out to
//! a multiple of the aperture) and the location evaluation
//! (`blastnet_lab::eval::locate`) scores recall by the same regions, so the
//! two agree on what "inside the array" means.

/// A node array seen from above.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayShape {
    /// Convex hull [east, north], counter-clockwise, no repeated first point.
    pub hull: Vec<[f64; 2]>,
    /// Mean node position [east, north].
    pub centroid: [f64; 2],
    /// Largest horizontal distance between two nodes, m.
    pub aperture_m: f64,
}

fn cross(o: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

impl ArrayShape {
    /// The shape of the nodes at `points` ([east, north]); `None` for no points.
    pub fn new(points: &[[f64; 2]]) -> Option<ArrayShape> {
        if points.is_empty() {
            return None;
        }
        let n = points.len() as f64;
        let centroid = [
            points.iter().map(|p| p[0]).sum::<f64>() / n,
            points.iter().map(|p| p[1]).sum::<f64>() / n,
        ];
        let mut aperture_m: f64 = 0.0;
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                aperture_m = aperture_m.max((a[0] - b[0]).hypot(a[1] - b[1]));
            }
        }
        // Andrew's monotone chain.
        let mut pts = points.to_vec();
        pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        pts.dedup();
        let mut hull: Vec<[f64; 2]> = Vec::with_capacity(2 * pts.len());
        for pass in 0..2 {
            let start = hull.len();
            let iter: Box<dyn Iterator<Item = &[f64; 2]>> = if pass == 0 {
                Box::new(pts.iter())
            } else {
                Box::new(pts.iter().rev())
            };
            for &p in iter {
                while hull.len() >= start + 2
                    && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
                {
                    hull.pop();
                }
                hull.push(p);
            }
            hull.pop();
        }
        if hull.is_empty() {
            hull = pts;
        }
        Some(ArrayShape {
            hull,
            centroid,
            aperture_m,
        })
    }

    /// Whether `p` lies inside the convex hull or on its boundary (never for
    /// a hull of fewer than three points: it has no inside).
    pub fn contains(&self, p: [f64; 2]) -> bool {
        let h = &self.hull;
        h.len() >= 3 && (0..h.len()).all(|i| cross(h[i], h[(i + 1) % h.len()], p) >= 0.0)
    }

    /// Horizontal distance of `p` from the centroid, m.
    pub fn from_centroid(&self, p: [f64; 2]) -> f64 {
        (p[0] - self.centroid[0]).hypot(p[1] - self.centroid[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hull_of_a_square_with_a_point_inside_is_the_square() {
        let pts = [
            [0.0, 0.0],
            [10.0, 0.0],
            [10.0, 10.0],
            [0.0, 10.0],
            [4.0, 6.0],
        ];
        let a = ArrayShape::new(&pts).expect("points");
        assert_eq!(a.hull.len(), 4);
        assert!(a.contains([5.0, 5.0]));
        assert!(a.contains([10.0, 3.0]));
        assert!(!a.contains([10.5, 3.0]));
        assert!(!a.contains([-0.1, 5.0]));
        assert!((a.aperture_m - 200f64.sqrt()).abs() < 1e-12);
        assert!((a.centroid[0] - 4.8).abs() < 1e-12);
        // Collinear points have no inside.
        let line = ArrayShape::new(&[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]).expect("points");
        assert!(!line.contains([1.0, 1.0]));
    }
}
