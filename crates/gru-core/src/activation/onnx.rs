//! The activations of ONNX's RNN operators that take parameters (`Affine`, `LeakyRelu`,
//! `ThresholdedRelu`, `ScaledTanh`, `HardSigmoid`, `Elu`), and how an ONNX node's
//! `activations`, `activation_alpha` and `activation_beta` attributes become [`Activation`]s.
//! ONNX's `Relu`, `Tanh`, `Sigmoid`, `Softsign` and `Softplus` are Keras' functions and map to
//! the Keras variants.

use super::Activation;

/// An ONNX activation's parameter. ONNX attributes are float32; the value is kept as its
/// bits so that activations stay `Eq` and `Hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnnxParam(u32);

impl OnnxParam {
    /// The parameter `v`.
    pub fn new(v: f32) -> OnnxParam {
        OnnxParam(v.to_bits())
    }

    /// Its float32 value.
    pub fn value(self) -> f32 {
        f32::from_bits(self.0)
    }

    fn get(self) -> f64 {
        self.value() as f64
    }
}

/// How an ONNX activation name reads: whether it takes alpha and beta, and their defaults
/// when the node gives none (those of the ONNX operator of that name).
struct OnnxKind {
    name: &'static str,
    alpha: Option<f32>,
    beta: Option<f32>,
}

const KINDS: [OnnxKind; 11] = [
    OnnxKind {
        name: "Affine",
        alpha: Some(1.0),
        beta: Some(0.0),
    },
    OnnxKind {
        name: "LeakyRelu",
        alpha: Some(0.01),
        beta: None,
    },
    OnnxKind {
        name: "ThresholdedRelu",
        alpha: Some(1.0),
        beta: None,
    },
    OnnxKind {
        name: "ScaledTanh",
        alpha: Some(1.0),
        beta: Some(1.0),
    },
    OnnxKind {
        name: "HardSigmoid",
        alpha: Some(0.2),
        beta: Some(0.5),
    },
    OnnxKind {
        name: "Elu",
        alpha: Some(1.0),
        beta: None,
    },
    OnnxKind {
        name: "Relu",
        alpha: None,
        beta: None,
    },
    OnnxKind {
        name: "Tanh",
        alpha: None,
        beta: None,
    },
    OnnxKind {
        name: "Sigmoid",
        alpha: None,
        beta: None,
    },
    OnnxKind {
        name: "Softsign",
        alpha: None,
        beta: None,
    },
    OnnxKind {
        name: "Softplus",
        alpha: None,
        beta: None,
    },
];

fn kind(name: &str) -> Option<&'static OnnxKind> {
    KINDS.iter().find(|k| k.name.eq_ignore_ascii_case(name))
}

fn build(name: &str, alpha: f32, beta: f32) -> Option<Activation> {
    let (a, b) = (OnnxParam::new(alpha), OnnxParam::new(beta));
    Some(match kind(name)?.name {
        "Affine" => Activation::OnnxAffine { alpha: a, beta: b },
        "LeakyRelu" => Activation::OnnxLeakyRelu { alpha: a },
        "ThresholdedRelu" => Activation::OnnxThresholdedRelu { alpha: a },
        "ScaledTanh" => Activation::OnnxScaledTanh { alpha: a, beta: b },
        "HardSigmoid" => Activation::OnnxHardSigmoid { alpha: a, beta: b },
        "Elu" => Activation::OnnxElu { alpha: a },
        "Relu" => Activation::Relu,
        "Tanh" => Activation::Tanh,
        "Sigmoid" => Activation::Sigmoid,
        "Softsign" => Activation::Softsign,
        _ => Activation::Softplus,
    })
}

/// The activations of an ONNX node's `activations` attribute, each taking the next alpha
/// and beta it needs from `alphas` and `betas` (in order, across the whole list); a missing
/// one takes its operator's default. `Err(name)` names an activation ONNX does not define.
///
/// ```
/// use gru_core::Activation;
/// use gru_core::activation::onnx::from_onnx;
/// let acts = from_onnx(&["HardSigmoid", "Relu", "LeakyRelu"], &[0.3], &[0.6]).unwrap();
/// assert_eq!(acts[0].apply(1.0), (0.3f32 as f64) + (0.6f32 as f64));
/// assert_eq!(acts[1], Activation::Relu);
/// assert_eq!(acts[2].apply(-1.0), -(0.01f32 as f64)); // no alpha left: LeakyRelu's 0.01
/// ```
pub fn from_onnx(names: &[&str], alphas: &[f32], betas: &[f32]) -> Result<Vec<Activation>, String> {
    let (mut a, mut b) = (alphas.iter(), betas.iter());
    names
        .iter()
        .map(|n| {
            let k = kind(n).ok_or_else(|| n.to_string())?;
            let alpha = k
                .alpha
                .map(|d| a.next().copied().unwrap_or(d))
                .unwrap_or(0.0);
            let beta = k
                .beta
                .map(|d| b.next().copied().unwrap_or(d))
                .unwrap_or(0.0);
            build(n, alpha, beta).ok_or_else(|| n.to_string())
        })
        .collect()
}

