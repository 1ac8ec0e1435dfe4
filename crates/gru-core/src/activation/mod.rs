//! Activations that a GRU can name: Keras' with their Keras 3 definitions, and the ONNX RNN
//! activations that take parameters ([`onnx`]).
//!
//! [`Activation::apply`] is the scalar definition in f64; backends (the Candle loop, the fused
//! CPU path) implement the same formulas and are tested against it.

pub mod onnx;

use crate::error::{GruError, Result};
pub use onnx::OnnxParam;
use serde_json::Value;

/// An elementwise Keras activation, as named in a GRU config.
///
/// Keras 3 definitions (defaults of their optional arguments, since a config string cannot
/// carry arguments):
/// - `hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)` (Keras 3, not Keras 2's `0.2x + 0.5`)
/// - `leaky_relu` has `negative_slope = 0.2`; `elu` and `celu` have `alpha = 1`
/// - `gelu` is the exact (erf) form, Keras' default `approximate=False`
/// - `None`/`"linear"` is the identity
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Activation {
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `clip(x / 6 + 0.5, 0, 1)`.
    HardSigmoid,
    /// `max(x, 0)`.
    Relu,
    /// Identity (Keras `None` or `"linear"`).
    Linear,
    /// `x if x > 0 else exp(x) - 1`.
    Elu,
    /// `scale * elu(x, alpha)` with Keras' SELU constants.
    Selu,
    /// `log(1 + exp(x))`, computed stably.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x * sigmoid(x)` (Keras `silu`, alias `swish`).
    Silu,
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `exp(x)`.
    Exponential,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x if x >= 0 else 0.2 x`.
    LeakyRelu,
    /// `clip(x, -1, 1)`.
    HardTanh,
    /// `-softplus(-x)`.
    LogSigmoid,
    /// `x * tanh(softplus(x))`.
    Mish,
    /// `x * hard_sigmoid(x)` (Keras `hard_silu`, alias `hard_swish`).
    HardSilu,
    /// `max(x, 0) + min(0, exp(x) - 1)` (alpha = 1).
    Celu,
    /// `x - tanh(x)`.
    TanhShrink,
    /// `(x + sqrt(x^2 + 4)) / 2` (b = 4).
    Squareplus,
    /// `0` for `x <= -1`, `x` for `x >= 1`, `(x + 1)^2 / 4` between.
    SparsePlus,
    /// `x` where `|x| > 0.5`, else 0 (threshold 0.5).
    HardShrink,
    /// `x - 0.5` above 0.5, `x + 0.5` below -0.5, else 0 (threshold 0.5).
    SoftShrink,
    /// ONNX `Affine`: `alpha * x + beta`.
    OnnxAffine {
        /// Slope.
        alpha: OnnxParam,
        /// Offset.
        beta: OnnxParam,
    },
    /// ONNX `LeakyRelu`: `x if x >= 0 else alpha * x`.
    OnnxLeakyRelu {
        /// Negative slope.
        alpha: OnnxParam,
    },
    /// ONNX `ThresholdedRelu`: `x if x > alpha else 0`.
    OnnxThresholdedRelu {
        /// Threshold.
        alpha: OnnxParam,
    },
    /// ONNX `ScaledTanh`: `alpha * tanh(beta * x)`.
    OnnxScaledTanh {
        /// Output scale.
        alpha: OnnxParam,
        /// Input scale.
        beta: OnnxParam,
    },
    /// ONNX `HardSigmoid`: `max(0, min(1, alpha * x + beta))` (ONNX's defaults 0.2 and 0.5,
    /// not Keras 3's 1/6 and 1/2).
    OnnxHardSigmoid {
        /// Slope.
        alpha: OnnxParam,
        /// Offset.
        beta: OnnxParam,
    },
    /// ONNX `Elu`: `x if x >= 0 else alpha * (exp(x) - 1)`.
    OnnxElu {
        /// Scale of the negative side.
        alpha: OnnxParam,
    },
}

/// Keras activations that act over an axis (or need arguments) and so cannot be a GRU gate's
/// elementwise activation.
const NOT_ELEMENTWISE: &[&str] = &["softmax", "log_softmax", "glu", "sparsemax", "threshold"];

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

impl Activation {
    /// Every Keras activation (the ones a Keras config can name), for tests and tables.
    pub const ALL: [Activation; 24] = [
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::HardSigmoid,
        Activation::Relu,
        Activation::Linear,
        Activation::Elu,
        Activation::Selu,
        Activation::Softplus,
        Activation::Softsign,
        Activation::Silu,
        Activation::Gelu,
        Activation::Exponential,
        Activation::Relu6,
        Activation::LeakyRelu,
        Activation::HardTanh,
        Activation::LogSigmoid,
        Activation::Mish,
        Activation::HardSilu,
        Activation::Celu,
        Activation::TanhShrink,
        Activation::Squareplus,
        Activation::SparsePlus,
        Activation::HardShrink,
        Activation::SoftShrink,
    ];

    /// The name Keras' `activations.serialize` writes; for an ONNX activation, its ONNX
    /// name with an `onnx:` prefix (see [`Activation::to_keras_value`] for its parameters).
    pub fn keras_name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Relu => "relu",
            Activation::Linear => "linear",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::Softplus => "softplus",
            Activation::Softsign => "softsign",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::Exponential => "exponential",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu => "leaky_relu",
            Activation::HardTanh => "hard_tanh",
            Activation::LogSigmoid => "log_sigmoid",
            Activation::Mish => "mish",
            Activation::HardSilu => "hard_silu",
            Activation::Celu => "celu",
            Activation::TanhShrink => "tanh_shrink",
            Activation::Squareplus => "squareplus",
            Activation::SparsePlus => "sparse_plus",
            Activation::HardShrink => "hard_shrink",
            Activation::SoftShrink => "soft_shrink",
            other => onnx::static_name(other),
        }
    }

    /// Looks up a Keras activation name (aliases `swish` and `hard_swish` included).
    ///
    /// ```
    /// use gru_core::Activation;
    /// assert_eq!(Activation::from_name("swish"), Some(Activation::Silu));
    /// assert_eq!(Activation::from_name("no_such"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Activation> {
        if let Some(rest) = name.strip_prefix("onnx:") {
            return onnx::parse(rest);
        }
        match name {
            "swish" => return Some(Activation::Silu),
            "hard_swish" => return Some(Activation::HardSilu),
            _ => {}
        }
        Activation::ALL
            .iter()
            .copied()
            .find(|a| a.keras_name() == name)
    }

    /// Reads a config value the way Keras' `activations.get` does: `null` (linear), a name,
    /// or the serialized dict `{"class_name": "function", "config": NAME, ...}`.
    pub fn from_keras_value(key: &str, value: &Value) -> Result<Activation> {
        let unknown = |got: String| GruError::UnknownIdentifier {
            kind: "activation",
            key: key.to_string(),
            got,
        };
        match value {
            Value::Null => Ok(Activation::Linear),
            Value::String(s) if NOT_ELEMENTWISE.contains(&s.as_str()) => {
                Err(crate::error::invalid(
                    key,
                    "an elementwise activation (softmax, log_softmax, glu, sparsemax and threshold act over an axis or need arguments)",
                    format!("{s:?}"),
                ))
            }
            Value::String(s) => Activation::from_name(s).ok_or_else(|| unknown(format!("{s:?}"))),
            Value::Object(map) => {
                let name = map
                    .get("config")
                    .and_then(Value::as_str)
                    .or_else(|| map.get("registered_name").and_then(Value::as_str))
                    .or_else(|| map.get("class_name").and_then(Value::as_str));
                name.and_then(Activation::from_name)
                    .ok_or_else(|| unknown(value.to_string()))
            }
            other => Err(unknown(other.to_string())),
        }
    }

    /// The value `get_config` writes: the activation's name as a JSON string. An ONNX
    /// activation has no Keras form: it is written as `"onnx:HardSigmoid(alpha=0.2,beta=0.5)"`,
    /// which [`Activation::from_keras_value`] reads back (Keras does not).
    pub fn to_keras_value(self) -> Value {
        Value::String(self.name())
    }

    /// The name with any parameters: the Keras name, or e.g.
    /// `onnx:HardSigmoid(alpha=0.2,beta=0.5)`.
    pub fn name(self) -> String {
        onnx::full_name(self).unwrap_or_else(|| self.keras_name().to_string())
    }

    /// The activation at one point, in f64 (the reference definition).
    ///
    /// ```
    /// use gru_core::Activation;
    /// assert_eq!(Activation::HardSigmoid.apply(3.0), 1.0);
    /// assert_eq!(Activation::HardSigmoid.apply(0.0), 0.5);
    /// ```
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid => hard_sigmoid(x),
            Activation::Relu => x.max(0.0),
            Activation::Linear => x,
            Activation::Elu => elu(x),
            Activation::Selu => SELU_SCALE * if x > 0.0 { x } else { SELU_ALPHA * x.exp_m1() },
            Activation::Softplus => softplus(x),
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Silu => x * sigmoid(x),
            Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::Exponential => x.exp(),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.2 * x
                }
            }
            Activation::HardTanh => x.clamp(-1.0, 1.0),
            Activation::LogSigmoid => -softplus(-x),
            Activation::Mish => x * softplus(x).tanh(),
            Activation::HardSilu => x * hard_sigmoid(x),
            Activation::Celu => x.max(0.0) + x.exp_m1().min(0.0),
            Activation::TanhShrink => x - x.tanh(),
            Activation::Squareplus => (x + (x * x + 4.0).sqrt()) / 2.0,
            Activation::SparsePlus => {
                if x <= -1.0 {
                    0.0
                } else if x >= 1.0 {
                    x
                } else {
                    (x + 1.0) * (x + 1.0) / 4.0
                }
            }
            Activation::HardShrink => {
                if x.abs() > 0.5 {
                    x
                } else {
                    0.0
                }
            }
            Activation::SoftShrink => x - x.clamp(-0.5, 0.5),
            other => onnx::apply(other, x),
        }
    }
}

