//! Weight layouts: Keras <-> PyTorch <-> cuDNN, for the reset-after GRU.
//!
//! - Keras: `kernel` (I, 3u), `recurrent_kernel` (u, 3u), column blocks `[z | r | h]`;
//!   `bias` (2, 3u): row 0 input bias, row 1 recurrent bias, same block order.
//! - PyTorch `nn.GRU`: `weight_ih` (3u, I), `weight_hh` (3u, u), row blocks `[r | z | n]`;
//!   `bias_ih`, `bias_hh` (3u,) in the same order. Each block is the transpose of Keras'.
//! - cuDNN (`CUDNN_GRU`): linear layers 0, 1, 2 = input matrices of r, z, n and 3, 4, 5 =
//!   recurrent matrices of r, z, n, each row-major (u, in) like PyTorch's blocks; biases
//!   follow the same IDs (Keras `bias[0]` to 0..2, `bias[1]` to 3..5).
//!
//! Only the reset-after form maps: PyTorch and cuDNN have no reset-before GRU.

use crate::error::{check_len, GruError, Result};

/// Keras gate index of PyTorch/cuDNN gate `g` (r, z, n order): r -> 1, z -> 0, n -> 2.
pub const KERAS_GATE_OF_TORCH: [usize; 3] = [1, 0, 2];

/// Keras-layout GRU weights (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct KerasWeights<T> {
    /// (input_dim, 3u).
    pub kernel: Vec<T>,
    /// (u, 3u).
    pub recurrent_kernel: Vec<T>,
    /// (2, 3u), reset-after form; `None` without bias.
    pub bias: Option<Vec<T>>,
    /// Input size.
    pub input_dim: usize,
    /// Units.
    pub units: usize,
}

/// PyTorch `nn.GRU` layer-0 weights (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct TorchWeights<T> {
    /// (3u, input_dim), blocks r, z, n.
    pub weight_ih: Vec<T>,
    /// (3u, u), blocks r, z, n.
    pub weight_hh: Vec<T>,
    /// (3u,), or `None` with bias=False.
    pub bias_ih: Option<Vec<T>>,
    /// (3u,), or `None` with bias=False.
    pub bias_hh: Option<Vec<T>>,
}

/// cuDNN GRU weights by linear-layer ID (0..6): matrices (u, in) row-major and biases (u,).
#[derive(Debug, Clone, PartialEq)]
pub struct CudnnWeights<T> {
    /// IDs 0, 1, 2: input matrices (u, input_dim) of r, z, n; 3, 4, 5: recurrent (u, u).
    pub matrices: [Vec<T>; 6],
    /// The matching biases (u,), or `None` without bias.
    pub biases: Option<[Vec<T>; 6]>,
}

impl<T: Copy + Default> KerasWeights<T> {
    /// Checks the lengths against `input_dim` and `units`.
    pub fn validate(&self) -> Result<()> {
        let (i, u) = (self.input_dim, self.units);
        check_len("kernel", self.kernel.len(), i * 3 * u, "(input_dim, 3u)")?;
        check_len(
            "recurrent_kernel",
            self.recurrent_kernel.len(),
            u * 3 * u,
            "(u, 3u)",
        )?;
        if let Some(b) = &self.bias {
            check_len("bias", b.len(), 2 * 3 * u, "(2, 3u) (reset_after form)")?;
        }
        Ok(())
    }

    /// The transposed Keras column block `gate` of a (rows, 3u) matrix: (u, rows).
    fn block_t(m: &[T], rows: usize, u: usize, gate: usize) -> Vec<T> {
        let mut out = vec![T::default(); u * rows];
        for r in 0..rows {
            for j in 0..u {
                out[j * rows + r] = m[r * 3 * u + gate * u + j];
            }
        }
        out
    }

    fn bias_block(b: &[T], row: usize, u: usize, gate: usize) -> Vec<T> {
        b[row * 3 * u + gate * u..row * 3 * u + (gate + 1) * u].to_vec()
    }

