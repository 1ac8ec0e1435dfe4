//! Drawing an initializer's values: Keras' formulas and fans, from a seeded generator.

use super::{Distribution, FanMode, Initializer};
use crate::error::{GruError, Result};
use crate::keras_object::Num;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed, or a fresh one from the thread's generator.
fn seed_of(s: &Option<u64>) -> u64 {
    s.unwrap_or_else(|| rand::rng().random())
}

impl Initializer {
    /// Draws values for a weight of `shape` (row-major). `key` names the weight in errors.
    ///
    /// A seeded initializer gives the same values on every call; an unseeded one draws from
    /// the thread's generator.
    ///
    /// ```
    /// use gru_core::{Initializer, Num};
    /// let init = Initializer::RandomUniform { minval: Num::Float(-1.0), maxval: Num::Float(1.0), seed: Some(3) };
    /// let a = init.generate("kernel", &[4, 6]).unwrap();
    /// assert_eq!(a, init.generate("kernel", &[4, 6]).unwrap());
    /// assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    /// ```
    pub fn generate(&self, key: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let n = values_for(key, shape)?;
        Ok(match self {
            Initializer::Zeros => vec![0.0; n],
            Initializer::Ones => vec![1.0; n],
            Initializer::Constant { value } => vec![value.get(); n],
            Initializer::RandomNormal { mean, stddev, seed } => {
                let mut g = Gaussian::new(seed_of(seed));
                (0..n)
                    .map(|_| mean.get() + stddev.get() * g.next())
                    .collect()
            }
            Initializer::TruncatedNormal { mean, stddev, seed } => {
                let mut g = Gaussian::new(seed_of(seed));
                (0..n)
                    .map(|_| mean.get() + stddev.get() * g.next_truncated())
                    .collect()
            }
            Initializer::RandomUniform {
                minval,
                maxval,
                seed,
            } => uniform(n, minval.get(), maxval.get(), seed_of(seed)),
            Initializer::VarianceScaling { .. } => self.variance_scaling(key, shape)?,
            Initializer::Orthogonal { gain, seed } => {
                if shape.len() < 2 {
                    return Err(GruError::Shape {
                        what: format!("{key} (orthogonal initializer)"),
                        expected: "at least 2 dimensions".into(),
                        got: format!("{shape:?}"),
                    });
                }
                orthogonal(shape, gain.get(), seed_of(seed))
            }
            Initializer::Identity { gain } => identity(key, shape, *gain)?,
        })
    }

    /// `VarianceScaling`: `scale / fans` as the variance of the chosen distribution.
    fn variance_scaling(&self, key: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let Initializer::VarianceScaling {
            scale,
            mode,
            distribution,
            seed,
            input_axes,
            output_axes,
            ..
        } = self
        else {
            return Err(GruError::Internal {
                what: "variance_scaling on another initializer".into(),
            });
        };
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = compute_fans(key, shape, input_axes, output_axes)?;
        let s = scale.get()
            / match mode {
                FanMode::FanIn => fan_in.max(1.0),
                FanMode::FanOut => fan_out.max(1.0),
                FanMode::FanAvg => ((fan_in + fan_out) / 2.0).max(1.0),
            };
        Ok(match distribution {
            Distribution::TruncatedNormal => {
                let sd = s.sqrt() / 0.879_625_661_034_239_8;
                let mut g = Gaussian::new(seed_of(seed));
                (0..n).map(|_| sd * g.next_truncated()).collect()
            }
            Distribution::UntruncatedNormal => {
                let sd = s.sqrt();
                let mut g = Gaussian::new(seed_of(seed));
                (0..n).map(|_| sd * g.next()).collect()
            }
            Distribution::Uniform => {
                let limit = (3.0 * s).sqrt();
                uniform(n, -limit, limit, seed_of(seed))
            }
        })
    }
}

/// The number of values of `shape`, checked: a product past `usize` or a buffer the
/// allocator cannot give is a typed error, not a panic or an abort.
pub(crate) fn values_for(key: &str, shape: &[usize]) -> Result<usize> {
    let too_large = |needed: String| GruError::TooLarge {
        what: format!("{key} of shape {shape:?}"),
        limit: "what the allocator can give".into(),
        needed,
    };
    let n = shape
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .ok_or_else(|| too_large("more than usize::MAX values".into()))?;
    // The drawing buffers (the values, and the orthogonal initializer's matrix): ask once,
    // fail softly.
    let mut probe: Vec<f64> = Vec::new();
    probe
        .try_reserve_exact(n.saturating_mul(2))
        .map_err(|_| too_large(format!("{n} f64 values, twice")))?;
    Ok(n)
}