impl Activation {
    /// The derivative at `x`, in f64 (the reference for every backward pass). At kinks the
    /// value is TensorFlow's choice: the right-side derivative where the function is flat on
    /// the left (relu, relu6 and hard_sigmoid at their lower corner give 0), else 1 inside.
    ///
    /// ```
    /// use gru_core::Activation;
    /// assert!((Activation::Tanh.derivative(0.5) - (1.0 - 0.5f64.tanh().powi(2))).abs() < 1e-15);
    /// assert_eq!(Activation::Relu.derivative(-1.0), 0.0);
    /// ```
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::HardSigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Activation::Relu => (x > 0.0) as u8 as f64,
            Activation::Linear => 1.0,
            Activation::Elu => {
                if x > 0.0 {
                    1.0
                } else {
                    x.exp()
                }
            }
            Activation::Selu => SELU_SCALE * if x > 0.0 { 1.0 } else { SELU_ALPHA * x.exp() },
            Activation::Softplus => sigmoid(x),
            Activation::Softsign => 1.0 / (1.0 + x.abs()).powi(2),
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Gelu => {
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2)) + x * pdf
            }
            Activation::Exponential => x.exp(),
            Activation::Relu6 => (x > 0.0 && x < 6.0) as u8 as f64,
            Activation::LeakyRelu => {
                if x >= 0.0 {
                    1.0
                } else {
                    0.2
                }
            }
            Activation::HardTanh => (x > -1.0 && x < 1.0) as u8 as f64,
            Activation::LogSigmoid => sigmoid(-x),
            Activation::Mish => {
                let sp = softplus(x);
                let t = sp.tanh();
                t + x * (1.0 - t * t) * sigmoid(x)
            }
            Activation::HardSilu => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    x / 3.0 + 0.5
                }
            }
            Activation::Celu => {
                if x > 0.0 {
                    1.0
                } else {
                    x.exp()
                }
            }
            Activation::TanhShrink => x.tanh().powi(2),
            Activation::Squareplus => 0.5 * (1.0 + x / (x * x + 4.0).sqrt()),
            Activation::SparsePlus => {
                if x <= -1.0 {
                    0.0
                } else if x >= 1.0 {
                    1.0
                } else {
                    (x + 1.0) / 2.0
                }
            }
            Activation::HardShrink => (x.abs() > 0.5) as u8 as f64,
            Activation::SoftShrink => (x.abs() > 0.5) as u8 as f64,
            other => onnx::derivative(other, x),
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn hard_sigmoid(x: f64) -> f64 {
    (x / 6.0 + 0.5).clamp(0.0, 1.0)
}

