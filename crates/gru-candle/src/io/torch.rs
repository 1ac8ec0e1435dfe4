//! PyTorch `nn.GRU` state_dicts (safetensors) as Keras-layout layers.
//!
//! PyTorch's GRU is Keras' `reset_after=True` form: gate rows r, z, n are reordered to Keras'
//! z, r, h and transposed (gru-core's `layout`); `bias_ih`/`bias_hh` become Keras' (2, 3u)
//! bias. Each direction of each layer becomes a [`Gru`] that returns sequences and state;
//! bidirectional layers are [`Bidirectional`] with concat, as `nn.GRU` concatenates.

use super::{check_shape, tensor_from};
use crate::bidirectional::{Bidirectional, MergeMode};
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use crate::stack::{GruStack, StackLayer};
use candle_core::{DType, Device, Tensor};
use gru_core::layout::TorchWeights;
use gru_core::GruConfig;
use std::collections::HashMap;
use std::path::Path;

/// The tensors of one `nn.GRU` in a state_dict: their common prefix, hidden size and
/// whether they have biases.
struct StateDict<'a> {
    source: &'a str,
    tensors: &'a HashMap<String, Tensor>,
    prefix: String,
    hidden: usize,
    has_bias: bool,
    dtype: DType,
    device: &'a Device,
    /// A trainable load: every weight becomes a `Var` of this map.
    vars: Option<&'a candle_nn::VarMap>,
}

impl<'a> StateDict<'a> {
    fn new(
        source: &'a str,
        tensors: &'a HashMap<String, Tensor>,
        opts: TorchLoad<'a>,
        dtype: DType,
        device: &'a Device,
    ) -> Result<Self> {
        let prefix = opts.prefix;
        let prefixes = gru_prefixes(tensors);
        let prefix = match (prefix, prefixes.as_slice()) {
            (Some(p), _) if prefixes.iter().any(|q| q == p) => p.to_string(),
            (Some(p), _) => {
                let what = format!("{p}weight_ih_l0 (the GRUs here: {prefixes:?})");
                return Err(file_error(source, FileProblem::Missing(what)));
            }
            (None, [p]) => p.to_string(),
            (None, []) => {
                return Err(file_error(
                    source,
                    FileProblem::Missing("weight_ih_l0".into()),
                ))
            }
            (None, many) => {
                let what = format!(
                    "several GRUs in one file (prefixes {many:?}): load one with \
                     TorchGru::load_prefix"
                );
                return Err(file_error(source, FileProblem::Unsupported(what)));
            }
        };
        let mut sd = StateDict {
            source,
            tensors,
            prefix,
            hidden: 0,
            has_bias: false,
            dtype,
            device,
            vars: opts.vars,
        };
        sd.hidden = match sd.need("weight_hh_l0")?.dims() {
            [r, h] if *r == 3 * *h && *h > 0 => *h,
            other => {
                let h = other.get(1).copied().unwrap_or(0);
                let name = format!("{}weight_hh_l0", sd.prefix);
                let problem = FileProblem::Shape {
                    name,
                    expected: vec![3 * h, h],
                    got: other.to_vec(),
                };
                return Err(file_error(source, problem));
            }
        };
        sd.has_bias = sd.get("bias_ih_l0").is_some();
        Ok(sd)
    }

    fn get(&self, name: &str) -> Option<&'a Tensor> {
        self.tensors.get(&format!("{}{name}", self.prefix))
    }

    fn need(&self, name: &str) -> Result<&'a Tensor> {
        self.get(name).ok_or_else(|| {
            file_error(
                self.source,
                FileProblem::Missing(format!("{}{name}", self.prefix)),
            )
        })
    }

    /// The values of `name`, checked to have `shape`.
    fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let t = self.need(name)?;
        check_shape(
            self.source,
            &format!("{}{name}", self.prefix),
            t.dims(),
            shape,
        )?;
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    /// A bias, present exactly when `bias_ih_l0` is.
    fn bias(&self, name: &str) -> Result<Option<Vec<f64>>> {
        match (self.has_bias, self.get(name).is_some()) {
            (true, _) => self.host(name, &[3 * self.hidden]).map(Some),
            (false, true) => {
                let what = format!("{}{name} present but bias_ih_l0 absent", self.prefix);
                Err(file_error(self.source, FileProblem::Unsupported(what)))
            }
            (false, false) => Ok(None),
        }
    }

    /// One direction of one layer (`sfx` = `l{k}` or `l{k}_reverse`) as a Keras GRU that
    /// returns sequences and state.
    fn direction(&self, sfx: &str, in_dim: usize, backwards: bool) -> Result<Gru> {
        let h = self.hidden;
        let w = TorchWeights {
            weight_ih: self.host(&format!("weight_ih_{sfx}"), &[3 * h, in_dim])?,
            weight_hh: self.host(&format!("weight_hh_{sfx}"), &[3 * h, h])?,
            bias_ih: self.bias(&format!("bias_ih_{sfx}"))?,
            bias_hh: self.bias(&format!("bias_hh_{sfx}"))?,
        };
        let k = w.to_keras(in_dim, h)?;
        let mut cfg = GruConfig::new(h);
        cfg.name = sfx.to_string();
        cfg.return_sequences = true;
        cfg.return_state = true;
        cfg.use_bias = self.has_bias;
        cfg.go_backwards = backwards;
        // pad_packed_sequence pads with zeros.
        cfg.zero_output_for_mask = true;
        let t = |name: &str, v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            let t = tensor_from(self.source, name, v, shape, self.dtype, self.device)?;
            match self.vars {
                Some(vars) => super::register_var(vars, &format!("{}{sfx}.{name}", self.prefix), t),
                None => Ok(t),
            }
        };
        let kernel = t("kernel", k.kernel, &[in_dim, 3 * h])?;
        let recurrent = t("recurrent_kernel", k.recurrent_kernel, &[h, 3 * h])?;
        let bias = k.bias.map(|b| t("bias", b, &[2, 3 * h])).transpose()?;
        Gru::from_weights(cfg, kernel, recurrent, bias)
    }
}

