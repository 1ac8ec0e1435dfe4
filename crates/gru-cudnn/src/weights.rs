//! Filling cuDNN's weight space from Keras weights, and reading gradients back.
//!
//! cuDNN's weight space is opaque: `cudnnGetRNNWeightParams(pseudoLayer 0, linLayerID)`
//! gives the address of each linear layer's matrix and bias. These functions take those
//! addresses as element offsets into the space ([`Offsets`]), so the packing is the same
//! code on the device path and in the host tests (which use a host model of the layout:
//! six matrices then six biases).

use gru_core::layout::{CudnnWeights, KerasWeights};
use gru_core::{GruError, Result};

/// Element offsets of linear layers 0..6 (input r, z, n; recurrent r, z, n) in the weight
/// space: matrix and bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// Matrix offsets, (units, in) row-major each.
    pub matrix: [usize; 6],
    /// Bias offsets, (units,) each.
    pub bias: [usize; 6],
}

impl Offsets {
    /// The host model: six matrices in ID order, then six biases (cuDNN's standard layout for
    /// one unidirectional layer; the device path reads the real offsets instead).
    pub fn host_model(input: usize, units: usize) -> (Offsets, usize) {
        let mut at = 0;
        let mut matrix = [0; 6];
        for (id, m) in matrix.iter_mut().enumerate() {
            *m = at;
            at += units * if id < 3 { input } else { units };
        }
        let mut bias = [0; 6];
        for b in bias.iter_mut() {
            *b = at;
            at += units;
        }
        (Offsets { matrix, bias }, at)
    }

    fn check(&self, len: usize, input: usize, units: usize) -> Result<()> {
        for id in 0..6 {
            let m_end = self.matrix[id] + units * if id < 3 { input } else { units };
            if m_end > len || self.bias[id] + units > len {
                return Err(GruError::Shape {
                    what: format!("cuDNN weight space (linear layer {id})"),
                    expected: format!("at least {} elements", m_end.max(self.bias[id] + units)),
                    got: format!("{len} elements"),
                });
            }
        }
        Ok(())
    }
}

/// Writes Keras weights (reset_after form) into a weight space. Without a Keras bias the
/// bias slots are zeroed.
pub fn fill<T: Copy + Default>(
    space: &mut [T],
    at: &Offsets,
    keras: &KerasWeights<T>,
) -> Result<()> {
    let (i, u) = (keras.input_dim, keras.units);
    at.check(space.len(), i, u)?;
    let c = keras.to_cudnn()?;
    for id in 0..6 {
        space[at.matrix[id]..at.matrix[id] + c.matrices[id].len()].copy_from_slice(&c.matrices[id]);
        let dst = &mut space[at.bias[id]..at.bias[id] + u];
        match &c.biases {
            Some(b) => dst.copy_from_slice(&b[id]),
            None => dst.fill(T::default()),
        }
    }
    Ok(())
}

/// Reads a weight space (e.g. the gradients cuDNN accumulated) back into Keras' layout.
pub fn read<T: Copy + Default>(
    space: &[T],
    at: &Offsets,
    input: usize,
    units: usize,
    with_bias: bool,
) -> Result<KerasWeights<T>> {
    at.check(space.len(), input, units)?;
    let matrices: [Vec<T>; 6] = std::array::from_fn(|id| {
        let n = units * if id < 3 { input } else { units };
        space[at.matrix[id]..at.matrix[id] + n].to_vec()
    });
    let biases = with_bias
        .then(|| std::array::from_fn(|id| space[at.bias[id]..at.bias[id] + units].to_vec()));
    CudnnWeights { matrices, biases }.to_keras(input, units)
}

