//! Keras' reshaping layers around recurrent ones: `Flatten`, `RepeatVector` (the bridge of
//! GRU encoder-decoder models), `Reshape`, `Permute`, and the 1-D `ZeroPadding1D`,
//! `Cropping1D`, `UpSampling1D`. None supports masking in Keras: the mask ends at them.

use crate::error::{Error, Result};
use candle_core::Tensor;
use gru_core::GruError;

/// A layer that moves, repeats or pads values without computing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reshaping {
    /// `Flatten`: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...).
    Flatten,
    /// `RepeatVector(n)`: (batch, f) -> (batch, n, f).
    RepeatVector(usize),
    /// `Reshape(target_shape)`: the dims after the batch; `None` is Keras' `-1`, resolved
    /// from each call's input when the config does not fix the input's shape (a
    /// spectrogram of any length: `Reshape((-1, bins, 1))`).
    Reshape(Vec<Option<usize>>),
    /// `Permute(dims)`: the dims after the batch in this order (0-based here; Keras' are
    /// 1-based).
    Permute(Vec<usize>),
    /// `ZeroPadding1D`: zero steps added `(before, after)`.
    ZeroPadding1D(usize, usize),
    /// `Cropping1D`: steps removed `(before, after)`.
    Cropping1D(usize, usize),
    /// `UpSampling1D(size)`: each step repeated `size` times.
    UpSampling1D(usize),
}

fn shape_error(what: &str, expected: String, got: &[usize]) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected,
        got: format!("{got:?}"),
    })
}

impl Reshaping {
    /// The output dims after the batch for input dims `dims` (after the batch), or a shape
    /// error naming what the layer needs.
    pub fn out_dims(&self, dims: &[usize]) -> Result<Vec<usize>> {
        let steps = |what: &str| match dims {
            [t, f] => Ok((*t, *f)),
            _ => Err(shape_error(what, "(batch, steps, features)".into(), dims)),
        };
        Ok(match self {
            Reshaping::Flatten => vec![dims.iter().product()],
            Reshaping::RepeatVector(n) => match dims {
                [f] => vec![*n, *f],
                _ => return Err(shape_error("RepeatVector input", "(batch, f)".into(), dims)),
            },
            Reshaping::Reshape(target) => {
                let have = dims.iter().product::<usize>();
                let known = target.iter().flatten().product::<usize>();
                let unknown = target.iter().filter(|d| d.is_none()).count();
                let fill = match unknown {
                    0 if have == known => 1,
                    1 if known > 0 && have.is_multiple_of(known) => have / known,
                    _ => {
                        let shown: Vec<i64> =
                            target.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
                        let expected = match unknown {
                            0 => format!("{known} values per sample for target {shown:?}"),
                            _ => format!(
                                "a multiple of {known} values per sample for target {shown:?}"
                            ),
                        };
                        return Err(shape_error("Reshape input", expected, dims));
                    }
                };
                target.iter().map(|d| d.unwrap_or(fill)).collect()
            }
            Reshaping::Permute(order) => {
                if order.len() != dims.len() {
                    let expected = format!("{} dims after the batch", order.len());
                    return Err(shape_error("Permute input", expected, dims));
                }
                order.iter().map(|&i| dims[i]).collect()
            }
            Reshaping::ZeroPadding1D(a, b) => {
                let (t, f) = steps("ZeroPadding1D input")?;
                vec![t + a + b, f]
            }
            Reshaping::Cropping1D(a, b) => {
                let (t, f) = steps("Cropping1D input")?;
                if a + b > t {
                    let expected = format!("more than {} steps", a + b);
                    return Err(shape_error("Cropping1D input", expected, dims));
                }
                vec![t - a - b, f]
            }
            Reshaping::UpSampling1D(n) => {
                let (t, f) = steps("UpSampling1D input")?;
                vec![t * n, f]
            }
        })
    }

    /// Applies the layer to a (batch, ...) tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, dims) = match x.dims() {
            [b, rest @ ..] => (*b, rest.to_vec()),
            [] => return Err(shape_error("reshaping input", "(batch, ...)".into(), &[])),
        };
        let out = self.out_dims(&dims)?;
        let mut shape = vec![b];
        shape.extend_from_slice(&out);
        Ok(match self {
            Reshaping::Flatten | Reshaping::Reshape(_) => x.reshape(shape)?,
            Reshaping::RepeatVector(n) => x.unsqueeze(1)?.repeat((1, *n, 1))?,
            Reshaping::Permute(order) => {
                let mut all = vec![0];
                all.extend(order.iter().map(|i| i + 1));
                x.permute(all)?.contiguous()?
            }
            Reshaping::ZeroPadding1D(a, c) => x.pad_with_zeros(1, *a, *c)?,
            Reshaping::Cropping1D(a, _) => x.narrow(1, *a, out[0])?,
            Reshaping::UpSampling1D(n) => {
                let (t, f) = (dims[0], dims[1]);
                x.unsqueeze(2)?
                    .repeat((1, 1, *n, 1))?
                    .reshape((b, t * n, f))?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shapes_and_values() {
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let v = |r: Reshaping| r.forward(&x).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(
            v(Reshaping::UpSampling1D(2))[0],
            [[0., 1.], [0., 1.], [2., 3.], [2., 3.], [4., 5.], [4., 5.]]
        );
        assert_eq!(
            v(Reshaping::Permute(vec![1, 0]))[1],
            [[6., 8., 10.], [7., 9., 11.]]
        );
        assert_eq!(v(Reshaping::Cropping1D(1, 1))[0], [[2., 3.]]);
        assert_eq!(
            v(Reshaping::ZeroPadding1D(1, 0))[0],
            [[0., 0.], [0., 1.], [2., 3.], [4., 5.]]
        );
        let flat = Reshaping::Flatten.forward(&x).unwrap();
        assert_eq!(flat.dims(), &[2, 6]);
        let rep = Reshaping::RepeatVector(3).forward(&flat).unwrap();
        assert_eq!(
            rep.to_vec3::<f32>().unwrap()[1][2],
            [6., 7., 8., 9., 10., 11.]
        );
        assert!(Reshaping::Reshape(vec![Some(4)]).forward(&x).is_err());
        // Keras' -1, resolved per call.
        let r = Reshaping::Reshape(vec![None, Some(3), Some(1)]);
        assert_eq!(r.forward(&x).unwrap().dims(), &[2, 2, 3, 1]);
        assert!(Reshaping::Reshape(vec![None, Some(4)]).forward(&x).is_err());
        assert!(Reshaping::Cropping1D(2, 2).forward(&x).is_err());
        assert!(Reshaping::RepeatVector(2).forward(&x).is_err());
    }
}
