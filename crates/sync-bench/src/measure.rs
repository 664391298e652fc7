//! Timing: alternate library and baseline, report medians.

use std::future::Future;
use std::time::{Duration, Instant};

/// One printed row.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Row {
    pub(crate) id: &'static str,
    pub(crate) what: String,
    pub(crate) library_ms: f64,
    pub(crate) baseline_ms: f64,
    #[serde(skip)]
    pub(crate) target: Target,
}

/// What the ratio library/baseline must stay under (and an absolute bound, if any).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) max_ratio: f64,
    pub(crate) max_library_ms: Option<f64>,
}

impl Row {
    pub(crate) fn ratio(&self) -> f64 {
        self.library_ms / self.baseline_ms
    }

    pub(crate) fn met(&self) -> bool {
        self.ratio() <= self.target.max_ratio
            && self
                .target
                .max_library_ms
                .is_none_or(|m| self.library_ms <= m)
    }
}

pub(crate) fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let mid = v.len() / 2;
    let d = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2
    };
    d.as_secs_f64() * 1000.0
}

/// Runs `reps` rounds; each round sets up and times the library path, then the
/// baseline (order alternates each round so neither always runs warm). `setup`
/// runs untimed before each timed part. Returns (library median ms, baseline median ms).
pub(crate) async fn alternate<S, SF, L, LF, B, BF>(
    reps: usize,
    mut setup: S,
    mut library: L,
    mut baseline: B,
) -> (f64, f64)
where
    S: FnMut(Side) -> SF,
    SF: Future<Output = ()>,
    L: FnMut() -> LF,
    LF: Future<Output = ()>,
    B: FnMut() -> BF,
    BF: Future<Output = ()>,
{
    let mut lib = Vec::with_capacity(reps);
    let mut base = Vec::with_capacity(reps);
    for round in 0..reps {
        let order = if round % 2 == 0 {
            [Side::Library, Side::Baseline]
        } else {
            [Side::Baseline, Side::Library]
        };
        for side in order {
            setup(side).await;
            let start = Instant::now();
            match side {
                Side::Library => library().await,
                Side::Baseline => baseline().await,
            }
            let took = start.elapsed();
            match side {
                Side::Library => lib.push(took),
                Side::Baseline => base.push(took),
            }
        }
    }
    (median(lib), median(base))
}

/// Which path a round is about to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Library,
    Baseline,
}
