//! Driving many requests, and judging statistical outcomes with stated bounds.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f(0..n)` with at most `concurrency` calls in flight; results in index order.
pub async fn fan_out<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break out;
                }
                out.push((i, f(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(part) = workers.join_next().await {
        match part {
            Ok(p) => all.extend(p),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// How many standard deviations the suite's statistical assertions allow.
///
/// A two-sided 4.5 σ interval is left by chance with probability ≈ 7·10⁻⁶; the suite makes about a
/// dozen such assertions on random outcomes, so a correct build fails one less than once in 10,000
/// CI runs (at 3 σ it was ≈ 3 %, and CI did fail on one). The intervals stay narrow enough to catch
/// a wrong rate: at n = 400, p = 0.5 the interval is [155, 245].
pub const K_SD: f64 = 4.5;

/// The interval a binomial count should fall in: `n·p ± k·sqrt(n·p·(1−p))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub expected: f64,
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Bounds {
    pub fn binomial(n: u64, p: f64, k_sd: f64) -> Self {
        let expected = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        Self {
            expected,
            sd,
            lo: expected - k_sd * sd,
            hi: expected + k_sd * sd,
        }
    }

    pub fn contains(&self, observed: u64) -> bool {
        (self.lo..=self.hi).contains(&(observed as f64))
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "expected {:.1} ± {:.1} (sd {:.2}): [{:.1}, {:.1}]",
            self.expected,
            self.hi - self.expected,
            self.sd,
            self.lo,
            self.hi
        )
    }
}
