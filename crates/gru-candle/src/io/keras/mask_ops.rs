//! The mask computations Keras 3 records in a functional graph as operation nodes
//! (`keras.src.ops.numpy`): `NotEqual(ids, 0)` for `Embedding(mask_zero=True)`,
//! `Any(NotEqual(x, value), axis=-1)` for `Masking`, `LogicalOr` where branches merge,
//! `ExpandDims`/`ZerosLike`/`Concatenate`/`Any` behind a `Concatenate`; a layer's `mask`
//! argument names one of them. Masks are u8 tensors (1 = keep).

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use gru_core::GruError;
use serde_json::Value;

/// One recorded mask operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskOp {
    /// `x != value`.
    NotEqual(f64),
    /// `x == value`.
    Equal(f64),
    /// `any(x, axis, keepdims)`.
    Any {
        /// The axis reduced.
        axis: i64,
        /// Whether it stays as size 1.
        keepdims: bool,
    },
    /// `all(x, axis, keepdims)`.
    All {
        /// The axis reduced.
        axis: i64,
        /// Whether it stays as size 1.
        keepdims: bool,
    },
    /// `a or b`, broadcast.
    LogicalOr,
    /// `a and b`, broadcast.
    LogicalAnd,
    /// `not x`.
    LogicalNot,
    /// A size-1 axis inserted at `axis`.
    ExpandDims(i64),
    /// All false, shaped as `x`.
    ZerosLike,
    /// All true, shaped as `x`.
    OnesLike,
    /// `convert_to_tensor(x)` of a mask (no dtype given): the mask itself.
    ConvertToTensor,
}

impl MaskOp {
    /// The operation of a recorded node (`class`, its `config`, and the node's positional
    /// arguments after the tensors, such as `NotEqual`'s value); `None` for classes that
    /// are not mask operations. `ZerosLike`/`OnesLike` must make booleans.
    pub fn from_node(
        class: &str,
        cfg: &Value,
        scalars: &[Value],
    ) -> Option<std::result::Result<MaskOp, String>> {
        let value = || {
            scalars
                .first()
                .and_then(|v| v.as_f64().or(v.as_bool().map(f64::from)))
                .ok_or_else(|| {
                    format!("{class} with arguments {scalars:?} (a tensor and a number)")
                })
        };
        let axis = || {
            cfg["axis"]
                .as_i64()
                .ok_or_else(|| format!("{class} with axis {}", cfg["axis"]))
        };
        let keepdims = cfg["keepdims"].as_bool().unwrap_or(false);
        let boolean = || match cfg["dtype"].as_str() {
            Some("bool") => Ok(()),
            _ => Err(format!("{class} of dtype {} (bool)", cfg["dtype"])),
        };
        Some(match class {
            "NotEqual" => value().map(MaskOp::NotEqual),
            "Equal" => value().map(MaskOp::Equal),
            "Any" => axis().map(|axis| MaskOp::Any { axis, keepdims }),
            "All" => axis().map(|axis| MaskOp::All { axis, keepdims }),
            "LogicalOr" => Ok(MaskOp::LogicalOr),
            "LogicalAnd" => Ok(MaskOp::LogicalAnd),
            "LogicalNot" => Ok(MaskOp::LogicalNot),
            "ExpandDims" => axis().map(MaskOp::ExpandDims),
            "ZerosLike" => boolean().map(|_| MaskOp::ZerosLike),
            "OnesLike" => boolean().map(|_| MaskOp::OnesLike),
            "ConvertToTensor" => match cfg["dtype"].as_str() {
                None | Some("bool") => Ok(MaskOp::ConvertToTensor),
                Some(other) => Err(format!("ConvertToTensor to {other}")),
            },
            _ => return None,
        })
    }

    /// The number of tensors it takes.
    pub fn arity(self) -> usize {
        match self {
            MaskOp::LogicalOr | MaskOp::LogicalAnd => 2,
            _ => 1,
        }
    }

    /// The rank of its output for inputs of these ranks.
    pub fn rank(self, ranks: &[Option<usize>]) -> Option<usize> {
        let r = *ranks.first()?;
        match self {
            MaskOp::Any {
                keepdims: false, ..
            }
            | MaskOp::All {
                keepdims: false, ..
            } => r.map(|r| r.saturating_sub(1)),
            MaskOp::ExpandDims(_) => r.map(|r| r + 1),
            MaskOp::LogicalOr | MaskOp::LogicalAnd => ranks.iter().copied().max().flatten(),
            _ => r,
        }
    }