/// How ONNX writes `act`: its operator name with the alpha and beta it takes, or `None`
/// when ONNX's RNN activations cannot express it (Keras' selu, gelu, silu, ...). Keras'
/// hard_sigmoid is ONNX's HardSigmoid(1/6, 1/2), linear is Affine(1, 0), leaky_relu is
/// LeakyRelu(0.2), elu is Elu(1).
///
/// ```
/// use gru_core::Activation;
/// use gru_core::activation::onnx::to_onnx;
/// assert_eq!(to_onnx(Activation::Tanh), Some(("Tanh", None, None)));
/// assert_eq!(to_onnx(Activation::HardSigmoid), Some(("HardSigmoid", Some(1.0 / 6.0), Some(0.5))));
/// assert_eq!(to_onnx(Activation::Selu), None);
/// ```
pub fn to_onnx(act: Activation) -> Option<(&'static str, Option<f32>, Option<f32>)> {
    let v = |p: OnnxParam| Some(p.value());
    Some(match act {
        Activation::Tanh => ("Tanh", None, None),
        Activation::Sigmoid => ("Sigmoid", None, None),
        Activation::Relu => ("Relu", None, None),
        Activation::Softsign => ("Softsign", None, None),
        Activation::Softplus => ("Softplus", None, None),
        Activation::HardSigmoid => ("HardSigmoid", Some(1.0 / 6.0), Some(0.5)),
        Activation::Linear => ("Affine", Some(1.0), Some(0.0)),
        Activation::LeakyRelu => ("LeakyRelu", Some(0.2), None),
        Activation::Elu => ("Elu", Some(1.0), None),
        Activation::OnnxAffine { alpha, beta } => ("Affine", v(alpha), v(beta)),
        Activation::OnnxLeakyRelu { alpha } => ("LeakyRelu", v(alpha), None),
        Activation::OnnxThresholdedRelu { alpha } => ("ThresholdedRelu", v(alpha), None),
        Activation::OnnxScaledTanh { alpha, beta } => ("ScaledTanh", v(alpha), v(beta)),
        Activation::OnnxHardSigmoid { alpha, beta } => ("HardSigmoid", v(alpha), v(beta)),
        Activation::OnnxElu { alpha } => ("Elu", v(alpha), None),
        _ => return None,
    })
}

/// The ONNX name of an ONNX-only activation, `onnx:` prefixed.
pub(super) fn static_name(act: Activation) -> &'static str {
    match act {
        Activation::OnnxAffine { .. } => "onnx:Affine",
        Activation::OnnxLeakyRelu { .. } => "onnx:LeakyRelu",
        Activation::OnnxThresholdedRelu { .. } => "onnx:ThresholdedRelu",
        Activation::OnnxScaledTanh { .. } => "onnx:ScaledTanh",
        Activation::OnnxHardSigmoid { .. } => "onnx:HardSigmoid",
        Activation::OnnxElu { .. } => "onnx:Elu",
        _ => "",
    }
}

/// `onnx:Name(alpha=..,beta=..)` for an ONNX-only activation.
pub(super) fn full_name(act: Activation) -> Option<String> {
    let (alpha, beta) = params(act)?;
    let mut s = format!("{}(alpha={}", static_name(act), alpha.value());
    if let Some(b) = beta {
        s.push_str(&format!(",beta={}", b.value()));
    }
    s.push(')');
    Some(s)
}

fn params(act: Activation) -> Option<(OnnxParam, Option<OnnxParam>)> {
    match act {
        Activation::OnnxAffine { alpha, beta }
        | Activation::OnnxScaledTanh { alpha, beta }
        | Activation::OnnxHardSigmoid { alpha, beta } => Some((alpha, Some(beta))),
        Activation::OnnxLeakyRelu { alpha }
        | Activation::OnnxThresholdedRelu { alpha }
        | Activation::OnnxElu { alpha } => Some((alpha, None)),
        _ => None,
    }
}

