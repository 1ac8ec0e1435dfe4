//! Connectionist temporal classification on the host: the forward (alpha) and backward
//! (beta) recursions in log space over the target with a blank before, between and after its
//! labels, per sample, samples split over threads. Gives each sample's loss `-ln p(target)`
//! and its gradient with respect to the frames' log-probabilities,
//! `-exp(ln sum_{s: z_s = c} alpha_t(s) beta_t(s) - ln y_t(c) - ln p)`.
//!
//! Impossible paths start from TensorFlow's "log zero", `ln(1e-307)`, not from minus
//! infinity: a target its frames cannot hold gets a loss of 700 or more and a finite
//! gradient.

use crate::seq::parallel::{split, split_mut};
use crate::seq::team::run_each;
use crate::seq::{Float, Threads};

/// TensorFlow's log-probability of an impossible path: `ln(1e-307)`.
pub const LOG_ZERO: f64 = -706.893_623_549_172_6;

/// One CTC problem: per-frame log-probabilities `(batch, frames, classes)` row-major, each
/// sample's labels (none equal to `blank`) and its frame count (1..=frames).
#[derive(Debug, Clone, Copy)]
pub struct CtcProblem<'a, T> {
    /// Log-probabilities.
    pub logp: &'a [T],
    /// `(batch, frames, classes)`.
    pub dims: (usize, usize, usize),
    /// Each sample's labels.
    pub labels: &'a [Vec<u32>],
    /// Each sample's frame count.
    pub frames: &'a [usize],
    /// The blank class.
    pub blank: usize,
}

