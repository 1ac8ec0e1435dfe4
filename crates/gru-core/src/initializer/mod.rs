//! Keras weight initializers: their formulas, axes and (de)serialization.
//!
//! Values are drawn from a seeded generator here, so a seed reproduces the same weights
//! (they are not TensorFlow's random streams: Keras itself gives different numbers per
//! backend).

mod draw;
mod keras_json;

pub use draw::compute_fans;

use crate::keras_object::Num;

/// How `VarianceScaling` counts fans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Number of input units.
    FanIn,
    /// Number of output units.
    FanOut,
    /// Mean of the two.
    FanAvg,
}

/// The distribution `VarianceScaling` draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Normal truncated at two standard deviations (stddev corrected by 0.8796...).
    TruncatedNormal,
    /// Plain normal.
    UntruncatedNormal,
    /// Uniform in `[-limit, limit]`, `limit = sqrt(3 scale)`.
    Uniform,
}

/// The named `VarianceScaling` presets Keras serializes under their own class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingPreset {
    /// `VarianceScaling` itself (scale, mode and distribution written out).
    Custom,
    /// scale 1, fan_avg, uniform.
    GlorotUniform,
    /// scale 1, fan_avg, truncated normal.
    GlorotNormal,
    /// scale 2, fan_in, uniform.
    HeUniform,
    /// scale 2, fan_in, truncated normal.
    HeNormal,
    /// scale 1, fan_in, uniform.
    LecunUniform,
    /// scale 1, fan_in, truncated normal.
    LecunNormal,
}

/// A Keras initializer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// One value everywhere.
    Constant {
        /// The value.
        value: Num,
    },
    /// Normal(mean, stddev).
    RandomNormal {
        /// Mean.
        mean: Num,
        /// Standard deviation.
        stddev: Num,
        /// Seed.
        seed: Option<u64>,
    },
    /// Uniform(minval, maxval).
    RandomUniform {
        /// Lower bound.
        minval: Num,
        /// Upper bound.
        maxval: Num,
        /// Seed.
        seed: Option<u64>,
    },
    /// Normal(mean, stddev) redrawn beyond two standard deviations.
    TruncatedNormal {
        /// Mean.
        mean: Num,
        /// Standard deviation (before truncation).
        stddev: Num,
        /// Seed.
        seed: Option<u64>,
    },
    /// Variance scaling and its presets (glorot_*, he_*, lecun_*).
    VarianceScaling {
        /// Which class name Keras writes.
        preset: ScalingPreset,
        /// Scale factor.
        scale: Num,
        /// Fan mode.
        mode: FanMode,
        /// Distribution.
        distribution: Distribution,
        /// Seed.
        seed: Option<u64>,
        /// Axes counted as input units (with `output_axes`), or null.
        input_axes: Option<Vec<i64>>,
        /// Axes counted as output units (with `input_axes`), or null.
        output_axes: Option<Vec<i64>>,
    },
    /// Orthogonal matrix (QR of a normal matrix, sign-corrected), times `gain`.
    Orthogonal {
        /// Multiplier.
        gain: Num,
        /// Seed.
        seed: Option<u64>,
    },
    /// `gain * eye(rows, cols)`, 2-D shapes only. Keras does not serialize the gain.
    Identity {
        /// Multiplier.
        gain: Num,
    },
}

pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("zeros", "Zeros"),
    ("zero", "Zeros"),
    ("ones", "Ones"),
    ("one", "Ones"),
    ("constant", "Constant"),
    ("random_normal", "RandomNormal"),
    ("normal", "RandomNormal"),
    ("random_uniform", "RandomUniform"),
    ("uniform", "RandomUniform"),
    ("truncated_normal", "TruncatedNormal"),
    ("variance_scaling", "VarianceScaling"),
    ("glorot_uniform", "GlorotUniform"),
    ("glorot_normal", "GlorotNormal"),
    ("he_uniform", "HeUniform"),
    ("he_normal", "HeNormal"),
    ("lecun_uniform", "LecunUniform"),
    ("lecun_normal", "LecunNormal"),
    ("orthogonal", "Orthogonal"),
    ("OrthogonalInitializer", "Orthogonal"),
    ("identity", "Identity"),
    ("IdentityInitializer", "Identity"),
];

impl Initializer {
    /// Keras' default kernel initializer, `glorot_uniform`.
    pub fn glorot_uniform() -> Initializer {
        Initializer::preset(ScalingPreset::GlorotUniform, None)
    }

    /// Keras' default recurrent initializer, `orthogonal` (gain 1).
    pub fn orthogonal() -> Initializer {
        Initializer::Orthogonal {
            gain: Num::Float(1.0),
            seed: None,
        }
    }

