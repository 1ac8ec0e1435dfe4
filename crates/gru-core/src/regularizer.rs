//! Keras weight and activity regularizers: their loss values and (de)serialization.

use crate::error::{invalid, GruError, Result};
use crate::keras_object::{map_of, read_object, write_object, ConfigReader, Num};
use serde_json::Value;

/// Which axis `OrthogonalRegularizer` treats as the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrthoMode {
    /// Rows are the vectors.
    Rows,
    /// Columns are the vectors.
    Columns,
}

/// A Keras regularizer. Its loss is added by the training loop.
///
/// Keras keeps `L1.l1` and `OrthogonalRegularizer.factor` as float32 tensors, so their
/// values are rounded to f32 here as well (`"l1"` gives `0.009999999776482582`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Regularizer {
    /// `l1 * sum(|w|)`.
    L1 {
        /// Factor (rounded to f32, as Keras stores it).
        l1: f64,
    },
    /// `l2 * sum(w^2)`.
    L2 {
        /// Factor.
        l2: f64,
    },
    /// `l1 * sum(|w|) + l2 * sum(w^2)`.
    L1L2 {
        /// L1 factor.
        l1: f64,
        /// L2 factor.
        l2: f64,
    },
    /// `factor * 0.5 * sum(|N N^T - diag|) / (n (n-1) / 2)` over l2-normalized rows/columns.
    Orthogonal {
        /// Factor (rounded to f32, as Keras stores it).
        factor: f64,
        /// Rows or columns.
        mode: OrthoMode,
    },
}

const ALIASES: &[(&str, &str)] = &[
    ("l1", "L1"),
    ("l2", "L2"),
    ("l1l2", "L1L2"),
    ("orthogonal_regularizer", "OrthogonalRegularizer"),
];

fn penalty(key: &str, arg: &str, n: Num) -> Result<f64> {
    let v = n.get();
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(&format!("{key}.{arg}"), "a non-negative float", v));
    }
    Ok(v)
}

/// A factor Keras keeps as a float32 tensor (`L1.l1`, `OrthogonalRegularizer.factor`): one
/// past float32's range would become infinite (and be written as `null`).
fn f32_penalty(key: &str, arg: &str, n: Num) -> Result<f64> {
    let v = penalty(key, arg, n)?;
    if !(v as f32).is_finite() {
        let what = "a non-negative float within float32's range (Keras stores it as float32)";
        return Err(invalid(&format!("{key}.{arg}"), what, v));
    }
    Ok(v)
}

impl Regularizer {
    /// `L1(l1)` with Keras' float32 storage of the factor.
    pub fn l1(l1: f64) -> Regularizer {
        Regularizer::L1 {
            l1: l1 as f32 as f64,
        }
    }

    /// Reads what `regularizers.get` accepts: `null` (none), a name or a serialized dict.
    pub fn from_keras_value(key: &str, value: &Value) -> Result<Option<Regularizer>> {
        if value.is_null() {
            return Ok(None);
        }
        let obj = read_object("regularizer", key, value, ALIASES)?;
        let reg = match obj.class_name.as_str() {
            "L1" => {
                let r = ConfigReader::new(key, &obj, &["l1"])?;
                Regularizer::l1(f32_penalty(key, "l1", r.num("l1", Num::Float(0.01))?)?)
            }
            "L2" => {
                let r = ConfigReader::new(key, &obj, &["l2"])?;
                Regularizer::L2 {
                    l2: penalty(key, "l2", r.num("l2", Num::Float(0.01))?)?,
                }
            }
            "L1L2" => {
                let r = ConfigReader::new(key, &obj, &["l1", "l2"])?;
                Regularizer::L1L2 {
                    l1: penalty(key, "l1", r.num("l1", Num::Float(0.0))?)?,
                    l2: penalty(key, "l2", r.num("l2", Num::Float(0.0))?)?,
                }
            }
            "OrthogonalRegularizer" => {
                let r = ConfigReader::new(key, &obj, &["factor", "mode"])?;
                let factor = f32_penalty(key, "factor", r.num("factor", Num::Float(0.01))?)?;
                let mode = match r.choice("mode", "rows", &["rows", "columns"])?.as_str() {
                    "rows" => OrthoMode::Rows,
                    _ => OrthoMode::Columns,
                };
                Regularizer::Orthogonal {
                    factor: factor as f32 as f64,
                    mode,
                }
            }
            other => {
                return Err(GruError::UnknownIdentifier {
                    kind: "regularizer",
                    key: key.to_string(),
                    got: other.to_string(),
                })
            }
        };
        Ok(Some(reg))
    }

    /// Every factor is finite and non-negative (so that the loss is finite and the factor can
    /// be written back as Keras writes it).
    pub fn validate(&self, key: &str) -> Result<()> {
        let check = |arg: &str, v: f64| penalty(key, arg, Num::Float(v)).map(|_| ());
        match *self {
            Regularizer::L1 { l1 } => check("l1", l1),
            Regularizer::L2 { l2 } => check("l2", l2),
            Regularizer::L1L2 { l1, l2 } => check("l1", l1).and(check("l2", l2)),
            Regularizer::Orthogonal { factor, .. } => check("factor", factor),
        }
    }