/// `ln(e^a + e^b)`: the larger plus `ln(1 + e^(smaller - larger))`.
fn lse2(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(e^a + e^b + e^c)`: the largest plus the log of 1 and the others' ratios to it.
fn lse3(a: f64, b: f64, c: f64) -> f64 {
    let (hi, x, y) = if a >= b && a >= c {
        (a, b, c)
    } else if b >= c {
        (b, a, c)
    } else {
        (c, a, b)
    };
    hi + ((x - hi).exp() + (y - hi).exp()).ln_1p()
}

/// One sample's states: the class of each and whether it may be reached from two back.
struct States {
    class: Vec<usize>,
    skip: Vec<bool>,
}

impl States {
    fn new(labels: &[u32], blank: usize) -> States {
        let n = 2 * labels.len() + 1;
        let class: Vec<usize> = (0..n)
            .map(|s| match s % 2 {
                0 => blank,
                _ => labels[s / 2] as usize,
            })
            .collect();
        let skip = (0..n)
            .map(|s| s % 2 == 1 && s >= 3 && class[s] != class[s - 2])
            .collect();
        States { class, skip }
    }

    fn len(&self) -> usize {
        self.class.len()
    }
}

impl<T: Float> CtcProblem<'_, T> {
    fn lp(&self, b: usize, t: usize, c: usize) -> f64 {
        let (_, frames, classes) = self.dims;
        self.logp[(b * frames + t) * classes + c].to_f64()
    }

    /// Sample `b`'s alpha table `(frames_b, states)`.
    fn alpha(&self, b: usize, st: &States) -> Vec<f64> {
        let (n, tb) = (st.len(), self.frames[b]);
        let mut a = vec![LOG_ZERO; tb * n];
        a[0] = self.lp(b, 0, st.class[0]);
        if n > 1 {
            a[1] = self.lp(b, 0, st.class[1]);
        }
        for t in 1..tb {
            for s in 0..n {
                let prev = &a[(t - 1) * n..t * n];
                let one = if s >= 1 { prev[s - 1] } else { LOG_ZERO };
                let two = if st.skip[s] { prev[s - 2] } else { LOG_ZERO };
                a[t * n + s] = lse3(prev[s], one, two) + self.lp(b, t, st.class[s]);
            }
        }
        a
    }

    /// Sample `b`'s `ln p(target)` from its alpha table.
    fn log_p(&self, b: usize, st: &States, alpha: &[f64]) -> f64 {
        let (n, tb) = (st.len(), self.frames[b]);
        let last = &alpha[(tb - 1) * n..tb * n];
        match n {
            1 => last[0],
            _ => lse2(last[n - 1], last[n - 2]),
        }
    }

    /// Sample `b`'s beta table `(frames_b, states)`.
    fn beta(&self, b: usize, st: &States) -> Vec<f64> {
        let (n, tb) = (st.len(), self.frames[b]);
        let mut be = vec![LOG_ZERO; tb * n];
        let end = (tb - 1) * n;
        be[end + n - 1] = self.lp(b, tb - 1, st.class[n - 1]);
        if n > 1 {
            be[end + n - 2] = self.lp(b, tb - 1, st.class[n - 2]);
        }
        for t in (0..tb - 1).rev() {
            for s in 0..n {
                let next = &be[(t + 1) * n..(t + 2) * n];
                let one = if s + 1 < n { next[s + 1] } else { LOG_ZERO };
                let two = if s + 2 < n && st.skip[s + 2] {
                    next[s + 2]
                } else {
                    LOG_ZERO
                };
                be[t * n + s] = lse3(next[s], one, two) + self.lp(b, t, st.class[s]);
            }
        }
        be
    }

    /// Sample `b`'s loss and, into `grad` (its `(frames, classes)` block), the loss'
    /// gradient with respect to the log-probabilities times `scale`.
    fn sample(&self, b: usize, scale: f64, grad: Option<&mut [T]>) -> f64 {
        let st = States::new(&self.labels[b], self.blank);
        let alpha = self.alpha(b, &st);
        let log_p = self.log_p(b, &st, &alpha);
        if let Some(grad) = grad {
            let (n, classes) = (st.len(), self.dims.2);
            let beta = self.beta(b, &st);
            grad.fill(T::ZERO);
            let mut acc = vec![f64::NEG_INFINITY; classes];
            for t in 0..self.frames[b] {
                acc.fill(f64::NEG_INFINITY);
                for s in 0..n {
                    let c = st.class[s];
                    acc[c] = lse2(acc[c], alpha[t * n + s] + beta[t * n + s]);
                }
                for (c, &v) in acc.iter().enumerate() {
                    if v > f64::NEG_INFINITY {
                        let g = -(v - self.lp(b, t, c) - log_p).exp() * scale;
                        grad[t * classes + c] = T::from_f64(g);
                    }
                }
            }
        }
        -log_p
    }

    /// Each sample's loss `-ln p(target)`.
    pub fn losses(&self, threads: Threads) -> Vec<f64> {
        let parts = split(self.dims.0, threads.at_once(threads.count));
        let each = run_each(threads.team, parts, |part| {
            part.map(|b| self.sample(b, 1.0, None))
                .collect::<Vec<f64>>()
        });
        each.unwrap_or_default().concat()
    }

    /// The gradient of `sum_b scale[b] * loss_b` with respect to the log-probabilities,
    /// `(batch, frames, classes)`; zero past each sample's frames.
    pub fn gradient(&self, scale: &[f64], threads: Threads) -> Vec<T> {
        let (batch, frames, classes) = self.dims;
        let block = frames * classes;
        let mut grad = vec![T::ZERO; batch * block];
        let parts = split(batch, threads.at_once(threads.count));
        let chunks = split_mut(&mut grad, &parts, block);
        run_each(
            threads.team,
            parts.iter().cloned().zip(chunks),
            |(part, mine)| {
                for (k, b) in part.enumerate() {
                    self.sample(b, scale[b], Some(&mut mine[k * block..(k + 1) * block]));
                }
            },
        );
        grad
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every path of `frames` frames through the classes, its probability summed where it
    /// collapses to the labels.
    fn brute_force(
        logp: &[f64],
        frames: usize,
        classes: usize,
        labels: &[u32],
        blank: usize,
    ) -> f64 {
        let mut total = 0.0;
        let paths = classes.pow(frames as u32);
        for mut code in 0..paths {
            let mut path = Vec::with_capacity(frames);
            let mut lp = 0.0;
            for t in 0..frames {
                let c = code % classes;
                code /= classes;
                lp += logp[t * classes + c];
                path.push(c);
            }
            let mut out = Vec::new();
            let mut prev = None;
            for &c in &path {
                if c != blank && prev != Some(c) {
                    out.push(c as u32);
                }
                prev = Some(c);
            }
            if out == labels {
                total += lp.exp();
            }
        }
        -total.ln()
    }

    /// Each row of `classes` values through a log-softmax, in place.
    pub(crate) fn log_softmax(v: &mut [f64], classes: usize) {
        for row in v.chunks_mut(classes) {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z = row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
            row.iter_mut().for_each(|x| *x -= z);
        }
    }

    #[test]
    fn losses_and_gradients_equal_the_sum_over_paths() {
        let (frames, classes) = (5, 3);
        let labels = vec![vec![1u32, 1], vec![2], vec![], vec![1, 2, 1]];
        let batch = labels.len();
        let mut logp: Vec<f64> = (0..batch * frames * classes)
            .map(|i| ((i as f64) * 0.71).sin() * 1.5)
            .collect();
        log_softmax(&mut logp, classes);
        let lengths = [5, 4, 3, 5];
        let problem = CtcProblem {
            logp: &logp,
            dims: (batch, frames, classes),
            labels: &labels,
            frames: &lengths,
            blank: 0,
        };
        let losses = problem.losses(Threads::new(2, &crate::seq::ScopedThreads));
        let grad = problem.gradient(&[1.0; 4], Threads::ONE);
        for b in 0..batch {
            let block = &logp[b * frames * classes..][..lengths[b] * classes];
            let want = brute_force(block, lengths[b], classes, &labels[b], 0);
            assert!(
                (losses[b] - want).abs() < 1e-10,
                "{b}: {} vs {want}",
                losses[b]
            );
            // The gradient by central differences of the brute force.
            for probe in [0, classes + 1, (lengths[b] - 1) * classes + 2] {
                let mut up = block.to_vec();
                let mut down = block.to_vec();
                up[probe] += 1e-6;
                down[probe] -= 1e-6;
                let fd = (brute_force(&up, lengths[b], classes, &labels[b], 0)
                    - brute_force(&down, lengths[b], classes, &labels[b], 0))
                    / 2e-6;
                let ours = grad[b * frames * classes + probe];
                assert!((fd - ours).abs() < 1e-6, "{b} {probe}: {fd} vs {ours}");
            }
            // Nothing past the sample's frames.
            let past = &grad[(b * frames + lengths[b]) * classes..(b + 1) * frames * classes];
            assert!(past.iter().all(|g| *g == 0.0));
        }
    }
}
