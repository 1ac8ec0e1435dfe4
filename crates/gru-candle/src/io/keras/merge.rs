//! Keras' merge layers, which join the branches of a functional graph: `Add`, `Subtract`,
//! `Multiply`, `Average`, `Maximum`, `Minimum` (elementwise over inputs of one shape),
//! `Concatenate` (over the last axis) and `Dot` (`batch_dot`), with the masks Keras gives
//! their outputs.

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
    /// `Dot`: the dot product of two inputs of rank 2 or 3 over `axes` (one axis of each,
    /// not the batch), after L2-normalizing them along those axes with `normalize`
    /// (cosine proximity); the output carries no mask.
    Dot {
        /// The contracted axis of each input (negative counts from the end).
        axes: [i64; 2],
        /// `normalize`.
        normalize: bool,
    },
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
    /// and `Minimum` replace masked entries; see [`MergeOp::forward_masked`]).
    pub fn values_depend_on_masks(self, rule: MaskRule) -> bool {
        rule == MaskRule::Keras3
            && matches!(
                self,
                MergeOp::Multiply | MergeOp::Maximum | MergeOp::Minimum
            )
    }

    /// A `Dot` layer's operation from its config (`axes`: one integer or two).
    pub fn dot_from_keras(cfg: &serde_json::Value) -> Option<MergeOp> {
        let axes = match &cfg["axes"] {
            serde_json::Value::Array(a) if a.len() == 2 => [a[0].as_i64()?, a[1].as_i64()?],
            v => [v.as_i64()?; 2],
        };
        let normalize = cfg["normalize"].as_bool().unwrap_or(false);
        Some(MergeOp::Dot { axes, normalize })
    }

    /// Joins the inputs with the (batch, T) masks they carry, as the Keras of `rule` does:
    /// Keras 3's `Multiply` takes a masked entry as 1 (and zeroes the product where every
    /// input is masked, when all carry masks); its `Maximum` and `Minimum` take a masked
    /// entry from the other side; otherwise the masks do not change the values.
    pub fn forward_masked(
        self,
        xs: &[Tensor],
        masks: &[Option<Tensor>],
        rule: MaskRule,
    ) -> Result<Tensor> {
        if !self.values_depend_on_masks(rule) || masks.iter().all(Option::is_none) {
            return self.forward(xs);
        }
        let dtype = widest(xs);
        // Each mask as a 0/1 tensor of its input's shape.
        let expanded: Vec<Option<Tensor>> = xs
            .iter()
            .zip(masks.iter().chain(std::iter::repeat(&None)))
            .map(|(x, m)| match m {
                Some(m) => {
                    let keep = m.ne(0f64)?.unsqueeze(D::Minus1)?.broadcast_as(x.shape())?;
                    Ok(Some(keep.contiguous()?))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        let xs: Vec<Tensor> = xs
            .iter()
            .map(|x| x.to_dtype(dtype))
            .collect::<candle_core::Result<_>>()?;
        match self {
            MergeOp::Multiply => masked_product(&xs, &expanded),
            _ => masked_extreme(self, &xs, &expanded),
        }
    }

    /// Joins the inputs (cast to the widest of their dtypes).
    pub fn forward(self, xs: &[Tensor]) -> Result<Tensor> {
        let dtype = widest(xs);
        let xs: Vec<Tensor> = xs
            .iter()
            .map(|x| x.to_dtype(dtype))
            .collect::<candle_core::Result<_>>()?;
        if let MergeOp::Dot { axes, normalize } = self {
            return dot(&xs, axes, normalize);
        }
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
                MergeOp::Concatenate | MergeOp::Dot { .. } => unreachable!("handled above"),
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
        let dot = matches!(self, MergeOp::Dot { .. });
        if dot || (rule == MaskRule::Keras3 && masks.iter().any(Option::is_none)) {
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

/// Keras 3's masked `Multiply`: masked entries count as 1; with every input masked, the
/// product is zeroed where no input keeps the entry.
fn masked_product(xs: &[Tensor], keeps: &[Option<Tensor>]) -> Result<Tensor> {
    let mut out: Option<Tensor> = None;
    let mut any_kept: Option<Tensor> = None;
    for (x, keep) in xs.iter().zip(keeps) {
        let x = match keep {
            Some(k) => k.where_cond(x, &x.ones_like()?)?,
            None => x.clone(),
        };
        if let Some(k) = keep {
            any_kept = Some(match any_kept {
                None => k.clone(),
                Some(a) => a.maximum(k)?,
            });
        }
        out = Some(match out {
            None => x,
            Some(o) => (o * x)?,
        });
    }
    let out = out.ok_or_else(|| shape_error("Multiply's inputs", "at least one", 0))?;
    match (keeps.iter().all(Option::is_some), any_kept) {
        (true, Some(k)) => Ok(k.where_cond(&out, &out.zeros_like()?)?),
        _ => Ok(out),
    }
}

/// Keras 3's masked `Maximum` / `Minimum` (`_apply_merge_op_and_or_mask`): a masked entry
/// takes the other side's value.
fn masked_extreme(op: MergeOp, xs: &[Tensor], keeps: &[Option<Tensor>]) -> Result<Tensor> {
    let [first, rest @ ..] = xs else {
        return Err(shape_error("a merge layer's inputs", "at least one", 0));
    };
    let (mut out, mut out_keep) = (first.clone(), keeps.first().cloned().flatten());
    for (x, keep) in rest.iter().zip(keeps.iter().skip(1)) {
        let x = match keep {
            Some(k) => k.where_cond(x, &out)?,
            None => x.clone(),
        };
        if let Some(ok) = &out_keep {
            out = ok.where_cond(&out, &x)?;
        }
        out_keep = match (keep, out_keep) {
            (Some(k), Some(ok)) => Some(ok.maximum(k)?),
            _ => None,
        };
        out = match op {
            MergeOp::Maximum => out.maximum(&x)?,
            _ => out.minimum(&x)?,
        };
    }
    Ok(out)
}

/// Keras' `batch_dot` of two inputs of rank 2 or 3 over one axis of each: the first's other
/// axes, then the second's (a rank-1 result becomes (batch, 1)).
fn dot(xs: &[Tensor], axes: [i64; 2], normalize: bool) -> Result<Tensor> {
    let [x, y] = xs else {
        return Err(shape_error("Dot's inputs", "exactly 2", xs.len()));
    };
    let axis = |t: &Tensor, a: i64| -> Result<usize> {
        let r = t.rank() as i64;
        let k = if a < 0 { a + r } else { a };
        if !(2..=3).contains(&r) || k < 1 || k >= r {
            return Err(Error::Gru(GruError::Shape {
                what: "Dot's inputs".into(),
                expected: format!("rank 2 or 3, contracted over axis 1 or 2 (axes {axes:?})"),
                got: format!("shape {:?}", t.dims()),
            }));
        }
        Ok(k as usize)
    };
    let (ax, ay) = (axis(x, axes[0])?, axis(y, axes[1])?);
    let (x, y) = match normalize {
        true => (l2_normalized(x, ax)?, l2_normalized(y, ay)?),
        false => (x.clone(), y.clone()),
    };
    // x as (batch, rows, k), y as (batch, k, cols).
    let xm = match (x.rank(), ax) {
        (2, _) => x.unsqueeze(1)?,
        (_, 2) => x,
        _ => x.transpose(1, 2)?.contiguous()?,
    };
    let ym = match (y.rank(), ay) {
        (2, _) => y.unsqueeze(2)?,
        (_, 1) => y,
        _ => y.transpose(1, 2)?.contiguous()?,
    };
    let out = xm.matmul(&ym)?;
    let out = match (xs[0].rank(), xs[1].rank()) {
        (2, 2) => out.squeeze(2)?,
        (2, _) => out.squeeze(1)?,
        (_, 2) => out.squeeze(2)?,
        _ => out,
    };
    Ok(out)
}

/// Keras' `normalize(x, axis)`: `x * min(rsqrt(sum(x^2)), 1 / 1e-7)`.
fn l2_normalized(x: &Tensor, axis: usize) -> Result<Tensor> {
    let inv = x.sqr()?.sum_keepdim(axis)?.sqrt()?.recip()?.minimum(1e7)?;
    Ok(x.broadcast_mul(&inv)?)
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

    /// `batch_dot` over every pairing of ranks 2 and 3, against sums written out.
    #[test]
    fn dot_contracts_one_axis_of_each_input() {
        let dev = Device::Cpu;
        let x3: Vec<f32> = (0..2 * 3 * 4).map(|k| (k as f32 * 0.7).sin()).collect();
        let y3: Vec<f32> = (0..2 * 5 * 4).map(|k| (k as f32 * 0.3).cos()).collect();
        let x = Tensor::from_vec(x3.clone(), (2, 3, 4), &dev).unwrap();
        let y = Tensor::from_vec(y3.clone(), (2, 5, 4), &dev).unwrap();
        let (xi, yi) = (
            |b: usize, t: usize, k: usize| x3[(b * 3 + t) * 4 + k],
            |b: usize, s: usize, k: usize| y3[(b * 5 + s) * 4 + k],
        );
        let dot = |axes: [i64; 2], xs: &[Tensor]| {
            let op = MergeOp::Dot {
                axes,
                normalize: false,
            };
            let out = op.forward(xs).unwrap();
            (
                out.dims().to_vec(),
                out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
        // (2, 3, 4) . (2, 5, 4) over the features: (2, 3, 5).
        let (dims, v) = dot([2, 2], &[x.clone(), y.clone()]);
        assert_eq!(dims, [2, 3, 5]);
        let want = |b, t, s| (0..4).map(|k| xi(b, t, k) * yi(b, s, k)).sum::<f32>();
        assert!(close(v[(3 + 2) * 5 + 4], want(1, 2, 4)));
        // A vector (2, 4) against a sequence (2, 5, 4): (2, 5).
        let xv = x.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let (dims, v) = dot([-1, -1], &[xv.clone(), y.clone()]);
        assert_eq!(dims, [2, 5]);
        assert!(close(v[5 + 3], want(1, 0, 3)));
        // A sequence against a vector: (2, 3); two vectors: (2, 1).
        let yv = y.narrow(1, 2, 1).unwrap().squeeze(1).unwrap();
        let (dims, v) = dot([2, 1], &[x.clone(), yv.clone()]);
        assert_eq!(dims, [2, 3]);
        assert!(close(v[3 + 1], want(1, 1, 2)));
        let (dims, v) = dot([1, 1], &[xv, yv]);
        assert_eq!(dims, [2, 1]);
        assert!(close(v[1], want(1, 0, 2)));
        // Over the time axes: (2, 3, 4) . (2, 3, 4) over axis 1 gives (2, 4, 4).
        let (dims, _) = dot([1, 1], &[x.clone(), x.clone()]);
        assert_eq!(dims, [2, 4, 4]);
        // The batch axis or a rank-4 input is a typed error.
        let op = MergeOp::Dot {
            axes: [0, 0],
            normalize: false,
        };
        assert!(op.forward(&[x.clone(), y]).is_err());
        // Normalized: a vector's cosine with itself is 1.
        let op = MergeOp::Dot {
            axes: [2, 2],
            normalize: true,
        };
        let cos = op.forward(&[x.clone(), x]).unwrap();
        let diag: Vec<f32> = (0..3)
            .map(|t| {
                cos.get(1)
                    .unwrap()
                    .get(t)
                    .unwrap()
                    .get(t)
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            })
            .collect();
        assert!(diag.iter().all(|&c| close(c, 1.0)), "{diag:?}");
    }

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
