//! Keras' merge layers, which join the branches of a functional graph: `Add`, `Subtract`,
//! `Multiply`, `Average`, `Maximum`, `Minimum` (elementwise over inputs of one shape) and
//! `Concatenate` (over the last axis), with the masks Keras 3 gives their outputs.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor, D};
use gru_core::GruError;

/// Which Keras' rule gives a merge layer's output its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskRule {
    /// Keras 3: the OR of the inputs' masks when every input has one, else none; the
    /// values of `Multiply`, `Maximum`, `Minimum` depend on the masks.
    #[default]
    Keras3,
    /// Keras 2 (models written by TensorFlow 2's Keras): the AND of the masks the inputs
    /// have (none when none has one); the values never depend on masks.
    Keras2,
}

/// The operation of a merge layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOp {
    /// `Add`: the sum.
    Add,
    /// `Subtract`: the first minus the second (exactly two inputs).
    Subtract,
    /// `Multiply`: the product.
    Multiply,
    /// `Average`: the mean.
    Average,
    /// `Maximum`: the elementwise maximum.
    Maximum,
    /// `Minimum`: the elementwise minimum.
    Minimum,
    /// `Concatenate` over the last axis.
    Concatenate,
}

impl MergeOp {
    /// The operation of a Keras merge class, if it is one.
    pub fn from_class(class: &str) -> Option<MergeOp> {
        Some(match class {
            "Add" => MergeOp::Add,
            "Subtract" => MergeOp::Subtract,
            "Multiply" => MergeOp::Multiply,
            "Average" => MergeOp::Average,
            "Maximum" => MergeOp::Maximum,
            "Minimum" => MergeOp::Minimum,
            "Concatenate" => MergeOp::Concatenate,
            _ => return None,
        })
    }

    /// Whether Keras 3 makes the values depend on the inputs' masks (`Multiply`, `Maximum`
    /// and `Minimum` replace masked entries); those are run only on unmasked inputs.
    pub fn values_depend_on_masks(self, rule: MaskRule) -> bool {
        rule == MaskRule::Keras3
            && matches!(
                self,
                MergeOp::Multiply | MergeOp::Maximum | MergeOp::Minimum
            )
    }

    /// Joins the inputs (cast to the widest of their dtypes).
    pub fn forward(self, xs: &[Tensor]) -> Result<Tensor> {
        let dtype = widest(xs);
        let xs: Vec<Tensor> = xs
            .iter()
            .map(|x| x.to_dtype(dtype))
            .collect::<candle_core::Result<_>>()?;
        let [first, rest @ ..] = xs.as_slice() else {
            return Err(shape_error("a merge layer's inputs", "at least one", 0));
        };
        if self == MergeOp::Subtract && rest.len() != 1 {
            return Err(shape_error("Subtract's inputs", "exactly 2", xs.len()));
        }
        if self == MergeOp::Concatenate {
            return Ok(Tensor::cat(&xs, D::Minus1)?);
        }
        let mut out = first.clone();
        for x in rest {
            if x.dims() != out.dims() {
                return Err(Error::Gru(GruError::Shape {
                    what: "a merge layer's inputs".into(),
                    expected: format!("all of shape {:?}", out.dims()),
                    got: format!("{:?}", x.dims()),
                }));
            }
            out = match self {
                MergeOp::Add | MergeOp::Average => (out + x)?,
                MergeOp::Subtract => (out - x)?,
                MergeOp::Multiply => (out * x)?,
                MergeOp::Maximum => out.maximum(x)?,
                MergeOp::Minimum => out.minimum(x)?,
                MergeOp::Concatenate => unreachable!("handled above"),
            };
        }
        if self == MergeOp::Average {
            out = (out / xs.len() as f64)?;
        }
        Ok(out)
    }

    /// The mask of the output, from the inputs' (batch, T) masks, by `rule`: Keras 3 ORs
    /// them when every input has one (`Concatenate`: an unmasked input counts as all steps
    /// kept, so the OR keeps every step, the same as no mask) and gives none otherwise;
    /// Keras 2 ANDs the masks there are (`Concatenate` too: an unmasked input's ones change
    /// nothing).
    pub fn mask(self, masks: &[Option<Tensor>], rule: MaskRule) -> Result<Option<Tensor>> {
        if rule == MaskRule::Keras3 && masks.iter().any(Option::is_none) {
            return Ok(None);
        }
        let mut out: Option<Tensor> = None;
        for m in masks.iter().flatten() {
            out = Some(match (out, rule) {
                (None, _) => m.clone(),
                (Some(o), MaskRule::Keras3) => o.maximum(m)?,
                (Some(o), MaskRule::Keras2) => o.minimum(m)?,
            });
        }
        Ok(out)
    }
}

fn widest(xs: &[Tensor]) -> DType {
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 => 2,
        _ => 1,
    };
    xs.iter()
        .map(Tensor::dtype)
        .max_by_key(|&d| rank(d))
        .unwrap_or(DType::F32)
}

fn shape_error(what: &str, expected: &str, got: usize) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected: format!("{expected} inputs"),
        got: format!("{got} inputs"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn merges_and_their_masks() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, -2.], [3., 4.]], &dev).unwrap();
        let b = Tensor::new(&[[2f32, 5.], [-1., 0.]], &dev).unwrap();
        let v = |op: MergeOp| {
            op.forward(&[a.clone(), b.clone()])
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        assert_eq!(v(MergeOp::Add), [[3., 3.], [2., 4.]]);
        assert_eq!(v(MergeOp::Subtract), [[-1., -7.], [4., 4.]]);
        assert_eq!(v(MergeOp::Multiply), [[2., -10.], [-3., 0.]]);
        assert_eq!(v(MergeOp::Average), [[1.5, 1.5], [1., 2.]]);
        assert_eq!(v(MergeOp::Maximum), [[2., 5.], [3., 4.]]);
        assert_eq!(v(MergeOp::Minimum), [[1., -2.], [-1., 0.]]);
        assert_eq!(v(MergeOp::Concatenate)[1], [3., 4., -1., 0.]);
        assert!(MergeOp::Subtract.forward(std::slice::from_ref(&a)).is_err());
        let c = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        assert!(MergeOp::Add.forward(&[a.clone(), c]).is_err());
        let m1 = Tensor::new(&[[1u8, 0, 0]], &dev).unwrap();
        let m2 = Tensor::new(&[[1u8, 1, 0]], &dev).unwrap();
        let both = [Some(m1.clone()), Some(m2)];
        let or = MergeOp::Add.mask(&both, MaskRule::Keras3).unwrap().unwrap();
        assert_eq!(or.to_vec2::<u8>().unwrap(), [[1, 1, 0]]);
        let and = MergeOp::Concatenate
            .mask(&both, MaskRule::Keras2)
            .unwrap()
            .unwrap();
        assert_eq!(and.to_vec2::<u8>().unwrap(), [[1, 0, 0]]);
        let one = [Some(m1.clone()), None];
        assert!(MergeOp::Add.mask(&one, MaskRule::Keras3).unwrap().is_none());
        let kept = MergeOp::Add.mask(&one, MaskRule::Keras2).unwrap().unwrap();
        assert_eq!(kept.to_vec2::<u8>().unwrap(), [[1, 0, 0]]);
        assert!(MergeOp::Add
            .mask(&[None, None], MaskRule::Keras2)
            .unwrap()
            .is_none());
    }
}