fn elu(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        x.exp_m1()
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The error function, to about 1e-15 (Taylor series for |x| < 2, continued fraction of
/// erfc beyond).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let v = if a < 2.0 {
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...)))),
        // evaluated from the tail.
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    };
    v.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_error() {
        for a in Activation::ALL {
            assert_eq!(Activation::from_name(a.keras_name()), Some(a));
            let v = a.to_keras_value();
            assert_eq!(Activation::from_keras_value("activation", &v).unwrap(), a);
        }
        let err = Activation::from_keras_value("activation", &Value::from("nope")).unwrap_err();
        assert!(err.to_string().contains("nope") && err.to_string().contains("activation"));
        assert_eq!(
            Activation::from_keras_value("activation", &Value::Null).unwrap(),
            Activation::Linear
        );
    }

    #[test]
    fn dict_form_is_read() {
        let v: Value = serde_json::json!({"module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": "relu"});
        assert_eq!(
            Activation::from_keras_value("activation", &v).unwrap(),
            Activation::Relu
        );
    }

    #[test]
    fn derivatives_match_finite_differences() {
        // Points away from every kink (0, +-0.5, +-1, +-3, 6).
        let xs = [
            -4.2, -2.1, -0.77, -0.31, 0.13, 0.42, 0.83, 1.7, 2.6, 4.4, 7.1,
        ];
        for a in Activation::ALL {
            for x in xs {
                let h = 1e-6;
                let fd = (a.apply(x + h) - a.apply(x - h)) / (2.0 * h);
                let d = a.derivative(x);
                assert!(
                    (fd - d).abs() < 1e-6 * (1.0 + d.abs()),
                    "{a:?}'({x}) = {d}, fd {fd}"
                );
            }
        }
    }

    #[test]
    fn hard_sigmoid_is_keras3() {
        assert_eq!(Activation::HardSigmoid.apply(-3.0), 0.0);
        assert_eq!(Activation::HardSigmoid.apply(1.5), 0.75);
        assert_eq!(Activation::HardSigmoid.apply(10.0), 1.0);
    }

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of erf.
        let cases = [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn smooth_activations_agree_with_their_identities() {
        for x in [-4.0, -1.0, -0.3, 0.0, 0.2, 1.0, 5.0] {
            let sp = Activation::Softplus.apply(x);
            assert!((sp - (1.0 + f64::exp(x)).ln()).abs() < 1e-14);
            assert!((Activation::LogSigmoid.apply(x) - sigmoid(x).ln()).abs() < 1e-14);
            assert!((Activation::Silu.apply(x) - x * sigmoid(x)).abs() < 1e-15);
        }
    }
}
