//! Steady-state processing allocates nothing: a counting global allocator.
//!
//! `unsafe` is needed only to implement `GlobalAlloc` (it forwards to the
//! system allocator unchanged and counts calls); the crate itself forbids it.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use blastnet_contract::{SourceKind, StreamKind};
use blastnet_detector::{Detector, DetectorConfig};
use blastnet_simulator::scenes::{scene, SceneSpec};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is forwarded to `System` with the same arguments; the
// counter is a relaxed atomic and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_allocs(kind: StreamKind, fs: f64) -> (usize, usize) {
    let spec = SceneSpec {
        fs,
        duration_s: 30.0,
        spacing_s: 3.0,
        snr_db: (15.0, 40.0),
        classes: SourceKind::CLASSIFIED.to_vec(),
        noise_rms: if kind == StreamKind::Acoustic {
            0.02
        } else {
            1e-7
        },
    };
    let sc = scene(21, &spec);
    let mut d = Detector::new(kind, fs as u32, &DetectorConfig::default()).unwrap();
    let mut out = Vec::with_capacity(1000);
    let (warm, rest) = sc.samples.split_at(fs as usize);
    d.process(warm, &mut out);
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for c in rest.chunks(480) {
        d.process(c, &mut out);
    }
    d.flush(&mut out);
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::SeqCst), out.len())
}

// One test function so that no other test thread allocates while counting.
#[test]
fn steady_state_processing_allocates_nothing() {
    let (n, picks) = count_allocs(StreamKind::Acoustic, 48_000.0);
    assert!(
        picks >= 5,
        "only {picks} acoustic picks: the back end was not exercised"
    );
    assert_eq!(n, 0, "acoustic: {n} allocations while processing");
    let (n, _) = count_allocs(StreamKind::Seismic, 500.0);
    assert_eq!(n, 0, "seismic: {n} allocations while processing");
}
