//! [`Gru`]: the layer, its weights, construction from a `VarBuilder`, regularization losses,
//! constraints and stateful state.

use crate::dtype::{compute_dtype_of_policy, require_float};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::paths::fused_cpu::FusedSettings;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use gru_core::{Constraint, Dispatch, GruConfig, GruError, Initializer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;

/// Which CPU implementation calls on CPU tensors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuPath {
    /// gru-core's fused whole-sequence kernels with their own backward (f32, f64; f16 and
    /// bf16 computed in f32, outputs rounded to the half type).
    #[default]
    Fused,
    /// The op-by-op Candle loop: the reference, differentiated by Candle's autograd.
    Loop,
    /// The fused step kernels on their host backend: the GPU path's exact step sequence and
    /// CUDA C kernels, compiled for the host (f32, f64). A reference for testing that path
    /// on any machine, not a fast path.
    KernelsOnHost,
}

/// Which implementation calls on a CUDA device use when cuDNN does not run them (a failed
/// condition under `UseCudnn::Auto`, or `UseCudnn::Never`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuPath {
    /// The fused step kernels: per step the recurrent product(s) on cuBLAS and one CUDA
    /// kernel for all gate math, with their own backward (f32, f64, f16, bf16; the `cudnn`
    /// build).
    #[default]
    StepKernels,
    /// The op-by-op Candle loop: the reference.
    Loop,
}

/// The state a stateful layer keeps between calls.
#[derive(Default)]
pub(crate) struct KeptState {
    /// The batch size fixed by the first call.
    pub batch: Option<usize>,
    /// The final state of the last call (`None` = zeros).
    pub h: Option<Tensor>,
}

/// A Keras-exact GRU layer (`keras.layers.GRU`) on Candle.
///
/// Weights have Keras' names, shapes and gate order `[z | r | h]`: `kernel`
/// (input_dim, 3u), `recurrent_kernel` (u, 3u), `bias` (2, 3u) with `reset_after` or (3u,)
/// without, none with `use_bias = false`.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use gru_candle::Gru;
/// use gru_core::GruConfig;
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let gru = Gru::new(GruConfig::new(8), 5, vb.pp("gru"))?;
/// let x = Tensor::zeros((2, 7, 5), DType::F32, &Device::Cpu)?;
/// assert_eq!(gru.forward(&x)?.dims(), &[2, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Gru {
    pub(crate) config: GruConfig,
    pub(crate) input_dim: usize,
    pub(crate) kernel: Tensor,
    pub(crate) recurrent_kernel: Tensor,
    pub(crate) bias: Option<Tensor>,
    /// The dtype calls compute in (see [`Gru::compute_dtype`]).
    pub(crate) compute_dtype: DType,
    pub(crate) kept: Mutex<KeptState>,
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) last_dispatch: Mutex<Option<Dispatch>>,
    pub(crate) cpu_path: CpuPath,
    pub(crate) gpu_path: GpuPath,
    pub(crate) fused: FusedSettings,
    pub(crate) cudnn_tf32: bool,
}

impl std::fmt::Debug for Gru {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gru")
            .field("name", &self.config.name)
            .field("units", &self.config.units)
            .field("input_dim", &self.input_dim)
            .field("dtype", &self.kernel.dtype())
            .field("compute_dtype", &self.compute_dtype)
            .finish()
    }
}

/// Gets the variable `name` from the VarBuilder (shape-checked), or creates it there with a
/// Keras initializer (a trainable `Var` when the VarBuilder is backed by a `VarMap`). A
/// seeded initializer makes the weights reproducible, which candle's own CPU random
/// generator cannot.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use gru_core::{Initializer, ScalingPreset};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let init = Initializer::preset(ScalingPreset::GlorotUniform, Some(1));
/// let w = gru_candle::keras_variable(&vb, "dense.kernel", &[4, 2], &init)?;
/// assert!(w.is_variable());
/// # Ok::<(), gru_candle::Error>(())
/// ```
pub fn keras_variable(
    vb: &VarBuilder,
    name: &str,
    shape: &[usize],
    init: &Initializer,
) -> Result<Tensor> {
    if vb.contains_tensor(name) {
        return vb.get(shape, name).map_err(|e| {
            Error::Gru(GruError::Shape {
                what: format!("weight `{name}`"),
                expected: format!("{shape:?}"),
                got: e.to_string(),
            })
        });
    }
    let values = init.generate(name, shape)?;
    let value = Tensor::from_vec(values, shape, vb.device())?.to_dtype(vb.dtype())?;
    let t = vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))?;
    if t.is_variable() {
        Var::from_tensor(&t)?.set(&value)?;
        Ok(t)
    } else {
        Ok(value)
    }
}