    /// Computes it: a u8 tensor.
    pub fn forward(self, xs: &[Tensor]) -> Result<Tensor> {
        if xs.len() != self.arity() {
            return Err(Error::Gru(GruError::Shape {
                what: format!("{self:?}'s inputs"),
                expected: format!("{} tensors", self.arity()),
                got: format!("{}", xs.len()),
            }));
        }
        let x = &xs[0];
        let truth = |t: &Tensor| -> Result<Tensor> { Ok(t.ne(0.0)?) };
        let axis = |a: i64, rank: usize| -> Result<usize> {
            let r = rank as i64;
            match a {
                a if (0..r).contains(&a) => Ok(a as usize),
                a if (-r..0).contains(&a) => Ok((r + a) as usize),
                _ => Err(Error::Gru(GruError::Shape {
                    what: format!("{self:?}'s axis"),
                    expected: format!("an axis of a rank-{rank} tensor"),
                    got: a.to_string(),
                })),
            }
        };
        Ok(match self {
            MaskOp::NotEqual(v) => x.ne(v)?,
            MaskOp::Equal(v) => x.eq(v)?,
            MaskOp::Any { axis: a, keepdims } | MaskOp::All { axis: a, keepdims } => {
                let d = axis(a, x.rank())?;
                let t = truth(x)?;
                let any = matches!(self, MaskOp::Any { .. });
                match (any, keepdims) {
                    (true, true) => t.max_keepdim(d)?,
                    (true, false) => t.max(d)?,
                    (false, true) => t.min_keepdim(d)?,
                    (false, false) => t.min(d)?,
                }
            }
            MaskOp::LogicalOr => truth(x)?.broadcast_maximum(&truth(&xs[1])?)?,
            MaskOp::LogicalAnd => truth(x)?.broadcast_minimum(&truth(&xs[1])?)?,
            MaskOp::LogicalNot => x.eq(0.0)?,
            MaskOp::ExpandDims(a) => x.unsqueeze(axis(a, x.rank() + 1)?)?,
            MaskOp::ZerosLike => Tensor::zeros(x.shape(), DType::U8, x.device())?,
            MaskOp::OnesLike => Tensor::ones(x.shape(), DType::U8, x.device())?,
            MaskOp::ConvertToTensor => truth(x)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use serde_json::json;

    #[test]
    fn masking_and_merge_masks_as_keras_records_them() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[1f32, 0.], [0., 0.], [0., 2.]]], &dev).unwrap();
        let ne = MaskOp::from_node("NotEqual", &json!({}), &[json!(0.0)])
            .unwrap()
            .unwrap();
        let any = MaskOp::from_node("Any", &json!({"axis": -1, "keepdims": false}), &[])
            .unwrap()
            .unwrap();
        let m = any.forward(&[ne.forward(&[x]).unwrap()]).unwrap();
        assert_eq!(m.to_vec2::<u8>().unwrap(), [[1, 0, 1]]);
        let e = MaskOp::ExpandDims(-1)
            .forward(std::slice::from_ref(&m))
            .unwrap();
        assert_eq!(e.dims(), &[1, 3, 1]);
        let z = MaskOp::ZerosLike
            .forward(&[Tensor::zeros((1, 3, 2), DType::F32, &dev).unwrap()])
            .unwrap();
        let or = MaskOp::LogicalOr.forward(&[e, z]).unwrap();
        assert_eq!(or.dims(), &[1, 3, 2]);
        let all = MaskOp::All {
            axis: 1,
            keepdims: false,
        }
        .forward(&[m])
        .unwrap();
        assert_eq!(all.to_vec1::<u8>().unwrap(), [0]);
        assert!(
            MaskOp::from_node("ZerosLike", &json!({"dtype": "float32"}), &[])
                .unwrap()
                .is_err()
        );
        assert!(MaskOp::from_node("Dense", &json!({}), &[]).is_none());
        assert!(MaskOp::Any {
            axis: 3,
            keepdims: false
        }
        .forward(&[or])
        .is_err());
    }
}
