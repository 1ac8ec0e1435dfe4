//! gru-core's regularizers as differentiable Candle losses.

use candle_core::{Result, Tensor};
use gru_core::{OrthoMode, Regularizer};

/// The loss of `x` under `reg`, as a scalar tensor of `x`'s dtype (differentiable).
pub fn loss(reg: &Regularizer, x: &Tensor) -> Result<Tensor> {
    let l1 = |f: f64| x.abs()?.sum_all()? * f;
    let l2 = |f: f64| x.sqr()?.sum_all()? * f;
    match *reg {
        Regularizer::L1 { l1: f } => l1(f),
        Regularizer::L2 { l2: f } => l2(f),
        Regularizer::L1L2 { l1: a, l2: b } => {
            let mut s = x.zeros_like()?.sum_all()?;
            if a != 0.0 {
                s = (s + l1(a)?)?;
            }
            if b != 0.0 {
                s = (s + l2(b)?)?;
            }
            Ok(s)
        }
        Regularizer::Orthogonal { factor, mode } => {
            let (r, c) = x.dims2()?;
            let v = match mode {
                OrthoMode::Rows => x.clone(),
                OrthoMode::Columns => x.t()?,
            };
            let n = if mode == OrthoMode::Rows { r } else { c };
            let norms = v.sqr()?.sum_keepdim(1)?.maximum(1e-12)?.sqrt()?;
            let unit = v.broadcast_div(&norms)?;
            let prod = unit.matmul(&unit.t()?)?;
            let eye = Tensor::eye(n, x.dtype(), x.device())?;
            let off = (prod.abs()? - eye.mul(&prod.abs()?)?)?;
            let pairs = n as f64 * (n as f64 - 1.0) / 2.0;
            off.sum_all()? * (factor * 0.5 / pairs)
        }
        _ => candle_core::bail!("regularizer {reg:?} has no tensor form"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tensor_losses_match_core() {
        let vals: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3).collect();
        let t = Tensor::from_vec(vals.clone(), (3, 4), &Device::Cpu).unwrap();
        for reg in [
            Regularizer::l1(0.01),
            Regularizer::L2 { l2: 0.3 },
            Regularizer::L1L2 { l1: 0.1, l2: 0.2 },
            Regularizer::Orthogonal {
                factor: 0.5,
                mode: OrthoMode::Rows,
            },
            Regularizer::Orthogonal {
                factor: 0.5,
                mode: OrthoMode::Columns,
            },
        ] {
            let got: f64 = loss(&reg, &t).unwrap().to_scalar().unwrap();
            let want = reg.loss(&[3, 4], &vals).unwrap();
            assert!((got - want).abs() < 1e-12, "{reg:?}: {got} vs {want}");
        }
    }
}