    /// To PyTorch's layout (gate reorder z,r,h -> r,z,n; transposes).
    ///
    /// ```
    /// use gru_core::layout::KerasWeights;
    /// // input_dim 1, units 1: kernel columns are [z, r, h].
    /// let k = KerasWeights { kernel: vec![1.0, 2.0, 3.0], recurrent_kernel: vec![4.0, 5.0, 6.0],
    ///     bias: Some(vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0]), input_dim: 1, units: 1 };
    /// let t = k.to_torch().unwrap();
    /// assert_eq!(t.weight_ih, vec![2.0, 1.0, 3.0]);
    /// assert_eq!(t.bias_hh, Some(vec![11.0, 10.0, 12.0]));
    /// assert_eq!(t.to_keras(1, 1).unwrap(), k);
    /// ```
    pub fn to_torch(&self) -> Result<TorchWeights<T>> {
        self.validate()?;
        let c = self.to_cudnn()?;
        let cat = |ids: [usize; 3], src: &[Vec<T>; 6]| -> Vec<T> {
            ids.iter().flat_map(|&i| src[i].iter().copied()).collect()
        };
        Ok(TorchWeights {
            weight_ih: cat([0, 1, 2], &c.matrices),
            weight_hh: cat([3, 4, 5], &c.matrices),
            bias_ih: c.biases.as_ref().map(|b| cat([0, 1, 2], b)),
            bias_hh: c.biases.as_ref().map(|b| cat([3, 4, 5], b)),
        })
    }

    /// To cuDNN's linear layers (IDs 0..6).
    pub fn to_cudnn(&self) -> Result<CudnnWeights<T>> {
        self.validate()?;
        let (i, u) = (self.input_dim, self.units);
        let matrices: [Vec<T>; 6] = std::array::from_fn(|id| {
            let gate = KERAS_GATE_OF_TORCH[id % 3];
            if id < 3 {
                Self::block_t(&self.kernel, i, u, gate)
            } else {
                Self::block_t(&self.recurrent_kernel, u, u, gate)
            }
        });
        let biases = self.bias.as_ref().map(|b| {
            std::array::from_fn(|id| Self::bias_block(b, id / 3, u, KERAS_GATE_OF_TORCH[id % 3]))
        });
        Ok(CudnnWeights { matrices, biases })
    }
}

impl<T: Copy + Default> CudnnWeights<T> {
    /// Back to Keras' layout (used for gradients, which come in cuDNN's layout).
    pub fn to_keras(&self, input_dim: usize, units: usize) -> Result<KerasWeights<T>> {
        let (i, u) = (input_dim, units);
        for (id, m) in self.matrices.iter().enumerate() {
            let rows = if id < 3 { i } else { u };
            check_len(&format!("cuDNN matrix {id}"), m.len(), u * rows, "(u, in)")?;
        }
        if let Some(b) = &self.biases {
            for (id, v) in b.iter().enumerate() {
                check_len(&format!("cuDNN bias {id}"), v.len(), u, "(u,)")?;
            }
        }
        let mut kernel = vec![T::default(); i * 3 * u];
        let mut recurrent = vec![T::default(); u * 3 * u];
        for id in 0..6 {
            let gate = KERAS_GATE_OF_TORCH[id % 3];
            let (dst, rows) = if id < 3 {
                (&mut kernel, i)
            } else {
                (&mut recurrent, u)
            };
            for r in 0..rows {
                for j in 0..u {
                    dst[r * 3 * u + gate * u + j] = self.matrices[id][j * rows + r];
                }
            }
        }
        let bias = self.biases.as_ref().map(|b| {
            let mut out = vec![T::default(); 2 * 3 * u];
            for id in 0..6 {
                let gate = KERAS_GATE_OF_TORCH[id % 3];
                let row = id / 3;
                out[row * 3 * u + gate * u..row * 3 * u + (gate + 1) * u].copy_from_slice(&b[id]);
            }
            out
        });
        Ok(KerasWeights {
            kernel,
            recurrent_kernel: recurrent,
            bias,
            input_dim: i,
            units: u,
        })
    }
}