fn check_shape(what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return Err(Error::Gru(GruError::Shape {
            what: what.to_string(),
            expected: format!("{want:?}"),
            got: format!("{:?}", t.dims()),
        }));
    }
    Ok(())
}

impl Gru {
    /// Builds the layer for inputs with `input_dim` features. Weights named `kernel`,
    /// `recurrent_kernel` and `bias` are taken from `vb` when it has them (a loaded
    /// checkpoint, a filled `VarMap`) and created with the config's initializers otherwise
    /// (in a `VarMap` they become trainable `Var`s). The weights' dtype is `vb`'s; calls
    /// compute in it too, except under a mixed precision policy (`mixed_float16`,
    /// `mixed_bfloat16`), where they compute in the policy's half type as Keras does (see
    /// [`Gru::compute_dtype`]).
    ///
    /// The weights' size is checked against [`Limits::default`] before anything is
    /// allocated (see [`Gru::new_with_limits`]).
    pub fn new(config: GruConfig, input_dim: usize, vb: VarBuilder) -> Result<Gru> {
        Self::new_with_limits(config, input_dim, vb, &Limits::default())
    }

    /// [`Gru::new`] under other size limits.
    pub fn new_with_limits(
        mut config: GruConfig,
        input_dim: usize,
        vb: VarBuilder,
        limits: &Limits,
    ) -> Result<Gru> {
        config.validate()?;
        if input_dim == 0 {
            return Err(Error::Gru(GruError::Shape {
                what: "input_dim".into(),
                expected: "at least 1 feature".into(),
                got: "0".into(),
            }));
        }
        require_float("VarBuilder", vb.dtype())?;
        let bias_rows = match (config.use_bias, config.reset_after) {
            (false, _) => 0,
            (true, after) => 1 + usize::from(after),
        };
        limits.check_layer(
            input_dim,
            config.units,
            bias_rows,
            vb.dtype().size_in_bytes(),
        )?;
        let u = config.units;
        let kernel = keras_variable(
            &vb,
            "kernel",
            &[input_dim, 3 * u],
            &config.kernel_initializer,
        )?;
        let recurrent_kernel = keras_variable(
            &vb,
            "recurrent_kernel",
            &[u, 3 * u],
            &config.recurrent_initializer,
        )?;
        let bias = match config.bias_shape() {
            Some(shape) => Some(keras_variable(
                &vb,
                "bias",
                &shape,
                &config.bias_initializer,
            )?),
            None => None,
        };
        Self::assemble(config, kernel, recurrent_kernel, bias)
    }

