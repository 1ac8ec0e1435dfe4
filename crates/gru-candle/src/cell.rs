//! [`GruCell`]: Keras' `GRUCell`, one step of the GRU, for loops the caller writes
//! (autoregressive decoding, attention decoders, streaming), and candle-nn's
//! [`RNN`](candle_nn::rnn::RNN) trait.
//!
//! A step is a call of the cell's one-step [`Gru`] (the same weights, the same paths and
//! gradients as the layer), with the dropout masks Keras' cell keeps: drawn at the first
//! training step and reused by every later step until [`GruCell::reset_dropout_mask`] /
//! [`GruCell::reset_recurrent_dropout_mask`], as Keras' `DropoutRNNCell` does.

use crate::call::CallOptions;
use crate::dropout;
use crate::error::{Error, Result};
use crate::layer::{CpuPath, GpuPath, Gru};
use crate::limits::Limits;
use crate::sequence::DropoutMasks;
use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::GRUState;
use candle_nn::VarBuilder;
use gru_core::{Dispatch, GruCellConfig, GruConfig, GruError, Implementation, UseCudnn};
use std::sync::Mutex;

/// The dropout masks a cell keeps between steps (`None`: not drawn yet).
#[derive(Default)]
struct KeptMasks {
    input: Option<Vec<Tensor>>,
    recurrent: Option<Vec<Tensor>>,
}

/// Keras' `GRUCell` on Candle: `h = cell.call(x, h_prev, training)` is one GRU step,
/// `(batch, input_dim)` and `(batch, units)` to `(batch, units)`.
///
/// Weights have Keras' names, shapes and gate order (as [`Gru`]'s). Gradients reach the
/// weights, the inputs and the state through every step.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use gru_candle::GruCell;
/// use gru_core::GruCellConfig;
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let cell = GruCell::new(GruCellConfig::new(8), 5, vb.pp("decoder"))?;
/// let mut h = cell.initial_state(2)?;
/// for _ in 0..3 {
///     let x = Tensor::randn(0f32, 1.0, (2, 5), &Device::Cpu)?;
///     h = cell.call(&x, &h, false)?;
/// }
/// assert_eq!(h.dims(), &[2, 8]);
/// # Ok::<(), gru_candle::Error>(())
/// ```
pub struct GruCell {
    config: GruCellConfig,
    /// The cell's math over one step: a GRU returning its one-step sequence.
    step: Gru,
    masks: Mutex<KeptMasks>,
}

impl std::fmt::Debug for GruCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GruCell")
            .field("name", &self.config.name)
            .field("units", &self.config.units)
            .field("input_dim", &self.step.input_dim())
            .field("dtype", &self.step.dtype())
            .finish()
    }
}

/// The one-step GRU that runs a cell: its sequence of one step is the new state. cuDNN is
/// never chosen: Keras' cell is its own gate math, one cuDNN call per step would cost more
/// than the step, and three per-gate dropout masks (implementation 1) are not cuDNN's.
fn step_config(cell: &GruCellConfig) -> GruConfig {
    let mut g = cell.to_gru_config();
    g.return_sequences = true;
    g.use_cudnn = UseCudnn::Never;
    g
}

impl GruCell {
    /// Builds the cell for inputs with `input_dim` features: weights named `kernel`,
    /// `recurrent_kernel` and `bias` are taken from `vb` when it has them and created with
    /// the config's initializers otherwise, as [`Gru::new`] does.
    pub fn new(config: GruCellConfig, input_dim: usize, vb: VarBuilder) -> Result<GruCell> {
        Self::new_with_limits(config, input_dim, vb, &Limits::default())
    }

    /// [`GruCell::new`] under other size limits.
    pub fn new_with_limits(
        mut config: GruCellConfig,
        input_dim: usize,
        vb: VarBuilder,
        limits: &Limits,
    ) -> Result<GruCell> {
        config.validate()?;
        let step = Gru::new_with_limits(step_config(&config), input_dim, vb, limits)?;
        Ok(Self::around(config, step))
    }

