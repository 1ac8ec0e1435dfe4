//! Keras' noise layers: `GaussianNoise`, `GaussianDropout`, `AlphaDropout`. Each is the
//! identity outside training (and passes the mask on); in training each draws fresh noise
//! per call, as Keras' `call(inputs, training=True)` does.

use crate::error::{Error, Result};
use candle_core::Tensor;
use gru_core::GruError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

/// What a noise layer does in training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseKind {
    /// `GaussianNoise(stddev)`: `x + N(0, stddev)`.
    Gaussian {
        /// The noise's standard deviation.
        stddev: f64,
    },
    /// `GaussianDropout(rate)`: `x * N(1, sqrt(rate / (1 - rate)))`.
    GaussianDropout {
        /// The dropout rate, in `[0, 1)`.
        rate: f64,
    },
    /// `AlphaDropout(rate)`: SELU-preserving dropout: dropped entries become
    /// `-alpha * scale`, then `a * x + b` restores the mean and variance.
    AlphaDropout {
        /// The dropout rate, in `[0, 1]` (no effect outside `(0, 1)`).
        rate: f64,
    },
}

/// A noise layer.
#[derive(Debug)]
pub struct Noise {
    /// What it does in training.
    pub kind: NoiseKind,
    rng: Mutex<StdRng>,
}

impl Noise {
    /// A noise layer. A `seed` makes its draws reproducible (the stream is not
    /// TensorFlow's); without one they differ per layer and run. A rate or deviation
    /// outside its range is an `OutOfRange` error.
    pub fn new(kind: NoiseKind, seed: Option<u64>) -> Result<Noise> {
        let (what, ok, expected, got) = match kind {
            NoiseKind::Gaussian { stddev } => {
                ("GaussianNoise stddev", stddev >= 0.0, "stddev >= 0", stddev)
            }
            NoiseKind::GaussianDropout { rate } => (
                "GaussianDropout rate",
                (0.0..1.0).contains(&rate),
                "0 <= rate < 1",
                rate,
            ),
            NoiseKind::AlphaDropout { rate } => (
                "AlphaDropout rate",
                (0.0..=1.0).contains(&rate),
                "0 <= rate <= 1",
                rate,
            ),
        };
        if !ok {
            return Err(Error::Gru(GruError::OutOfRange {
                what: what.into(),
                expected: expected.into(),
                got: got.to_string(),
            }));
        }
        let seed = seed.unwrap_or_else(|| rand::rng().random());
        Ok(Noise {
            kind,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        })
    }

    /// Restarts the layer's random stream at `seed` (as a `seed` in its config).
    pub fn reseed(&self, seed: u64) -> Result<()> {
        crate::dropout::reseed(&self.rng, seed)
    }

    /// `n` draws: standard normal (Box-Muller) or uniform in `[0, 1)`.
    fn draws(&self, n: usize, normal: bool) -> Result<Vec<f32>> {
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| Error::Candle(candle_core::Error::Msg("noise rng poisoned".into())))?;
        Ok((0..n)
            .map(|_| match normal {
                true => {
                    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1]
                    let u2: f64 = rng.random();
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                }
                false => rng.random::<f32>(),
            })
            .collect())
    }

    /// A tensor of draws shaped and typed as `x`.
    fn noise_like(&self, x: &Tensor, normal: bool) -> Result<Tensor> {
        let v = self.draws(x.elem_count(), normal)?;
        Ok(Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())?)
    }

    /// Applies the layer: the identity unless `training`.
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        if !training {
            return Ok(x.clone());
        }
        Ok(match self.kind {
            NoiseKind::Gaussian { stddev } if stddev > 0.0 => {
                (x + (self.noise_like(x, true)? * stddev)?)?
            }
            NoiseKind::GaussianDropout { rate } if rate > 0.0 => {
                let stddev = (rate / (1.0 - rate)).sqrt();
                (x * self.noise_like(x, true)?.affine(stddev, 1.0)?)?
            }
            NoiseKind::AlphaDropout { rate } if rate > 0.0 && rate < 1.0 => {
                // Keras 3's AlphaDropout.call.
                let alpha = 1.673_263_242_354_377_3_f64;
                let scale = 1.050_700_987_355_480_5_f64;
                let alpha_p = -alpha * scale;
                let kept = self.noise_like(x, false)?.ge(rate)?.to_dtype(x.dtype())?;
                let a = ((1.0 - rate) * (1.0 + rate * alpha_p * alpha_p)).powf(-0.5);
                let b = -a * alpha_p * rate;
                let dropped = kept.affine(-alpha_p, alpha_p)?; // (1 - kept) * alpha_p
                ((x * &kept)? + dropped)?.affine(a, b)?
            }
            _ => x.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn stats(t: &Tensor) -> (f64, f64) {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn training_noise_has_keras_statistics_and_inference_is_identity() {
        let dev = Device::Cpu;
        let ones = Tensor::ones((200, 10, 50), DType::F32, &dev).unwrap();
        let g = Noise::new(NoiseKind::Gaussian { stddev: 0.5 }, Some(1)).unwrap();
        let (m, s) = stats(&(g.forward(&ones, true).unwrap() - &ones).unwrap());
        assert!(m.abs() < 0.01 && (s - 0.5).abs() < 0.01, "{m} {s}");
        assert_eq!(
            g.forward(&ones, false).unwrap().to_vec3::<f32>().unwrap(),
            ones.to_vec3::<f32>().unwrap()
        );
        let d = Noise::new(NoiseKind::GaussianDropout { rate: 0.2 }, Some(2)).unwrap();
        let (m, s) = stats(&d.forward(&ones, true).unwrap());
        assert!((m - 1.0).abs() < 0.01 && (s - 0.5).abs() < 0.01, "{m} {s}");
        // AlphaDropout keeps a standard normal input's mean 0 and deviation 1.
        let x = g.noise_like(&ones, true).unwrap();
        let a = Noise::new(NoiseKind::AlphaDropout { rate: 0.3 }, Some(3)).unwrap();
        let (m, s) = stats(&a.forward(&x, true).unwrap());
        assert!(m.abs() < 0.02 && (s - 1.0).abs() < 0.02, "{m} {s}");
        assert!(Noise::new(NoiseKind::GaussianDropout { rate: 1.0 }, None).is_err());
        assert!(Noise::new(NoiseKind::Gaussian { stddev: -1.0 }, None).is_err());
    }
}