    /// Builds the layer from given weight tensors (Keras shapes and gate order); checks
    /// shapes, dtypes and devices.
    pub fn from_weights(
        mut config: GruConfig,
        kernel: Tensor,
        recurrent_kernel: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Gru> {
        config.validate()?;
        Self::assemble_checked(&config, &kernel, &recurrent_kernel, bias.as_ref())?;
        Self::assemble(config, kernel, recurrent_kernel, bias)
    }

    fn assemble_checked(
        config: &GruConfig,
        kernel: &Tensor,
        recurrent_kernel: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<()> {
        let u = config.units;
        require_float("kernel", kernel.dtype())?;
        if !matches!(kernel.dims(), [i, c] if *c == 3 * u && *i > 0) {
            return Err(Error::Gru(GruError::Shape {
                what: "kernel".into(),
                expected: format!("(input_dim, {})", 3 * u),
                got: format!("{:?}", kernel.dims()),
            }));
        }
        check_shape("recurrent_kernel", recurrent_kernel, &[u, 3 * u])?;
        match (config.bias_shape(), bias) {
            (Some(shape), Some(b)) => check_shape("bias", b, &shape)?,
            (None, None) => {}
            (want, got) => {
                return Err(Error::Gru(GruError::Shape {
                    what: "bias".into(),
                    expected: match want {
                        Some(s) => format!("{s:?}"),
                        None => "no bias (use_bias=false)".into(),
                    },
                    got: match got {
                        Some(b) => format!("{:?}", b.dims()),
                        None => "none".into(),
                    },
                }))
            }
        }
        for (what, t) in [("recurrent_kernel", Some(recurrent_kernel)), ("bias", bias)] {
            if let Some(t) = t {
                if t.dtype() != kernel.dtype() {
                    return Err(Error::Gru(GruError::DType {
                        what: what.into(),
                        expected: format!("{:?} (the kernel's dtype)", kernel.dtype()),
                        got: format!("{:?}", t.dtype()),
                    }));
                }
                if !t.device().same_device(kernel.device()) {
                    return Err(Error::Gru(GruError::Device {
                        what: what.into(),
                        expected: format!("{:?} (the kernel's device)", kernel.device()),
                        got: format!("{:?}", t.device()),
                    }));
                }
            }
        }
        Ok(())
    }

    fn assemble(
        config: GruConfig,
        kernel: Tensor,
        recurrent_kernel: Tensor,
        bias: Option<Tensor>,
    ) -> Result<Gru> {
        let input_dim = kernel.dim(0)?;
        let compute_dtype = compute_dtype_of_policy(&config.dtype, kernel.dtype())?;
        let seed = config.seed.unwrap_or_else(|| rand::rng().random());
        Ok(Gru {
            config,
            input_dim,
            kernel,
            recurrent_kernel,
            bias,
            compute_dtype,
            kept: Mutex::new(KeptState::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            last_dispatch: Mutex::new(None),
            cpu_path: CpuPath::Fused,
            gpu_path: GpuPath::StepKernels,
            fused: FusedSettings::default(),
            cudnn_tf32: false,
        })
    }

    /// The same layer with `zero_output_for_mask` set (Keras' `Bidirectional` sets it to
    /// `return_sequences` on both directions).
    pub fn with_zero_output_for_mask(mut self, zero: bool) -> Gru {
        self.config.zero_output_for_mask = zero;
        self
    }

    /// Restarts the stream the layer draws its dropout masks from at `seed`, as a
    /// `seed` in its config would start it: the draws of a run that follows repeat.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        crate::dropout::reseed(&self.rng, seed)
    }

    /// The same layer with Keras' `trainable` set (`layer.trainable = False`): a layer that
    /// is not trainable takes its weights as constants in every call, so no gradient reaches
    /// them (see [`Gru::frozen`]).
    pub fn with_trainable(mut self, trainable: bool) -> Gru {
        self.config.trainable = trainable;
        self
    }

    /// A twin of this layer that no gradient reaches, over the same weight storage: it sees
    /// every later update of the weights (an optimizer's step, a constraint). For inference
    /// beside training, e.g. generating one step at a time from a layer being trained: its
    /// calls on data keep no autograd graph (a call over trainable weights does, until the
    /// graph is dropped). Its own stateful state starts empty.
    pub fn frozen(&self) -> Result<Gru> {
        let config = GruConfig {
            trainable: false,
            ..self.config.clone()
        };
        let (k, r, b) = (
            self.kernel.clone(),
            self.recurrent_kernel.clone(),
            self.bias.clone(),
        );
        Ok(Gru::from_weights(config, k, r, b)?
            .with_cpu_path(self.cpu_path)
            .with_gpu_path(self.gpu_path)
            .with_threads(self.fused.threads)
            .with_cudnn_tf32(self.cudnn_tf32))
    }

    /// The same layer with another CPU implementation (the fused kernels are the default;
    /// the loop is the reference path).
    pub fn with_cpu_path(mut self, path: CpuPath) -> Gru {
        self.cpu_path = path;
        self
    }

    /// The same layer with another implementation for calls on a CUDA device that cuDNN does
    /// not run (the fused step kernels are the default; the loop is the reference path).
    pub fn with_gpu_path(mut self, path: GpuPath) -> Gru {
        self.gpu_path = path;
        self
    }

    /// The implementation calls on a CUDA device use when cuDNN does not run them.
    pub fn gpu_path(&self) -> GpuPath {
        self.gpu_path
    }

    /// The same layer with TF32 allowed (or not) for f32 calls on cuDNN. Off by default:
    /// f32 runs with `CUDNN_FMA_MATH`, which matches the CPU loop at f32 tolerances; TF32
    /// (Ampere and later) is faster and keeps about 10 mantissa bits in the products.
    pub fn with_cudnn_tf32(mut self, allow: bool) -> Gru {
        self.cudnn_tf32 = allow;
        self
    }

    /// Whether f32 calls on cuDNN may use TF32.
    pub fn cudnn_tf32(&self) -> bool {
        self.cudnn_tf32
    }

    /// The CPU implementation calls use.
    pub fn cpu_path(&self) -> CpuPath {
        self.cpu_path
    }

    /// The same layer with a fixed number of threads for the fused path (`None`: all cores
    /// when the call can use them, else one). Threads take batch slices when the batch has
    /// two rows per thread; otherwise an inference call splits its hidden units over them
    /// (reset_after, 64 units or more a thread), or large matrix products get them.
    pub fn with_threads(mut self, threads: Option<usize>) -> Gru {
        self.fused.threads = threads.map(|t| t.max(1));
        self
    }

    /// The threads a fused call with this batch size and number of steps uses.
    pub fn threads_for(&self, batch: usize, time: usize) -> usize {
        let c = &self.config;
        self.fused.threads_for(batch, time, c.units, c.reset_after)
    }

    /// The layer's configuration.
    pub fn config(&self) -> &GruConfig {
        &self.config
    }

    /// The number of input features the weights were built for.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// `kernel` (input_dim, 3u).
    pub fn kernel(&self) -> &Tensor {
        &self.kernel
    }

    /// `recurrent_kernel` (u, 3u).
    pub fn recurrent_kernel(&self) -> &Tensor {
        &self.recurrent_kernel
    }

    /// `bias`: (2, 3u) with reset_after, (3u,) without, `None` without bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The weights in Keras' order `[kernel, recurrent_kernel, bias]`.
    pub fn weights(&self) -> Vec<&Tensor> {
        let mut w = vec![&self.kernel, &self.recurrent_kernel];
        w.extend(self.bias.as_ref());
        w
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.kernel.dtype()
    }

    /// The dtype calls compute in and return: the weights' dtype, or under a mixed precision
    /// policy (Keras' `mixed_float16`, `mixed_bfloat16`) the policy's half type. A mixed
    /// layer works as Keras' does: its inputs and initial state may come in the compute
    /// dtype or the weights' dtype and are cast to the compute dtype, the weights are cast
    /// for each call (gradients reach them in their own dtype), and the outputs, the state
    /// and the activity loss are in the compute dtype.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use candle_nn::{VarBuilder, VarMap};
    /// use gru_candle::{CallOptions, Gru};
    /// use gru_core::GruConfig;
    ///
    /// let config = GruConfig::from_keras_str(r#"{"units": 4, "dtype": "mixed_float16"}"#)?;
    /// let varmap = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let gru = Gru::new(config, 3, vb)?;
    /// assert_eq!((gru.dtype(), gru.compute_dtype()), (DType::F32, DType::F16));
    /// let x = Tensor::ones((2, 5, 3), DType::F32, &Device::Cpu)?;
    /// assert_eq!(gru.call(&x, CallOptions::default())?.output.dtype(), DType::F16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The weights' device.
    pub fn device(&self) -> &Device {
        self.kernel.device()
    }

    /// Zeroes the state a stateful layer keeps (Keras' `reset_states`). The batch size stays
    /// fixed.
    pub fn reset_states(&self) {
        if let Ok(mut k) = self.kept.lock() {
            k.h = None;
        }
    }

    /// The state a stateful layer keeps, `None` when it is zeros or was never set.
    pub fn states(&self) -> Option<Tensor> {
        self.kept.lock().ok().and_then(|k| k.h.clone())
    }

    /// The dispatch decision of the last call (path and every condition).
    pub fn last_dispatch(&self) -> Option<Dispatch> {
        self.last_dispatch.lock().ok().and_then(|d| d.clone())
    }

    /// The sum of the weight regularization losses (kernel, recurrent kernel, bias) as a
    /// differentiable scalar, for a training loop to add to its loss. Zero without
    /// regularizers.
    pub fn regularization_loss(&self) -> Result<Tensor> {
        let c = &self.config;
        let mut total = Tensor::zeros((), self.dtype(), self.device())?;
        for (reg, w) in [
            (c.kernel_regularizer, Some(&self.kernel)),
            (c.recurrent_regularizer, Some(&self.recurrent_kernel)),
            (c.bias_regularizer, self.bias.as_ref()),
        ] {
            if let (Some(reg), Some(w)) = (reg, w) {
                total = (total + crate::regularizer::loss(&reg, w)?)?;
            }
        }
        Ok(total)
    }

    /// Applies the config's constraints to the weights in place (call after each optimizer
    /// step, as Keras does). The weights must be trainable `Var`s (built from a `VarMap`).
    pub fn apply_constraints(&self) -> Result<()> {
        let c = &self.config;
        for (name, constraint, w) in [
            ("kernel", &c.kernel_constraint, Some(&self.kernel)),
            (
                "recurrent_kernel",
                &c.recurrent_constraint,
                Some(&self.recurrent_kernel),
            ),
            ("bias", &c.bias_constraint, self.bias.as_ref()),
        ] {
            if let (Some(constraint), Some(w)) = (constraint, w) {
                apply_constraint(name, constraint, w)?;
            }
        }
        Ok(())
    }
}

/// Applies a Keras constraint to the weight `name` in place; the weight must be a trainable
/// `Var` (built from a `VarMap`), else a typed error naming it.
pub(crate) fn apply_constraint(name: &str, constraint: &Constraint, w: &Tensor) -> Result<()> {
    if !w.is_variable() {
        return Err(Error::Gru(GruError::InvalidConfig {
            key: format!("{name}_constraint"),
            expected: format!("`{name}` to be a trainable Var (build the layer from a VarMap)"),
            got: "a constant tensor".into(),
        }));
    }
    let mut values: Vec<f64> = w.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    constraint.apply(name, w.dims(), &mut values)?;
    let new = Tensor::from_vec(values, w.dims(), w.device())?.to_dtype(w.dtype())?;
    Var::from_tensor(w)?.set(&new)?;
    Ok(())
}