    /// Builds the cell from given weight tensors (Keras shapes and gate order); checks
    /// shapes, dtypes and devices.
    pub fn from_weights(
        mut config: GruCellConfig,
        kernel: Tensor,
        recurrent_kernel: Tensor,
        bias: Option<Tensor>,
    ) -> Result<GruCell> {
        config.validate()?;
        let step = Gru::from_weights(step_config(&config), kernel, recurrent_kernel, bias)?;
        Ok(Self::around(config, step))
    }

    fn around(config: GruCellConfig, step: Gru) -> GruCell {
        GruCell {
            config,
            step,
            masks: Mutex::new(KeptMasks::default()),
        }
    }

    /// The cell's config.
    pub fn config(&self) -> &GruCellConfig {
        &self.config
    }

    /// The number of input features.
    pub fn input_dim(&self) -> usize {
        self.step.input_dim()
    }

    /// `kernel` (input_dim, 3u).
    pub fn kernel(&self) -> &Tensor {
        self.step.kernel()
    }

    /// `recurrent_kernel` (u, 3u).
    pub fn recurrent_kernel(&self) -> &Tensor {
        self.step.recurrent_kernel()
    }

    /// `bias`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.step.bias()
    }

    /// The weights in Keras' order (`get_weights()`).
    pub fn weights(&self) -> Vec<&Tensor> {
        self.step.weights()
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.step.dtype()
    }

    /// The dtype steps compute in (the weights', or a mixed policy's half type).
    pub fn compute_dtype(&self) -> DType {
        self.step.compute_dtype()
    }

    /// The weights' device.
    pub fn device(&self) -> &Device {
        self.step.device()
    }

    /// The path the last step took and why.
    pub fn last_dispatch(&self) -> Option<Dispatch> {
        self.step.last_dispatch()
    }

    /// The same cell with another CPU implementation (see [`Gru::with_cpu_path`]).
    pub fn with_cpu_path(mut self, path: CpuPath) -> GruCell {
        self.step = self.step.with_cpu_path(path);
        self
    }

    /// The same cell with another implementation on a CUDA device (see
    /// [`Gru::with_gpu_path`]).
    pub fn with_gpu_path(mut self, path: GpuPath) -> GruCell {
        self.step = self.step.with_gpu_path(path);
        self
    }

    /// The same cell with a fixed number of threads on the fused CPU path (see
    /// [`Gru::with_threads`]).
    pub fn with_threads(mut self, threads: Option<usize>) -> GruCell {
        self.step = self.step.with_threads(threads);
        self
    }

    /// The same cell with Keras' `trainable` set (see [`Gru::with_trainable`]).
    pub fn with_trainable(mut self, trainable: bool) -> GruCell {
        self.config.trainable = trainable;
        self.step = self.step.with_trainable(trainable);
        self
    }

    /// A twin of this cell that no gradient reaches, over the same weight storage (see
    /// [`Gru::frozen`]): for decoding beside training. Its dropout masks start undrawn.
    pub fn frozen(&self) -> Result<GruCell> {
        let config = GruCellConfig {
            trainable: false,
            ..self.config.clone()
        };
        Ok(GruCell::around(config, self.step.frozen()?))
    }

    /// Keras' `get_initial_state(batch_size)`: zeros (batch, units) in the compute dtype.
    pub fn initial_state(&self, batch: usize) -> Result<Tensor> {
        let u = self.config.units;
        Ok(Tensor::zeros(
            (batch, u),
            self.compute_dtype(),
            self.device(),
        )?)
    }

    /// Keras' `cell(inputs, states, training)`: one step from `state` (batch, units) with
    /// `inputs` (batch, input_dim); returns the new state, which is also the output.
    /// Dropout acts in training only, with the masks the cell keeps (see the module docs).
    pub fn call(&self, inputs: &Tensor, state: &Tensor, training: bool) -> Result<Tensor> {
        let (b, u) = (self.check_inputs(inputs)?, self.config.units);
        if state.dims() != [b, u] {
            return Err(shape_error(
                "state",
                format!("(batch, units) = [{b}, {u}]"),
                state,
            ));
        }
        self.step.check_dtype("state", state)?;
        self.step.check_device("state", state)?;
        let masks = self.masks(b, training)?;
        let opts = CallOptions {
            mask: None,
            initial_state: Some(state),
            training,
        };
        let x = inputs.unsqueeze(1)?;
        let out = self.step.call_with_masks(&x, opts, Some(masks))?;
        Ok(out.output.squeeze(1)?)
    }

    /// The batch of `inputs`, checked to be (batch, input_dim) with a batch.
    fn check_inputs(&self, inputs: &Tensor) -> Result<usize> {
        let f = self.input_dim();
        match inputs.dims() {
            [b, d] if *d == f && *b > 0 => Ok(*b),
            _ => Err(shape_error(
                "inputs",
                format!("(batch, {f}): one step, batch at least 1"),
                inputs,
            )),
        }
    }

    /// Runs a whole sequence (batch, T, input_dim) from `state` as T steps would (the same
    /// numbers), in one call of the fused sequence paths; returns every step's state,
    /// (batch, T, units). Keras' `RNN(cell)` draws new dropout masks for each such call;
    /// so does this (the kept masks of [`GruCell::call`] are left as they are).
    pub fn sequence(&self, inputs: &Tensor, state: &Tensor, training: bool) -> Result<Tensor> {
        let opts = CallOptions {
            mask: None,
            initial_state: Some(state),
            training,
        };
        Ok(self.step.call(inputs, opts)?.output)
    }

    /// Forgets the kept input dropout masks: the next training step draws new ones (Keras'
    /// `reset_dropout_mask`, called by Keras' `RNN` at the start of each sequence).
    pub fn reset_dropout_mask(&self) {
        if let Ok(mut m) = self.masks.lock() {
            m.input = None;
        }
    }

    /// Forgets the kept recurrent dropout masks (Keras' `reset_recurrent_dropout_mask`).
    pub fn reset_recurrent_dropout_mask(&self) {
        if let Ok(mut m) = self.masks.lock() {
            m.recurrent = None;
        }
    }

    /// The kernel, recurrent and bias regularizers' loss (Keras' `cell.losses`).
    pub fn regularization_loss(&self) -> Result<Tensor> {
        self.step.regularization_loss()
    }

    /// The activity regularization loss Keras adds for a step that returned `output`, when
    /// the config has an `activity_regularizer`: the regularizer of each of the two tensors
    /// a step returns (the output and the new state, the same values) divided by the batch
    /// size, summed. Add it to the loss for every step, as Keras' `cell.losses` collects it.
    pub fn activity_loss(&self, output: &Tensor) -> Result<Option<Tensor>> {
        let Some(reg) = &self.config.activity_regularizer else {
            return Ok(None);
        };
        let batch = output.dim(0)? as f64;
        let one = (crate::regularizer::loss(reg, output)? / batch)?;
        Ok(Some((&one + &one)?))
    }

    /// Applies the weight constraints (after each optimizer step, as Keras does).
    pub fn apply_constraints(&self) -> Result<()> {
        self.step.apply_constraints()
    }

    /// This step's dropout masks: the kept ones, drawn now if this is the first training
    /// step that needs them (Keras draws them only when `training` and `0 < rate < 1`).
    fn masks(&self, batch: usize, training: bool) -> Result<DropoutMasks> {
        let cfg = &self.config;
        let mut out = DropoutMasks::default();
        let input_active = dropout::active(cfg.dropout, training);
        let recurrent_active = dropout::active(cfg.recurrent_dropout, training);
        if !input_active && !recurrent_active {
            return Ok(out);
        }
        let mut kept = self.masks.lock().map_err(|_| poisoned())?;
        let count = match cfg.effective_implementation() {
            Implementation::One => 3,
            Implementation::Two => 1,
        };
        if input_active {
            let (f, rate) = (self.input_dim(), cfg.dropout);
            out.input = self.kept_or_drawn(&mut kept.input, count, batch, f, rate)?;
        }
        if recurrent_active {
            let (u, rate) = (cfg.units, cfg.recurrent_dropout);
            out.recurrent = self.kept_or_drawn(&mut kept.recurrent, 3, batch, u, rate)?;
        }
        Ok(out)
    }

    fn kept_or_drawn(
        &self,
        slot: &mut Option<Vec<Tensor>>,
        count: usize,
        batch: usize,
        width: usize,
        rate: f64,
    ) -> Result<Vec<Tensor>> {
        if let Some(kept) = slot.as_ref() {
            let drawn_for = kept.first().map(|m| m.dims()[0]).unwrap_or(batch);
            if drawn_for != batch {
                return Err(Error::Gru(GruError::Shape {
                    what: "inputs (the cell's kept dropout masks)".into(),
                    expected: format!(
                        "batch {drawn_for}, the batch the masks were drawn for \
                         (reset_dropout_mask / reset_recurrent_dropout_mask draw new ones)"
                    ),
                    got: format!("batch {batch}"),
                }));
            }
            return Ok(kept.clone());
        }
        let drawn = self.step.draw_masks(count, batch, width, rate)?;
        *slot = Some(drawn.clone());
        Ok(drawn)
    }
}