impl<T: Copy + Default> TorchWeights<T> {
    /// Back to Keras' layout. Keras has one bias weight: both PyTorch biases must be present
    /// or both absent.
    pub fn to_keras(&self, input_dim: usize, units: usize) -> Result<KerasWeights<T>> {
        let (i, u) = (input_dim, units);
        check_len(
            "weight_ih",
            self.weight_ih.len(),
            3 * u * i,
            "(3u, input_dim)",
        )?;
        check_len("weight_hh", self.weight_hh.len(), 3 * u * u, "(3u, u)")?;
        let split = |m: &[T], n: usize| -> [Vec<T>; 3] {
            std::array::from_fn(|g| m[g * n..(g + 1) * n].to_vec())
        };
        let [a, b, c] = split(&self.weight_ih, u * i);
        let [d, e, f] = split(&self.weight_hh, u * u);
        let biases = match (&self.bias_ih, &self.bias_hh) {
            (Some(bi), Some(bh)) => {
                check_len("bias_ih", bi.len(), 3 * u, "(3u,)")?;
                check_len("bias_hh", bh.len(), 3 * u, "(3u,)")?;
                let [a, b, c] = split(bi, u);
                let [d, e, f] = split(bh, u);
                Some([a, b, c, d, e, f])
            }
            (None, None) => None,
            _ => {
                return Err(GruError::Shape {
                    what: "PyTorch GRU biases".into(),
                    expected: "both bias_ih and bias_hh, or neither".into(),
                    got: "only one of them".into(),
                })
            }
        };
        CudnnWeights {
            matrices: [a, b, c, d, e, f],
            biases,
        }
        .to_keras(i, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// input_dim 2, units 2: each value encodes (matrix, row, column) so moves are visible.
    fn sample() -> KerasWeights<f64> {
        let (i, u) = (2, 2);
        KerasWeights {
            kernel: (0..i * 3 * u).map(|x| 100.0 + x as f64).collect(),
            recurrent_kernel: (0..u * 3 * u).map(|x| 200.0 + x as f64).collect(),
            bias: Some((0..6 * u).map(|x| 300.0 + x as f64).collect()),
            input_dim: i,
            units: u,
        }
    }

    #[test]
    fn cudnn_ids_by_hand() {
        let c = sample().to_cudnn().unwrap();
        // kernel (2, 6) = [[100..105], [106..111]]; z = cols 0-1, r = cols 2-3, h = 4-5.
        // ID 0 = r input matrix, (u, in): row j = kernel[:, 2 + j].
        assert_eq!(c.matrices[0], vec![102.0, 108.0, 103.0, 109.0]);
        // ID 1 = z input matrix.
        assert_eq!(c.matrices[1], vec![100.0, 106.0, 101.0, 107.0]);
        // ID 2 = n (h) input matrix.
        assert_eq!(c.matrices[2], vec![104.0, 110.0, 105.0, 111.0]);
        // ID 4 = z recurrent: recurrent (2, 6) = [[200..205], [206..211]].
        assert_eq!(c.matrices[4], vec![200.0, 206.0, 201.0, 207.0]);
        let b = c.biases.unwrap();
        // Keras bias row 0 = [300..305] (z: 300,301 r: 302,303 h: 304,305).
        assert_eq!(b[0], vec![302.0, 303.0]);
        assert_eq!(b[1], vec![300.0, 301.0]);
        // Row 1 = [306..311]; ID 5 = recurrent n bias.
        assert_eq!(b[5], vec![310.0, 311.0]);
    }

    #[test]
    fn torch_by_hand_and_round_trips() {
        let k = sample();
        let t = k.to_torch().unwrap();
        // weight_ih rows: r (2 rows), z, n; each row = one unit's input weights.
        assert_eq!(
            t.weight_ih,
            vec![
                102.0, 108.0, 103.0, 109.0, 100.0, 106.0, 101.0, 107.0, 104.0, 110.0, 105.0, 111.0
            ]
        );
        assert_eq!(
            t.bias_ih.clone().unwrap(),
            vec![302.0, 303.0, 300.0, 301.0, 304.0, 305.0]
        );
        assert_eq!(t.to_keras(2, 2).unwrap(), k);
        assert_eq!(k.to_cudnn().unwrap().to_keras(2, 2).unwrap(), k);
    }

    #[test]
    fn no_bias_and_bad_lengths() {
        let mut k = sample();
        k.bias = None;
        let t = k.to_torch().unwrap();
        assert!(t.bias_ih.is_none());
        assert_eq!(t.to_keras(2, 2).unwrap(), k);
        k.kernel.pop();
        assert!(matches!(k.to_torch(), Err(GruError::Shape { .. })));
        let mut t2 = sample().to_torch().unwrap();
        t2.bias_hh = None;
        assert!(t2.to_keras(2, 2).is_err());
    }
}
