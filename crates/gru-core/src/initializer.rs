//! Keras weight initializers: their formulas, axes and (de)serialization.
//!
//! Values are drawn from a seeded generator here, so a seed reproduces the same weights
//! (they are not TensorFlow's random streams: Keras itself gives different numbers per
//! backend).

use crate::error::{invalid, GruError, Result};
use crate::keras_object::{map_of, read_object, write_object, ConfigReader, Num};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

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

const ALIASES: &[(&str, &str)] = &[
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

    /// Reads what Keras' `initializers.get` accepts: a name (`"glorot_normal"`,
    /// `"RandomUniform"`) or a serialized dict, with or without `module`.
    pub fn from_keras_value(key: &str, value: &Value) -> Result<Initializer> {
        if value.is_null() {
            return Err(GruError::UnknownIdentifier {
                kind: "initializer",
                key: key.to_string(),
                got: "null".into(),
            });
        }
        let obj = read_object("initializer", key, value, ALIASES)?;
        let seeded_scaling = ["seed", "input_axes", "output_axes"];
        let init = match obj.class_name.as_str() {
            "Zeros" => {
                ConfigReader::new(key, &obj, &[])?;
                Initializer::Zeros
            }
            "Ones" => {
                ConfigReader::new(key, &obj, &[])?;
                Initializer::Ones
            }
            "Constant" => {
                let r = ConfigReader::new(key, &obj, &["value"])?;
                if !obj.config.contains_key("value") && value.is_string() {
                    // Keras: `initializers.get("constant")` fails (no value to deserialize).
                    return Err(invalid(key, "a Constant with a `value`", value));
                }
                Initializer::Constant {
                    value: r.num("value", Num::Float(0.0))?,
                }
            }
            "RandomNormal" | "TruncatedNormal" => {
                let r = ConfigReader::new(key, &obj, &["seed", "mean", "stddev"])?;
                let (mean, stddev, seed) = (
                    r.num("mean", Num::Float(0.0))?,
                    r.num("stddev", Num::Float(0.05))?,
                    r.seed()?,
                );
                if obj.class_name == "RandomNormal" {
                    Initializer::RandomNormal { mean, stddev, seed }
                } else {
                    Initializer::TruncatedNormal { mean, stddev, seed }
                }
            }
            "RandomUniform" => {
                let r = ConfigReader::new(key, &obj, &["seed", "minval", "maxval"])?;
                Initializer::RandomUniform {
                    minval: r.num("minval", Num::Float(-0.05))?,
                    maxval: r.num("maxval", Num::Float(0.05))?,
                    seed: r.seed()?,
                }
            }
            "VarianceScaling" => {
                let r = ConfigReader::new(
                    key,
                    &obj,
                    &[
                        "seed",
                        "scale",
                        "mode",
                        "distribution",
                        "input_axes",
                        "output_axes",
                    ],
                )?;
                let scale = r.num("scale", Num::Float(1.0))?;
                if scale.get() <= 0.0 {
                    return Err(invalid(key, "scale > 0", scale.get()));
                }
                let mode = match r
                    .choice("mode", "fan_in", &["fan_in", "fan_out", "fan_avg"])?
                    .as_str()
                {
                    "fan_in" => FanMode::FanIn,
                    "fan_out" => FanMode::FanOut,
                    _ => FanMode::FanAvg,
                };
                let distribution = match r
                    .choice(
                        "distribution",
                        "truncated_normal",
                        &["truncated_normal", "untruncated_normal", "uniform"],
                    )?
                    .as_str()
                {
                    "truncated_normal" => Distribution::TruncatedNormal,
                    "untruncated_normal" => Distribution::UntruncatedNormal,
                    _ => Distribution::Uniform,
                };
                Initializer::VarianceScaling {
                    preset: ScalingPreset::Custom,
                    scale,
                    mode,
                    distribution,
                    seed: r.seed()?,
                    input_axes: r.axes("input_axes")?,
                    output_axes: r.axes("output_axes")?,
                }
            }
            name @ ("GlorotUniform" | "GlorotNormal" | "HeUniform" | "HeNormal"
            | "LecunUniform" | "LecunNormal") => {
                let r = ConfigReader::new(key, &obj, &seeded_scaling)?;
                let preset = match name {
                    "GlorotUniform" => ScalingPreset::GlorotUniform,
                    "GlorotNormal" => ScalingPreset::GlorotNormal,
                    "HeUniform" => ScalingPreset::HeUniform,
                    "HeNormal" => ScalingPreset::HeNormal,
                    "LecunUniform" => ScalingPreset::LecunUniform,
                    _ => ScalingPreset::LecunNormal,
                };
                let mut init = Initializer::preset(preset, r.seed()?);
                if let Initializer::VarianceScaling {
                    input_axes,
                    output_axes,
                    ..
                } = &mut init
                {
                    *input_axes = r.axes("input_axes")?;
                    *output_axes = r.axes("output_axes")?;
                }
                init
            }
            "Orthogonal" => {
                let r = ConfigReader::new(key, &obj, &["seed", "gain"])?;
                Initializer::Orthogonal {
                    gain: r.num("gain", Num::Float(1.0))?,
                    seed: r.seed()?,
                }
            }
            "Identity" => {
                let r = ConfigReader::new(key, &obj, &["gain"])?;
                Initializer::Identity {
                    gain: r.num("gain", Num::Float(1.0))?,
                }
            }
            _ => unreachable!("ALIASES only maps to handled classes"),
        };
        Ok(init)
    }

    /// The dict Keras' `initializers.serialize` writes.
    pub fn to_keras_value(&self) -> Value {
        let seed_v = |s: &Option<u64>| s.map(Value::from).unwrap_or(Value::Null);
        let axes_v = |a: &Option<Vec<i64>>| a.clone().map(Value::from).unwrap_or(Value::Null);
        let (class, config) = match self {
            Initializer::Zeros => ("Zeros", map_of(vec![])),
            Initializer::Ones => ("Ones", map_of(vec![])),
            Initializer::Constant { value } => {
                ("Constant", map_of(vec![("value", value.to_value())]))
            }
            Initializer::RandomNormal { mean, stddev, seed } => (
                "RandomNormal",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("mean", mean.to_value()),
                    ("stddev", stddev.to_value()),
                ]),
            ),
            Initializer::TruncatedNormal { mean, stddev, seed } => (
                "TruncatedNormal",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("mean", mean.to_value()),
                    ("stddev", stddev.to_value()),
                ]),
            ),
            Initializer::RandomUniform {
                minval,
                maxval,
                seed,
            } => (
                "RandomUniform",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("minval", minval.to_value()),
                    ("maxval", maxval.to_value()),
                ]),
            ),
            Initializer::VarianceScaling {
                preset,
                scale,
                mode,
                distribution,
                seed,
                input_axes,
                output_axes,
            } => {
                let common = vec![
                    ("seed", seed_v(seed)),
                    ("input_axes", axes_v(input_axes)),
                    ("output_axes", axes_v(output_axes)),
                ];
                let class = match preset {
                    ScalingPreset::GlorotUniform => "GlorotUniform",
                    ScalingPreset::GlorotNormal => "GlorotNormal",
                    ScalingPreset::HeUniform => "HeUniform",
                    ScalingPreset::HeNormal => "HeNormal",
                    ScalingPreset::LecunUniform => "LecunUniform",
                    ScalingPreset::LecunNormal => "LecunNormal",
                    ScalingPreset::Custom => "VarianceScaling",
                };
                if *preset == ScalingPreset::Custom {
                    let mode = match mode {
                        FanMode::FanIn => "fan_in",
                        FanMode::FanOut => "fan_out",
                        FanMode::FanAvg => "fan_avg",
                    };
                    let dist = match distribution {
                        Distribution::TruncatedNormal => "truncated_normal",
                        Distribution::UntruncatedNormal => "untruncated_normal",
                        Distribution::Uniform => "uniform",
                    };
                    let mut m = vec![
                        ("seed", seed_v(seed)),
                        ("scale", scale.to_value()),
                        ("mode", Value::from(mode)),
                        ("distribution", Value::from(dist)),
                    ];
                    m.extend(common.into_iter().skip(1));
                    (class, map_of(m))
                } else {
                    (class, map_of(common))
                }
            }
            Initializer::Orthogonal { gain, seed } => (
                "Orthogonal",
                map_of(vec![("seed", seed_v(seed)), ("gain", gain.to_value())]),
            ),
            Initializer::Identity { .. } => ("Identity", map_of(vec![])),
        };
        write_object("keras.initializers", class, config)
    }

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
        let n: usize = shape.iter().product();
        let seed_of = |s: &Option<u64>| s.unwrap_or_else(|| rand::rng().random());
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
            } => {
                let mut rng = StdRng::seed_from_u64(seed_of(seed));
                let (lo, hi) = (minval.get(), maxval.get());
                (0..n)
                    .map(|_| lo + (hi - lo) * rng.random::<f64>())
                    .collect()
            }
            Initializer::VarianceScaling {
                scale,
                mode,
                distribution,
                seed,
                input_axes,
                output_axes,
                ..
            } => {
                let (fan_in, fan_out) = compute_fans(key, shape, input_axes, output_axes)?;
                let mut s = scale.get();
                s /= match mode {
                    FanMode::FanIn => fan_in.max(1.0),
                    FanMode::FanOut => fan_out.max(1.0),
                    FanMode::FanAvg => ((fan_in + fan_out) / 2.0).max(1.0),
                };
                match distribution {
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
                        let mut rng = StdRng::seed_from_u64(seed_of(seed));
                        (0..n)
                            .map(|_| -limit + 2.0 * limit * rng.random::<f64>())
                            .collect()
                    }
                }
            }
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
            Initializer::Identity { gain } => {
                if shape.len() != 2 {
                    return Err(GruError::Shape {
                        what: format!("{key} (identity initializer)"),
                        expected: "a 2-D shape".into(),
                        got: format!("{shape:?}"),
                    });
                }
                let (r, c) = (shape[0], shape[1]);
                let mut v = vec![0.0; r * c];
                for i in 0..r.min(c) {
                    v[i * c + i] = gain.get();
                }
                v
            }
        })
    }
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