/// The prefixes of the `nn.GRU`s in a state_dict (`""`, `gru.`, `encoder.` ...): the keys
/// that end in `weight_ih_l0`, without that ending, sorted.
fn gru_prefixes(tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let mut p: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix("weight_ih_l0"))
        .map(str::to_string)
        .collect();
    p.sort();
    p
}

/// How [`TorchGru::load_with`] reads a state_dict.
#[derive(Clone, Copy, Default)]
pub struct TorchLoad<'a> {
    /// The GRU's key prefix (`encoder.`) in a state_dict of several modules; `None`: the
    /// file's only GRU.
    pub prefix: Option<&'a str>,
    /// A trainable load: every weight becomes a `Var` of this map, named
    /// `{prefix}l{k}[_reverse].{kernel,recurrent_kernel,bias}` (Keras' layout; write it back
    /// for PyTorch with [`crate::io::export::save_torch_stack`]).
    pub vars: Option<&'a candle_nn::VarMap>,
}

impl<'a> TorchLoad<'a> {
    /// The GRU of `prefix`, not trainable.
    pub fn prefixed(prefix: &'a str) -> Self {
        TorchLoad {
            prefix: Some(prefix),
            vars: None,
        }
    }
}

impl std::fmt::Debug for TorchLoad<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchLoad")
            .field("prefix", &self.prefix)
            .field("trainable", &self.vars.is_some())
            .finish()
    }
}

/// A PyTorch `nn.GRU` running on Keras-exact layers.
#[derive(Debug)]
pub struct TorchGru {
    stack: GruStack,
    /// `num_layers`.
    pub num_layers: usize,
    /// `bidirectional`.
    pub bidirectional: bool,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `input_size`.
    pub input_size: usize,
    /// `batch_first`: inputs and outputs are (batch, T, features); `false` (PyTorch's
    /// default) takes and returns (T, batch, features). A state_dict does not record it:
    /// set it as the module was built. `true` after loading.
    pub batch_first: bool,
}