/// Keras weights as one flat tensor in cuDNN's canonical order: the three input matrices
/// (reset, update, new; each (units, input) row-major), the three recurrent matrices, the
/// three input biases, the three recurrent biases ([`Offsets::host_model`]). Built from
/// Candle ops (transposes, narrows, one concatenation), so Candle's autograd maps the op's
/// flat gradient back to `kernel`, `recurrent_kernel` and `bias`.
///
/// `kernel` (input, 3u), `recurrent_kernel` (u, 3u) and `bias` (2, 3u) are Keras'
/// reset_after weights (gate blocks z, r, h).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let k = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((2, 3))?; // input 2, units 1
/// let rk = Tensor::new(&[[10f32, 11., 12.]], &Device::Cpu)?;
/// let b = Tensor::new(&[[20f32, 21., 22.], [30., 31., 32.]], &Device::Cpu)?;
/// let w = gru_cudnn::weights::canonical_weights(&k, &rk, &b)?;
/// // r, z, n input rows (kernel columns 1, 0, 2), then recurrent, then the biases.
/// assert_eq!(
///     w.to_vec1::<f32>()?,
///     [1., 4., 0., 3., 2., 5., 11., 10., 12., 21., 20., 22., 31., 30., 32.]
/// );
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn canonical_weights(
    kernel: &candle_core::Tensor,
    recurrent_kernel: &candle_core::Tensor,
    bias: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::Tensor;
    let units = recurrent_kernel.dim(0)?;
    let u = units;
    // Keras column blocks [z | r | h] -> cuDNN rows [r; z; n], each (units, rows_in).
    let gates = |m: &Tensor| -> candle_core::Result<Tensor> {
        let t = m.t()?;
        Tensor::cat(
            &[
                t.narrow(0, u, u)?,
                t.narrow(0, 0, u)?,
                t.narrow(0, 2 * u, u)?,
            ],
            0,
        )?
        .flatten_all()
    };
    let biases = |v: Tensor| -> candle_core::Result<Tensor> {
        Tensor::cat(
            &[
                v.narrow(0, u, u)?,
                v.narrow(0, 0, u)?,
                v.narrow(0, 2 * u, u)?,
            ],
            0,
        )
    };
    Tensor::cat(
        &[
            gates(kernel)?,
            gates(recurrent_kernel)?,
            biases(bias.get(0)?)?,
            biases(bias.get(1)?)?,
        ],
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keras(i: usize, u: usize, bias: bool) -> KerasWeights<f32> {
        KerasWeights {
            kernel: (0..i * 3 * u).map(|x| 1000.0 + x as f32).collect(),
            recurrent_kernel: (0..u * 3 * u).map(|x| 2000.0 + x as f32).collect(),
            bias: bias.then(|| (0..6 * u).map(|x| 3000.0 + x as f32).collect()),
            input_dim: i,
            units: u,
        }
    }

    #[test]
    fn host_model_round_trip_and_placement() {
        let (i, u) = (3, 2);
        let (at, len) = Offsets::host_model(i, u);
        assert_eq!(len, 3 * u * i + 3 * u * u + 6 * u);
        let k = keras(i, u, true);
        let mut space = vec![0.0f32; len];
        fill(&mut space, &at, &k).unwrap();
        // Linear layer 1 = the update gate z's input matrix: Keras kernel[:, 0:u] transposed.
        assert_eq!(
            &space[at.matrix[1]..at.matrix[1] + i],
            &[1000.0, 1006.0, 1012.0]
        );
        // Linear layer 3 = the reset gate r's recurrent matrix: recurrent[:, u:2u] transposed.
        assert_eq!(&space[at.matrix[3]..at.matrix[3] + u], &[2002.0, 2008.0]);
        // Bias 5 = the candidate's recurrent bias: Keras bias[1][2u:3u].
        assert_eq!(&space[at.bias[5]..at.bias[5] + u], &[3010.0, 3011.0]);
        assert_eq!(read(&space, &at, i, u, true).unwrap(), k);
    }

    #[test]
    fn scattered_offsets_and_errors() {
        // Offsets need not be contiguous or ordered (cuDNN decides): shuffle them, with gaps.
        let (i, u) = (2, 3);
        let sizes: Vec<usize> = (0..6).map(|id| u * if id < 3 { i } else { u }).collect();
        let mut cursor = 7;
        let mut matrix = [0; 6];
        for id in [4, 1, 5, 0, 3, 2] {
            matrix[id] = cursor;
            cursor += sizes[id] + 1;
        }
        let mut bias = [0; 6];
        for id in [2, 0, 5, 1, 4, 3] {
            bias[id] = cursor;
            cursor += u + 2;
        }
        let at = Offsets { matrix, bias };
        let k = keras(i, u, false);
        let mut space = vec![7.0f32; cursor];
        fill(&mut space, &at, &k).unwrap();
        assert!(
            space[at.bias[4]..at.bias[4] + u].iter().all(|&v| v == 0.0),
            "no Keras bias: zeros"
        );
        assert_eq!(read(&space, &at, i, u, false).unwrap(), k);
        assert!(matches!(
            fill(&mut [0.0f32; 10], &at, &k),
            Err(GruError::Shape { .. })
        ));
    }

    /// The tensor builder and the host packing agree on the host model of the layout, and
    /// gradients reach every Keras weight element exactly once.
    #[test]
    fn canonical_tensor_matches_host_packing_and_routes_gradients() {
        use candle_core::{Device, Tensor, Var};
        let (i, u) = (3, 2);
        let k: Vec<f64> = (0..i * 3 * u).map(|v| v as f64 * 0.5 - 1.0).collect();
        let rk: Vec<f64> = (0..u * 3 * u).map(|v| v as f64 * 0.25 + 3.0).collect();
        let b: Vec<f64> = (0..2 * 3 * u).map(|v| 7.0 - v as f64).collect();
        let keras = KerasWeights {
            input_dim: i,
            units: u,
            kernel: k.clone(),
            recurrent_kernel: rk.clone(),
            bias: Some(b.clone()),
        };
        let (at, len) = Offsets::host_model(i, u);
        let mut space = vec![0.0; len];
        fill(&mut space, &at, &keras).unwrap();
        let dev = Device::Cpu;
        let kt = Var::from_tensor(&Tensor::from_vec(k, (i, 3 * u), &dev).unwrap()).unwrap();
        let rkt = Var::from_tensor(&Tensor::from_vec(rk, (u, 3 * u), &dev).unwrap()).unwrap();
        let bt = Var::from_tensor(&Tensor::from_vec(b, (2, 3 * u), &dev).unwrap()).unwrap();
        let w = canonical_weights(kt.as_tensor(), rkt.as_tensor(), bt.as_tensor()).unwrap();
        assert_eq!(w.to_vec1::<f64>().unwrap(), space);
        // d(sum(w * c))/dW = c mapped back: reading the weights of c as Keras weights.
        let c: Vec<f64> = (0..len).map(|v| v as f64 + 1.0).collect();
        let loss = (w * Tensor::from_vec(c.clone(), len, &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let back = read(&c, &at, i, u, true).unwrap();
        let g = |v: &Var| -> Vec<f64> {
            grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(g(&kt), back.kernel);
        assert_eq!(g(&rkt), back.recurrent_kernel);
        assert_eq!(Some(g(&bt)), back.bias);
    }
}