    /// A `VarianceScaling` preset with its fixed scale, mode and distribution.
    pub fn preset(preset: ScalingPreset, seed: Option<u64>) -> Initializer {
        use Distribution::*;
        use FanMode::*;
        let (scale, mode, distribution) = match preset {
            ScalingPreset::GlorotUniform => (1.0, FanAvg, Uniform),
            ScalingPreset::GlorotNormal => (1.0, FanAvg, TruncatedNormal),
            ScalingPreset::HeUniform => (2.0, FanIn, Uniform),
            ScalingPreset::HeNormal => (2.0, FanIn, TruncatedNormal),
            ScalingPreset::LecunUniform => (1.0, FanIn, Uniform),
            ScalingPreset::LecunNormal => (1.0, FanIn, TruncatedNormal),
            ScalingPreset::Custom => (1.0, FanIn, TruncatedNormal),
        };
        Initializer::VarianceScaling {
            preset,
            scale: Num::Float(scale),
            mode,
            distribution,
            seed,
            input_axes: None,
            output_axes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn glorot_uniform_limit_and_variance() {
        let v = Initializer::preset(ScalingPreset::GlorotUniform, Some(1))
            .generate("k", &[100, 300])
            .unwrap();
        let limit = (6.0f64 / 400.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= limit));
        let (mean, var) = stats(&v);
        assert!(mean.abs() < 0.002);
        assert!((var - limit * limit / 3.0).abs() / (limit * limit / 3.0) < 0.03);
    }

    #[test]
    fn he_normal_truncated_variance() {
        let v = Initializer::preset(ScalingPreset::HeNormal, Some(2))
            .generate("k", &[200, 300])
            .unwrap();
        // Truncation at 2 sd with the 0.8796 correction keeps the variance at scale/fan_in.
        let (_, var) = stats(&v);
        let want = 2.0 / 200.0;
        assert!((var - want).abs() / want < 0.03, "{var} vs {want}");
        let sd = want.sqrt() / 0.879_625_661_034_239_8;
        assert!(v.iter().all(|x| x.abs() <= 2.0 * sd + 1e-12));
    }

    #[test]
    fn orthogonal_rows_are_orthonormal_for_recurrent_shape() {
        let (u, c) = (5, 15);
        let v = Initializer::Orthogonal {
            gain: Num::Float(1.0),
            seed: Some(9),
        }
        .generate("recurrent_kernel", &[u, c])
        .unwrap();
        for i in 0..u {
            for j in 0..u {
                let d: f64 = (0..c).map(|k| v[i * c + k] * v[j * c + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "({i},{j}) {d}");
            }
        }
    }

    #[test]
    fn orthogonal_columns_orthonormal_for_tall_shape_and_gain() {
        let (r, c) = (12, 4);
        let v = Initializer::Orthogonal {
            gain: Num::Float(0.5),
            seed: None,
        }
        .generate("k", &[r, c])
        .unwrap();
        for i in 0..c {
            for j in 0..c {
                let d: f64 = (0..r).map(|k| v[k * c + i] * v[k * c + j]).sum();
                let want = if i == j { 0.25 } else { 0.0 };
                assert!((d - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn identity_and_errors() {
        let v = Initializer::Identity {
            gain: Num::Float(2.0),
        }
        .generate("k", &[2, 3])
        .unwrap();
        assert_eq!(v, vec![2.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
        assert!(Initializer::Identity {
            gain: Num::Float(1.0)
        }
        .generate("bias", &[6])
        .is_err());
        assert!(Initializer::orthogonal().generate("bias", &[6]).is_err());
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let a = Initializer::preset(ScalingPreset::LecunNormal, Some(5));
        let b = Initializer::preset(ScalingPreset::LecunNormal, Some(6));
        assert_eq!(
            a.generate("k", &[3, 3]).unwrap(),
            a.generate("k", &[3, 3]).unwrap()
        );
        assert_ne!(
            a.generate("k", &[3, 3]).unwrap(),
            b.generate("k", &[3, 3]).unwrap()
        );
        let u = Initializer::glorot_uniform();
        assert_ne!(
            u.generate("k", &[3, 3]).unwrap(),
            u.generate("k", &[3, 3]).unwrap()
        );
    }

    #[test]
    fn fans_with_axes() {
        let f = compute_fans("k", &[2, 3, 4], &Some(vec![0, 1]), &Some(vec![2])).unwrap();
        assert_eq!(f, (6.0, 4.0));
        assert_eq!(compute_fans("k", &[7], &None, &None).unwrap(), (7.0, 7.0));
    }

    #[test]
    fn parse_forms() {
        let v = serde_json::json!("glorot_normal");
        assert_eq!(
            Initializer::from_keras_value("k", &v).unwrap(),
            Initializer::preset(ScalingPreset::GlorotNormal, None)
        );
        assert!(Initializer::from_keras_value("k", &serde_json::json!("no_such_init")).is_err());
        assert!(Initializer::from_keras_value("k", &serde_json::json!("constant")).is_err());
        let c = Initializer::from_keras_value(
            "k",
            &serde_json::json!({"class_name": "Constant", "config": {"value": 2}}),
        )
        .unwrap();
        assert_eq!(
            c.to_keras_value()["config"],
            serde_json::json!({"value": 2})
        );
    }
}