impl TorchGru {
    /// Loads a state_dict saved with safetensors (keys `weight_ih_l{k}`, `weight_hh_l{k}`,
    /// `bias_ih_l{k}`, `bias_hh_l{k}`, with `_reverse` for the backward direction; a common
    /// prefix such as `gru.` is allowed).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<TorchGru> {
        Self::load_with(path, dtype, device, TorchLoad::default())
    }

    /// Loads as `opts` says: one GRU of several by its prefix, and for training, every
    /// weight a `Var` (gradients reach them through every call).
    pub fn load_with(
        path: &Path,
        dtype: DType,
        device: &Device,
        opts: TorchLoad,
    ) -> Result<TorchGru> {
        let source = path.display().to_string();
        let tensors = read(path)?;
        Self::build(StateDict::new(&source, &tensors, opts, dtype, device)?)
    }

    /// Loads the GRU whose keys start with `prefix` (`encoder.`, `model.rnn.`) from a
    /// state_dict holding several modules: a whole model's, with an encoder and a decoder
    /// GRU ([`TorchGru::prefixes`] lists them).
    pub fn load_prefix(
        path: &Path,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<TorchGru> {
        Self::load_with(path, dtype, device, TorchLoad::prefixed(prefix))
    }

    /// The prefixes of the `nn.GRU`s in a safetensors state_dict, sorted.
    pub fn prefixes(path: &Path) -> Result<Vec<String>> {
        Ok(gru_prefixes(&read(path)?))
    }

    /// Builds from state_dict tensors already in memory (the file's only GRU). `source`
    /// names them in errors.
    pub fn from_tensors(
        source: &str,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<TorchGru> {
        Self::build(StateDict::new(
            source,
            tensors,
            TorchLoad::default(),
            dtype,
            device,
        )?)
    }

    /// Builds the GRU whose keys start with `prefix` from state_dict tensors in memory.
    pub fn from_tensors_prefix(
        source: &str,
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<TorchGru> {
        let opts = TorchLoad::prefixed(prefix);
        Self::build(StateDict::new(source, tensors, opts, dtype, device)?)
    }

    fn build(sd: StateDict) -> Result<TorchGru> {
        let num_layers = (0..)
            .take_while(|l| sd.get(&format!("weight_ih_l{l}")).is_some())
            .count();
        let bidirectional = sd.get("weight_ih_l0_reverse").is_some();
        let input_size = sd.need("weight_ih_l0")?.dims().get(1).copied().unwrap_or(0);
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let in_dim = if l == 0 {
                input_size
            } else {
                sd.hidden * if bidirectional { 2 } else { 1 }
            };
            let fw = sd.direction(&format!("l{l}"), in_dim, false)?;
            let layer = match bidirectional {
                true => {
                    let bw = sd.direction(&format!("l{l}_reverse"), in_dim, true)?;
                    StackLayer::Bidirectional(Box::new(Bidirectional::from_layers(
                        fw,
                        bw,
                        MergeMode::Concat,
                    )?))
                }
                false => StackLayer::Gru(Box::new(fw)),
            };
            layers.push(layer);
        }
        Ok(TorchGru {
            stack: GruStack::new(layers)?,
            num_layers,
            bidirectional,
            hidden_size: sd.hidden,
            input_size,
            batch_first: true,
        })
    }

    /// The layers, as a Keras-style stack.
    pub fn stack(&self) -> &GruStack {
        &self.stack
    }

    /// `nn.GRU(x, h0)`: `x` (batch, T, input_size), or (T, batch, input_size) without
    /// `batch_first`; `h0` (num_layers * directions, batch, hidden) or zeros. Returns
    /// `(output, h_n)`: output (batch, T, directions * hidden) (time first without
    /// `batch_first`), h_n (num_layers * directions, batch, hidden).
    pub fn forward(&self, x: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.run(x, None, h0)
    }

    /// `nn.GRU` over a padded batch packed by its lengths (`pack_padded_sequence(x,
    /// lengths, enforce_sorted=False)`, then `pad_packed_sequence(output, total_length=T)`):
    /// each sequence runs over its first `lengths[i]` steps only (the backward direction
    /// from its last real step), the output is zero after them, and h_n holds each
    /// sequence's state after its last real step. Every length must be in `1..=T`.
    pub fn forward_packed(
        &self,
        x: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = match self.batch_first {
            true => (x.dim(0)?, x.dim(1)?),
            false => (x.dim(1)?, x.dim(0)?),
        };
        if lengths.len() != b || lengths.iter().any(|&n| n == 0 || n > t) {
            return Err(crate::Error::Gru(gru_core::GruError::Shape {
                what: "lengths".into(),
                expected: format!("{b} lengths, each in 1..={t}"),
                got: format!("{lengths:?}"),
            }));
        }
        let keep: Vec<u8> = lengths
            .iter()
            .flat_map(|&n| (0..t).map(move |k| u8::from(k < n)))
            .collect();
        let mask = Tensor::from_vec(keep, (b, t), x.device())?;
        self.run(x, Some(&mask), h0)
    }

    fn run(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        h0: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let x = match self.batch_first {
            true => x.clone(),
            false => x.transpose(0, 1)?.contiguous()?,
        };
        let h0: Option<Vec<Tensor>> = match h0 {
            Some(h) => {
                let n = self.num_layers * if self.bidirectional { 2 } else { 1 };
                let b = x.dims().first().copied().unwrap_or(0);
                if h.dims() != [n, b, self.hidden_size] {
                    return Err(crate::Error::Gru(gru_core::GruError::Shape {
                        what: "h0".into(),
                        expected: format!(
                            "(num_layers * directions, batch, hidden) = [{n}, {b}, {}]",
                            self.hidden_size
                        ),
                        got: format!("{:?}", h.dims()),
                    }));
                }
                Some(
                    (0..n)
                        .map(|i| h.get(i))
                        .collect::<candle_core::Result<_>>()?,
                )
            }
            None => None,
        };
        let out = self.stack.call(&x, mask, h0.as_deref(), false)?;
        let h_n = Tensor::stack(&out.states, 0)?;
        let output = match self.batch_first {
            true => out.output,
            false => out.output.transpose(0, 1)?.contiguous()?,
        };
        Ok((output, h_n))
    }
}

/// The tensors of a safetensors file.
pub(super) fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let source = path.display().to_string();
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| file_error(&source, FileProblem::Unreadable(e.to_string())))
}