/// Reads `Name(alpha=..,beta=..)` (the part after `onnx:`) back.
pub(super) fn parse(s: &str) -> Option<Activation> {
    let (name, args) = match s.split_once('(') {
        Some((n, rest)) => (n, rest.strip_suffix(')')?),
        None => (s, ""),
    };
    let k = kind(name)?;
    let (mut alpha, mut beta) = (k.alpha, k.beta);
    for part in args.split(',').filter(|p| !p.is_empty()) {
        let (key, v) = part.split_once('=')?;
        let v: f32 = v.trim().parse().ok()?;
        match key.trim() {
            "alpha" if alpha.is_some() => alpha = Some(v),
            "beta" if beta.is_some() => beta = Some(v),
            _ => return None,
        }
    }
    build(name, alpha.unwrap_or(0.0), beta.unwrap_or(0.0)).filter(|a| static_name(*a).len() > 5)
}

pub(super) fn apply(act: Activation, x: f64) -> f64 {
    match act {
        Activation::OnnxAffine { alpha, beta } => alpha.get() * x + beta.get(),
        Activation::OnnxLeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha.get() * x
            }
        }
        Activation::OnnxThresholdedRelu { alpha } => {
            if x > alpha.get() {
                x
            } else {
                0.0
            }
        }
        Activation::OnnxScaledTanh { alpha, beta } => alpha.get() * (beta.get() * x).tanh(),
        Activation::OnnxHardSigmoid { alpha, beta } => {
            (alpha.get() * x + beta.get()).clamp(0.0, 1.0)
        }
        Activation::OnnxElu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha.get() * x.exp_m1()
            }
        }
        other => other.apply(x),
    }
}

pub(super) fn derivative(act: Activation, x: f64) -> f64 {
    match act {
        Activation::OnnxAffine { alpha, .. } => alpha.get(),
        Activation::OnnxLeakyRelu { alpha } => {
            if x >= 0.0 {
                1.0
            } else {
                alpha.get()
            }
        }
        Activation::OnnxThresholdedRelu { alpha } => (x > alpha.get()) as u8 as f64,
        Activation::OnnxScaledTanh { alpha, beta } => {
            alpha.get() * beta.get() * (1.0 - (beta.get() * x).tanh().powi(2))
        }
        Activation::OnnxHardSigmoid { alpha, beta } => {
            let y = alpha.get() * x + beta.get();
            if y > 0.0 && y < 1.0 {
                alpha.get()
            } else {
                0.0
            }
        }
        Activation::OnnxElu { alpha } => {
            if x >= 0.0 {
                1.0
            } else {
                alpha.get() * x.exp()
            }
        }
        other => other.derivative(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Activation> {
        let names = [
            "Affine",
            "LeakyRelu",
            "ThresholdedRelu",
            "ScaledTanh",
            "HardSigmoid",
            "Elu",
        ];
        from_onnx(&names, &[0.7, 0.05, 0.3, 1.3, 0.25, 0.9], &[0.2, 0.8, 0.45]).unwrap()
    }

    #[test]
    fn names_round_trip_with_their_parameters() {
        for a in all() {
            assert_eq!(Activation::from_name(&a.name()), Some(a), "{}", a.name());
        }
        assert_eq!(
            Activation::from_name("onnx:HardSigmoid"),
            from_onnx(&["HardSigmoid"], &[], &[]).ok().map(|v| v[0])
        );
        assert_eq!(
            Activation::from_name("onnx:Relu"),
            None,
            "Relu is Keras' relu"
        );
        assert_eq!(Activation::from_name("onnx:Elu(beta=1)"), None);
        assert_eq!(from_onnx(&["Swish"], &[], &[]), Err("Swish".into()));
    }

    #[test]
    fn alphas_and_betas_are_consumed_in_order_with_onnx_defaults() {
        let acts = from_onnx(
            &["sigmoid", "ScaledTanh", "HardSigmoid", "LeakyRelu"],
            &[2.0],
            &[],
        )
        .unwrap();
        assert_eq!(acts[0], Activation::Sigmoid);
        // ScaledTanh takes alpha 2 and (none left) its default beta 1.
        assert!((acts[1].apply(0.5) - 2.0 * 0.5f64.tanh()).abs() < 1e-12);
        // HardSigmoid gets ONNX's 0.2 / 0.5, LeakyRelu 0.01.
        assert!((acts[2].apply(1.0) - (0.2f32 as f64 + 0.5)).abs() < 1e-12);
        assert_eq!(acts[3].apply(-2.0), -2.0 * 0.01f32 as f64);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for a in all() {
            for i in -30..=30 {
                let x = i as f64 * 0.137 + 0.011;
                let h = 1e-6;
                let fd = (a.apply(x + h) - a.apply(x - h)) / (2.0 * h);
                assert!(
                    (fd - a.derivative(x)).abs() < 1e-5,
                    "{} at {x}: {fd} vs {}",
                    a.name(),
                    a.derivative(x)
                );
            }
        }
    }
}
