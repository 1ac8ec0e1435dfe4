//! What every execution path takes and returns: the call's context, the weights split the
//! way the cell uses them, the dropout masks, and the sequence output.

use candle_core::Tensor;
use gru_core::GruConfig;

/// One call as every path sees it: the layer's config and the call's checked tensors.
#[derive(Clone, Copy)]
pub struct CallContext<'a> {
    /// The layer's configuration.
    pub config: &'a GruConfig,
    /// (batch, timesteps, input).
    pub x: &'a Tensor,
    /// (batch, units): the initial state.
    pub h0: &'a Tensor,
    /// (batch, timesteps) u8 mask (1 = use the step), if any.
    pub mask: Option<&'a Tensor>,
    /// This call's dropout masks (empty outside training).
    pub dropout: &'a DropoutMasks,
    /// Keras' `training` flag.
    pub training: bool,
}

/// The weights of one call, split the way the cell uses them.
pub struct CellWeights<'a> {
    /// (input_dim, 3u).
    pub kernel: &'a Tensor,
    /// (u, 3u).
    pub recurrent_kernel: &'a Tensor,
    /// Input bias (3u,), if any.
    pub input_bias: Option<Tensor>,
    /// Recurrent bias (3u,) (reset_after only), if any.
    pub recurrent_bias: Option<Tensor>,
}

/// Dropout masks of one call (empty when dropout is not active).
#[derive(Default)]
pub struct DropoutMasks {
    /// 0, 1 (implementation 2) or 3 (implementation 1, one per gate z, r, h) masks
    /// of shape (batch, input_dim).
    pub input: Vec<Tensor>,
    /// 0 or 3 masks of shape (batch, units), one per gate z, r, h.
    pub recurrent: Vec<Tensor>,
}

/// What a path returns, in Keras' conventions.
pub struct SequenceOutput {
    /// (batch, timesteps, units), in processing order.
    pub sequence: Tensor,
    /// (batch, units): the last processed step's output.
    pub last_output: Tensor,
    /// (batch, units): the final carried state.
    pub state: Tensor,
}

impl SequenceOutput {
    /// The output of a fused op: one flat vector, the sequence (batch, time, units) then the
    /// state (batch, units); both come out as contiguous views (no copy).
    pub fn from_flat(
        flat: &Tensor,
        (batch, time, units): (usize, usize, usize),
    ) -> candle_core::Result<SequenceOutput> {
        let seq_len = batch * time * units;
        let sequence = flat.narrow(0, 0, seq_len)?.reshape((batch, time, units))?;
        let state = flat
            .narrow(0, seq_len, batch * units)?
            .reshape((batch, units))?;
        Ok(SequenceOutput {
            last_output: sequence.narrow(1, time - 1, 1)?.squeeze(1)?,
            state,
            sequence,
        })
    }
}