impl Gru {
    /// The layer's cell (Keras' `gru.cell`): the same weight tensors (trainable `Var`s
    /// stay the same `Var`s), for stepping by hand what the layer runs over sequences,
    /// e.g. decoding one token at a time with a layer trained on whole sequences.
    pub fn cell(&self) -> Result<GruCell> {
        let cell = GruCell::from_weights(
            self.config().cell_config(),
            self.kernel().clone(),
            self.recurrent_kernel().clone(),
            self.bias().cloned(),
        )?;
        Ok(cell
            .with_cpu_path(self.cpu_path())
            .with_gpu_path(self.gpu_path())
            .with_threads(self.fused.threads))
    }
}

impl candle_nn::rnn::RNN for GruCell {
    type State = GRUState;

    fn zero_state(&self, batch_dim: usize) -> candle_core::Result<GRUState> {
        Ok(GRUState {
            h: self.initial_state(batch_dim)?,
        })
    }

    /// One inference step.
    fn step(&self, input: &Tensor, state: &GRUState) -> candle_core::Result<GRUState> {
        Ok(GRUState {
            h: self.call(input, &state.h, false)?,
        })
    }

    /// The whole sequence in one call of the sequence paths (the states T inference steps
    /// give).
    fn seq_init(&self, input: &Tensor, init: &GRUState) -> candle_core::Result<Vec<GRUState>> {
        let states = self.sequence(input, &init.h, false)?;
        (0..states.dim(1)?)
            .map(|t| {
                Ok(GRUState {
                    h: states.get_on_dim(1, t)?,
                })
            })
            .collect()
    }

    /// (batch, T, units), as candle-nn's GRU stacks its states.
    fn states_to_tensor(&self, states: &[GRUState]) -> candle_core::Result<Tensor> {
        let hs: Vec<&Tensor> = states.iter().map(|s| &s.h).collect();
        Tensor::stack(&hs, 1)
    }
}

fn shape_error(what: &str, expected: String, got: &Tensor) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected,
        got: format!("{:?}", got.dims()),
    })
}

fn poisoned() -> Error {
    Error::Candle(candle_core::Error::Msg(
        "GRU cell's dropout masks lock poisoned by a panic in another thread".into(),
    ))
}
