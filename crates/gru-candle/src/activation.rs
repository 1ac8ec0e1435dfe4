//! gru-core's activations as Candle tensor ops (differentiable).

use candle_core::{Result, Tensor};
use gru_core::Activation;

fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    (x / 6.0)?.affine(1.0, 0.5)?.clamp(0.0, 1.0)
}

fn softplus(x: &Tensor) -> Result<Tensor> {
    // max(x, 0) + log(1 + exp(-|x|)): no overflow for large |x|.
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Applies `act` elementwise, with the definitions of [`Activation::apply`].
pub fn apply(act: Activation, x: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        Activation::HardSigmoid => hard_sigmoid(x),
        Activation::Relu => x.relu(),
        Activation::Linear => Ok(x.clone()),
        Activation::Elu => x.elu(1.0),
        Activation::Selu => x
            .elu(1.673_263_242_354_377_3)?
            .affine(1.050_700_987_355_480_5, 0.0),
        Activation::Softplus => softplus(x),
        Activation::Softsign => x / (x.abs()? + 1.0)?,
        Activation::Silu => x.silu(),
        // Composed from erf rather than `gelu_erf`: candle's gelu_erf backward rounds
        // 1/sqrt(2 pi) to 0.398942 (a 7e-7 relative error); erf's backward is exact.
        Activation::Gelu => (x * ((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)?)? * 0.5,
        Activation::Exponential => x.exp(),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::LeakyRelu => x.maximum(&(x * 0.2)?),
        Activation::HardTanh => x.clamp(-1.0, 1.0),
        Activation::LogSigmoid => softplus(&x.neg()?)?.neg(),
        Activation::Mish => x * softplus(x)?.tanh()?,
        Activation::HardSilu => x * hard_sigmoid(x)?,
        Activation::Celu => x.relu()? + (x.exp()? - 1.0)?.minimum(0.0)?,
        Activation::TanhShrink => x - x.tanh()?,
        Activation::Squareplus => ((x.sqr()? + 4.0)?.sqrt()? + x)? / 2.0,
        Activation::SparsePlus => {
            let mid = ((x + 1.0)?.sqr()? / 4.0)?;
            let upper = x.ge(1.0)?.where_cond(x, &mid)?;
            x.le(-1.0)?.where_cond(&x.zeros_like()?, &upper)
        }
        Activation::HardShrink => x.mul(&x.abs()?.gt(0.5)?.to_dtype(x.dtype())?),
        Activation::SoftShrink => x - x.clamp(-0.5, 0.5)?,
        Activation::OnnxAffine { alpha, beta } => x.affine(p(alpha), p(beta)),
        Activation::OnnxLeakyRelu { alpha } => x.ge(0.0)?.where_cond(x, &(x * p(alpha))?),
        Activation::OnnxThresholdedRelu { alpha } => {
            x.gt(p(alpha))?.where_cond(x, &x.zeros_like()?)
        }
        Activation::OnnxScaledTanh { alpha, beta } => (x * p(beta))?.tanh()? * p(alpha),
        Activation::OnnxHardSigmoid { alpha, beta } => x.affine(p(alpha), p(beta))?.clamp(0.0, 1.0),
        Activation::OnnxElu { alpha } => x.elu(p(alpha)),
        other => candle_core::bail!("activation {} has no tensor form", other.name()),
    }
}

fn p(v: gru_core::activation::OnnxParam) -> f64 {
    v.value() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_activation_matches_the_core_definition() {
        let xs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.17).collect();
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let onnx = gru_core::activation::onnx::from_onnx(
            &[
                "Affine",
                "LeakyRelu",
                "ThresholdedRelu",
                "ScaledTanh",
                "HardSigmoid",
                "Elu",
            ],
            &[0.7, 0.05, 0.3, 1.3, 0.25, 0.9],
            &[0.2, 0.8, 0.45],
        )
        .unwrap();
        for act in Activation::ALL.into_iter().chain(onnx.clone()) {
            let got: Vec<f64> = apply(act, &t).unwrap().to_vec1().unwrap();
            for (x, g) in xs.iter().zip(got) {
                let want = act.apply(*x);
                assert!(
                    (g - want).abs() <= 1e-13 * (1.0 + want.abs()),
                    "{act:?}({x}) = {g}, core says {want}"
                );
            }
        }
    }

    #[test]
    fn every_activation_gradient_matches_the_core_derivative() {
        // Points off every kink (0, +-0.5, +-1, +-3, 6, the ONNX thresholds).
        let xs: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.17 + 0.013).collect();
        let onnx = gru_core::activation::onnx::from_onnx(
            &["Affine", "LeakyRelu", "ScaledTanh", "HardSigmoid", "Elu"],
            &[0.7, 0.05, 1.3, 0.25, 0.9],
            &[0.2, 0.8, 0.45],
        )
        .unwrap();
        for act in Activation::ALL.into_iter().chain(onnx) {
            let v = candle_core::Var::new(xs.as_slice(), &Device::Cpu).unwrap();
            let y = apply(act, v.as_tensor()).unwrap().sum_all().unwrap();
            let grads = y.backward().unwrap();
            let got: Vec<f64> = grads.get(v.as_tensor()).unwrap().to_vec1().unwrap();
            for (x, g) in xs.iter().zip(got) {
                let want = act.derivative(*x);
                assert!(
                    (g - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "{act:?}'({x}) = {g}, core says {want}"
                );
            }
        }
    }
}
