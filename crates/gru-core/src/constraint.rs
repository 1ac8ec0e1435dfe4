//! Keras weight constraints, applied to weights after each optimizer step.

use crate::error::{invalid, GruError, Result};
use crate::keras_object::{map_of, read_object, write_object, Axis, ConfigReader, Num};
use serde_json::Value;

/// Keras' `backend.epsilon()`.
pub const EPSILON: f64 = 1e-7;

/// A Keras constraint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Constraint {
    /// `w * clip(n, 0, max_value) / (eps + n)`, n = l2 norm over `axis`.
    MaxNorm {
        /// Largest norm.
        max_value: Num,
        /// Axis (or axes) the norm runs over.
        axis: Axis,
    },
    /// `max(w, 0)`.
    NonNeg,
    /// `w / (eps + n)`.
    UnitNorm {
        /// Axis (or axes) the norm runs over.
        axis: Axis,
    },
    /// `w * (rate * clip(n, min, max) + (1 - rate) * n) / (eps + n)`.
    MinMaxNorm {
        /// Smallest norm.
        min_value: Num,
        /// Largest norm.
        max_value: Num,
        /// Rate of enforcement.
        rate: Num,
        /// Axis (or axes) the norm runs over.
        axis: Axis,
    },
}

const ALIASES: &[(&str, &str)] = &[
    ("max_norm", "MaxNorm"),
    ("non_neg", "NonNeg"),
    ("unit_norm", "UnitNorm"),
    ("min_max_norm", "MinMaxNorm"),
];

impl Constraint {
    /// Reads what `constraints.get` accepts: `null` (none), a name or a serialized dict.
    pub fn from_keras_value(key: &str, value: &Value) -> Result<Option<Constraint>> {
        if value.is_null() {
            return Ok(None);
        }
        let obj = read_object("constraint", key, value, ALIASES)?;
        let c = match obj.class_name.as_str() {
            "MaxNorm" => {
                let r = ConfigReader::new(key, &obj, &["max_value", "axis"])?;
                Constraint::MaxNorm {
                    max_value: r.num("max_value", Num::Int(2))?,
                    axis: r.axis("axis", Axis::One(0))?,
                }
            }
            "NonNeg" => {
                ConfigReader::new(key, &obj, &[])?;
                Constraint::NonNeg
            }
            "UnitNorm" => {
                let r = ConfigReader::new(key, &obj, &["axis"])?;
                Constraint::UnitNorm {
                    axis: r.axis("axis", Axis::One(0))?,
                }
            }
            "MinMaxNorm" => {
                let r = ConfigReader::new(key, &obj, &["min_value", "max_value", "rate", "axis"])?;
                Constraint::MinMaxNorm {
                    min_value: r.num("min_value", Num::Float(0.0))?,
                    max_value: r.num("max_value", Num::Float(1.0))?,
                    rate: r.num("rate", Num::Float(1.0))?,
                    axis: r.axis("axis", Axis::One(0))?,
                }
            }
            other => {
                return Err(GruError::UnknownIdentifier {
                    kind: "constraint",
                    key: key.to_string(),
                    got: other.to_string(),
                })
            }
        };
        c.validate(key)?;
        Ok(Some(c))
    }

    /// The bounds are usable: finite, `max_value >= 0` for MaxNorm, `min_value <= max_value`
    /// for MinMaxNorm, a finite rate. (Keras accepts others and fails or misbehaves when the
    /// constraint is applied.)
    pub fn validate(&self, key: &str) -> Result<()> {
        let finite = |arg: &str, v: Num| match v.get().is_finite() {
            true => Ok(v.get()),
            false => Err(invalid(&format!("{key}.{arg}"), "a finite number", v.get())),
        };
        match *self {
            Constraint::MaxNorm { max_value, .. } => {
                if finite("max_value", max_value)? < 0.0 {
                    return Err(invalid(
                        &format!("{key}.max_value"),
                        "max_value >= 0",
                        max_value.get(),
                    ));
                }
            }
            Constraint::MinMaxNorm {
                min_value,
                max_value,
                rate,
                ..
            } => {
                let (lo, hi) = (
                    finite("min_value", min_value)?,
                    finite("max_value", max_value)?,
                );
                finite("rate", rate)?;
                if lo > hi {
                    let got = format!("min_value {lo} > max_value {hi}");
                    return Err(invalid(
                        &format!("{key}.min_value"),
                        "min_value <= max_value",
                        got,
                    ));
                }
            }
            Constraint::NonNeg | Constraint::UnitNorm { .. } => {}
        }
        Ok(())
    }