    /// The dict Keras' `regularizers.serialize` writes.
    pub fn to_keras_value(&self) -> Value {
        let (class, config) = match *self {
            Regularizer::L1 { l1 } => ("L1", map_of(vec![("l1", Value::from(l1))])),
            Regularizer::L2 { l2 } => ("L2", map_of(vec![("l2", Value::from(l2))])),
            Regularizer::L1L2 { l1, l2 } => (
                "L1L2",
                map_of(vec![("l1", Value::from(l1)), ("l2", Value::from(l2))]),
            ),
            Regularizer::Orthogonal { factor, mode } => (
                "OrthogonalRegularizer",
                map_of(vec![
                    ("factor", Value::from(factor)),
                    (
                        "mode",
                        Value::from(match mode {
                            OrthoMode::Rows => "rows",
                            OrthoMode::Columns => "columns",
                        }),
                    ),
                ]),
            ),
        };
        write_object("keras.regularizers", class, config)
    }

    /// The loss of a weight with `shape` and row-major `values`.
    ///
    /// ```
    /// use gru_core::Regularizer;
    /// let r = Regularizer::L1L2 { l1: 0.5, l2: 0.25 };
    /// assert_eq!(r.loss(&[2], &[1.0, -2.0]).unwrap(), 0.5 * 3.0 + 0.25 * 5.0);
    /// ```
    pub fn loss(&self, shape: &[usize], values: &[f64]) -> Result<f64> {
        let l1 = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>();
        let l2 = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        Ok(match *self {
            Regularizer::L1 { l1: f } => f * l1(values),
            Regularizer::L2 { l2: f } => f * l2(values),
            Regularizer::L1L2 { l1: a, l2: b } => {
                let mut s = 0.0;
                if a != 0.0 {
                    s += a * l1(values);
                }
                if b != 0.0 {
                    s += b * l2(values);
                }
                s
            }
            Regularizer::Orthogonal { factor, mode } => {
                if shape.len() != 2 {
                    return Err(GruError::Shape {
                        what: "OrthogonalRegularizer input".into(),
                        expected: "rank 2".into(),
                        got: format!("{shape:?}"),
                    });
                }
                let (r, c) = (shape[0], shape[1]);
                // The vectors as rows of an (n, len) matrix.
                let (n, len, vecs) = match mode {
                    OrthoMode::Rows => (r, c, values.to_vec()),
                    OrthoMode::Columns => {
                        let mut t = vec![0.0; r * c];
                        for i in 0..r {
                            for j in 0..c {
                                t[j * r + i] = values[i * c + j];
                            }
                        }
                        (c, r, t)
                    }
                };
                let row = |i: usize| &vecs[i * len..(i + 1) * len];
                let norms: Vec<f64> = (0..n)
                    .map(|i| row(i).iter().map(|v| v * v).sum::<f64>().max(1e-12).sqrt())
                    .collect();
                let mut total = 0.0;
                for i in 0..n {
                    for j in 0..n {
                        if i != j {
                            let d: f64 = row(i).iter().zip(row(j)).map(|(a, b)| a * b).sum();
                            total += (d / (norms[i] * norms[j])).abs();
                        }
                    }
                }
                let pairs = n as f64 * (n as f64 - 1.0) / 2.0;
                factor * 0.5 * total / pairs
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn l1_is_stored_as_f32() {
        let r = Regularizer::from_keras_value("k", &json!("l1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            r.to_keras_value()["config"]["l1"],
            json!(0.009999999776482582)
        );
        let r = Regularizer::from_keras_value("k", &json!("l2"))
            .unwrap()
            .unwrap();
        assert_eq!(r.to_keras_value()["config"]["l2"], json!(0.01));
    }

    #[test]
    fn losses() {
        let w = [1.0, -2.0, 3.0, -4.0];
        assert_eq!(
            Regularizer::L2 { l2: 0.1 }.loss(&[4], &w).unwrap(),
            0.1 * 30.0
        );
        assert_eq!(Regularizer::L1 { l1: 0.5 }.loss(&[4], &w).unwrap(), 5.0);
        // Orthogonal rows give zero loss; parallel rows give factor * 1.
        let o = Regularizer::Orthogonal {
            factor: 1.0,
            mode: OrthoMode::Rows,
        };
        assert!(o.loss(&[2, 2], &[1.0, 0.0, 0.0, 2.0]).unwrap().abs() < 1e-15);
        assert!((o.loss(&[2, 2], &[1.0, 1.0, 2.0, 2.0]).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_unknown_and_negative() {
        assert!(Regularizer::from_keras_value(
            "k",
            &json!({"class_name": "NoSuchReg", "config": {}})
        )
        .is_err());
        assert!(Regularizer::from_keras_value("k", &json!("l1_l2")).is_err());
        assert!(Regularizer::from_keras_value(
            "k",
            &json!({"class_name": "L2", "config": {"l2": -1.0}})
        )
        .is_err());
    }
}