/// `n` draws uniform in `[lo, hi)`.
fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f64>())
        .collect()
}

/// `gain * eye(rows, cols)`, 2-D shapes only.
fn identity(key: &str, shape: &[usize], gain: Num) -> Result<Vec<f64>> {
    let &[r, c] = shape else {
        return Err(GruError::Shape {
            what: format!("{key} (identity initializer)"),
            expected: "a 2-D shape".into(),
            got: format!("{shape:?}"),
        });
    };
    let mut v = vec![0.0; r * c];
    for i in 0..r.min(c) {
        v[i * c + i] = gain.get();
    }
    Ok(v)
}

/// Keras' `compute_fans`: `(fan_in, fan_out)` of a shape, or over given axes.
pub fn compute_fans(
    key: &str,
    shape: &[usize],
    input_axes: &Option<Vec<i64>>,
    output_axes: &Option<Vec<i64>>,
) -> Result<(f64, f64)> {
    if let (Some(ia), Some(oa)) = (input_axes, output_axes) {
        let prod = |axes: &Vec<i64>| -> Result<f64> {
            let mut p = 1.0;
            for a in crate::keras_object::Axis::Many(axes.clone()).resolve(key, shape.len())? {
                p *= shape[a] as f64;
            }
            Ok(p)
        };
        return Ok((prod(ia)?, prod(oa)?));
    }
    Ok(match shape.len() {
        0 => (1.0, 1.0),
        1 => (shape[0] as f64, shape[0] as f64),
        2 => (shape[0] as f64, shape[1] as f64),
        _ => {
            let rf: usize = shape[..shape.len() - 2].iter().product();
            (
                (shape[shape.len() - 2] * rf) as f64,
                (shape[shape.len() - 1] * rf) as f64,
            )
        }
    })
}

/// Standard normal draws (Box-Muller) from a seeded generator.
struct Gaussian {
    rng: StdRng,
    spare: Option<f64>,
}

impl Gaussian {
    fn new(seed: u64) -> Gaussian {
        Gaussian {
            rng: StdRng::seed_from_u64(seed),
            spare: None,
        }
    }

    fn next(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1: f64 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }

    /// A draw redrawn until it lies within two standard deviations.
    fn next_truncated(&mut self) -> f64 {
        loop {
            let v = self.next();
            if v.abs() <= 2.0 {
                return v;
            }
        }
    }
}

/// Keras' orthogonal initializer: QR of a (max, min) normal matrix, columns sign-corrected
/// by diag(R), transposed when rows < cols, times gain.
fn orthogonal(shape: &[usize], gain: f64, seed: u64) -> Vec<f64> {
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let cols = shape[shape.len() - 1];
    let (m, n) = (rows.max(cols), rows.min(cols));
    let mut g = Gaussian::new(seed);
    // a is m x n, stored by columns for Gram-Schmidt.
    let mut q: Vec<Vec<f64>> = (0..n).map(|_| vec![0.0; m]).collect();
    for i in 0..m {
        for col in q.iter_mut() {
            col[i] = g.next();
        }
    }
    // Modified Gram-Schmidt, run twice for orthogonality: gives Q with diag(R) > 0, which is
    // exactly Keras' `q * sign(diag(r))`.
    for j in 0..n {
        for _pass in 0..2 {
            for k in 0..j {
                let (done, rest) = q.split_at_mut(j);
                let d: f64 = done[k].iter().zip(rest[0].iter()).map(|(a, b)| a * b).sum();
                for (x, y) in rest[0].iter_mut().zip(done[k].iter()) {
                    *x -= d * y;
                }
            }
        }
        let norm = q[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in q[j].iter_mut() {
            *v /= norm;
        }
    }
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // q is (m x n): element (i, j) = q[j][i].
            out[r * cols + c] = gain
                * if rows < cols {
                    q[r][c] // transpose: (n x m) -> (rows x cols)
                } else {
                    q[c][r]
                };
        }
    }
    out
}