    /// The dict Keras' `constraints.serialize` writes.
    pub fn to_keras_value(&self) -> Value {
        let (class, config) = match self {
            Constraint::MaxNorm { max_value, axis } => (
                "MaxNorm",
                map_of(vec![
                    ("max_value", max_value.to_value()),
                    ("axis", axis.to_value()),
                ]),
            ),
            Constraint::NonNeg => ("NonNeg", map_of(vec![])),
            Constraint::UnitNorm { axis } => ("UnitNorm", map_of(vec![("axis", axis.to_value())])),
            Constraint::MinMaxNorm {
                min_value,
                max_value,
                rate,
                axis,
            } => (
                "MinMaxNorm",
                map_of(vec![
                    ("min_value", min_value.to_value()),
                    ("max_value", max_value.to_value()),
                    ("rate", rate.to_value()),
                    ("axis", axis.to_value()),
                ]),
            ),
        };
        write_object("keras.constraints", class, config)
    }

    /// Applies the constraint in place to a weight of `shape` (row-major `values`).
    ///
    /// ```
    /// use gru_core::{Axis, Constraint, Num};
    /// let mut w = vec![3.0, 0.0, 4.0, 0.0]; // (2, 2): column 0 has norm 5
    /// Constraint::MaxNorm { max_value: Num::Int(1), axis: Axis::One(0) }.apply("kernel", &[2, 2], &mut w).unwrap();
    /// assert!((w[0] - 0.6).abs() < 1e-6 && (w[2] - 0.8).abs() < 1e-6);
    /// ```
    pub fn apply(&self, key: &str, shape: &[usize], values: &mut [f64]) -> Result<()> {
        self.validate(key)?;
        let axis = match self {
            Constraint::NonNeg => {
                for v in values.iter_mut() {
                    *v = v.max(0.0);
                }
                return Ok(());
            }
            Constraint::MaxNorm { axis, .. }
            | Constraint::UnitNorm { axis }
            | Constraint::MinMaxNorm { axis, .. } => axis,
        };
        let axes = axis.resolve(key, shape.len())?;
        let norms = norms_keepdims(shape, &axes, values);
        for (i, v) in values.iter_mut().enumerate() {
            let n = norms[reduced_index(shape, &axes, i)];
            let factor = match self {
                Constraint::MaxNorm { max_value, .. } => {
                    n.clamp(0.0, max_value.get()) / (EPSILON + n)
                }
                Constraint::UnitNorm { .. } => 1.0 / (EPSILON + n),
                Constraint::MinMaxNorm {
                    min_value,
                    max_value,
                    rate,
                    ..
                } => {
                    let desired = rate.get() * n.clamp(min_value.get(), max_value.get())
                        + (1.0 - rate.get()) * n;
                    desired / (EPSILON + n)
                }
                Constraint::NonNeg => unreachable!("handled above"),
            };
            *v *= factor;
        }
        Ok(())
    }
}

/// Index of element `flat` in the array reduced over `axes` (kept as size 1).
fn reduced_index(shape: &[usize], axes: &[usize], mut flat: usize) -> usize {
    let mut idx = 0;
    let mut stride = 1;
    let mut coords = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        coords[d] = flat % shape[d];
        flat /= shape[d];
    }
    for d in (0..shape.len()).rev() {
        if !axes.contains(&d) {
            idx += coords[d] * stride;
            stride *= shape[d];
        }
    }
    idx
}

fn norms_keepdims(shape: &[usize], axes: &[usize], values: &[f64]) -> Vec<f64> {
    let out_len: usize = shape
        .iter()
        .enumerate()
        .filter(|(d, _)| !axes.contains(d))
        .map(|(_, s)| *s)
        .product();
    let mut sums = vec![0.0; out_len];
    for (i, v) in values.iter().enumerate() {
        sums[reduced_index(shape, axes, i)] += v * v;
    }
    sums.into_iter().map(f64::sqrt).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unit_norm_axis_1_normalizes_rows() {
        let mut w = vec![3.0, 4.0, 0.0, 2.0];
        Constraint::UnitNorm { axis: Axis::One(1) }
            .apply("k", &[2, 2], &mut w)
            .unwrap();
        assert!((w[0] - 0.6).abs() < 1e-6 && (w[1] - 0.8).abs() < 1e-6);
        assert!((w[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn min_max_norm_rate_half() {
        let mut w = vec![3.0, 4.0]; // 1-D, norm 5
        Constraint::MinMaxNorm {
            min_value: Num::Float(0.0),
            max_value: Num::Float(1.0),
            rate: Num::Float(0.5),
            axis: Axis::Many(vec![0]),
        }
        .apply("bias", &[2], &mut w)
        .unwrap();
        let n = (w[0] * w[0] + w[1] * w[1]).sqrt();
        assert!((n - 3.0).abs() < 1e-5);
    }

    #[test]
    fn nonneg_and_bad_axis() {
        let mut w = vec![-1.0, 2.0];
        Constraint::NonNeg.apply("b", &[2], &mut w).unwrap();
        assert_eq!(w, vec![0.0, 2.0]);
        assert!(Constraint::UnitNorm { axis: Axis::One(2) }
            .apply("b", &[2], &mut w)
            .is_err());
    }

    #[test]
    fn default_max_norm_serializes_int() {
        let c = Constraint::from_keras_value("k", &json!("max_norm"))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.to_keras_value()["config"],
            json!({"max_value": 2, "axis": 0})
        );
    }
}
