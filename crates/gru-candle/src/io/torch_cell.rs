//! PyTorch `nn.GRUCell` state_dicts (safetensors) as Keras-exact [`GruCell`]s, and back.
//!
//! `nn.GRUCell` is Keras' `GRUCell` with `reset_after=True` (tanh, sigmoid): its keys are
//! `weight_ih` (3h, input), `weight_hh` (3h, h), `bias_ih`, `bias_hh` (3h), gate rows r, z,
//! n, which gru-core's `layout` reorders to Keras' z, r, h and transposes. A decoder's cell
//! inside a model is found by its prefix (`decoder.cell.`).

use super::torch::{read, TorchLoad};
use super::{check_shape, register_var, tensor_from};
use crate::cell::GruCell;
use crate::error::{file_error, FileProblem, Result};
use candle_core::{DType, Device, Tensor};
use gru_core::layout::{KerasWeights, TorchWeights};
use gru_core::{Activation, GruCellConfig, GruError};
use std::collections::HashMap;
use std::path::Path;

/// The prefixes of the `nn.GRUCell`-like entries of a state_dict: the keys that end in
/// `weight_ih` (not `weight_ih_l0`, an `nn.GRU`'s), without that ending, sorted.
pub fn cell_prefixes(tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let mut p: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix("weight_ih"))
        .map(str::to_string)
        .collect();
    p.sort();
    p
}

impl GruCell {
    /// Loads an `nn.GRUCell` saved with safetensors: the file's only cell, or the one of
    /// `opts.prefix`; with `opts.vars`, every weight a `Var` of that map (named
    /// `{prefix}kernel`, `recurrent_kernel`, `bias`: Keras' layout).
    pub fn load_torch(
        path: &Path,
        dtype: DType,
        device: &Device,
        opts: TorchLoad,
    ) -> Result<GruCell> {
        let tensors = read(path)?;
        Self::from_torch_tensors(&path.display().to_string(), &tensors, dtype, device, opts)
    }

    /// [`GruCell::load_torch`] from state_dict tensors in memory; `source` names them in
    /// errors.
    pub fn from_torch_tensors(
        source: &str,
        tensors: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
        opts: TorchLoad,
    ) -> Result<GruCell> {
        let prefix = pick_prefix(source, tensors, opts.prefix)?;
        let get = |name: &str| {
            let key = format!("{prefix}{name}");
            let missing = || file_error(source, FileProblem::Missing(key.clone()));
            tensors.get(&key).ok_or_else(missing).map(|t| (key, t))
        };
        let (ih_key, ih) = get("weight_ih")?;
        let (hh_key, hh) = get("weight_hh")?;
        let (rows, input) = match ih.dims() {
            [r, i] => (*r, *i),
            other => return Err(shape(source, &ih_key, vec![0, 0], other)),
        };
        let h = rows / 3;
        if rows % 3 != 0 || h == 0 || input == 0 || hh.dims() != [rows, h] {
            let what = format!(
                "{prefix}: weight_ih {:?} and weight_hh {:?} are not an nn.GRUCell's \
                 ((3h, input) and (3h, h); an LSTMCell has 4h rows, an RNNCell h)",
                ih.dims(),
                hh.dims()
            );
            return Err(file_error(source, FileProblem::Unsupported(what)));
        }
        let host = |key: &str, t: &Tensor, want: &[usize]| -> Result<Vec<f64>> {
            check_shape(source, key, t.dims(), want)?;
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        let bias = |name: &str| -> Result<Option<Vec<f64>>> {
            match tensors.get(&format!("{prefix}{name}")) {
                Some(t) => host(&format!("{prefix}{name}"), t, &[rows]).map(Some),
                None => Ok(None),
            }
        };
        let (bias_ih, bias_hh) = (bias("bias_ih")?, bias("bias_hh")?);
        if bias_ih.is_some() != bias_hh.is_some() {
            let what = format!("{prefix}: one of bias_ih and bias_hh without the other");
            return Err(file_error(source, FileProblem::Unsupported(what)));
        }
        let w = TorchWeights {
            weight_ih: host(&ih_key, ih, &[rows, input])?,
            weight_hh: host(&hh_key, hh, &[rows, h])?,
            bias_ih,
            bias_hh,
        }
        .to_keras(input, h)?;
        let mut config = GruCellConfig::new(h);
        config.use_bias = w.bias.is_some();
        let t = |name: &str, v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            let t = tensor_from(source, name, v, shape, dtype, device)?;
            match opts.vars {
                Some(vars) => register_var(vars, &format!("{prefix}{name}"), t),
                None => Ok(t),
            }
        };
        let kernel = t("kernel", w.kernel, &[input, 3 * h])?;
        let recurrent = t("recurrent_kernel", w.recurrent_kernel, &[h, 3 * h])?;
        let bias = w.bias.map(|b| t("bias", b, &[2, 3 * h])).transpose()?;
        GruCell::from_weights(config, kernel, recurrent, bias)
    }

    /// Writes the cell as an `nn.GRUCell` state_dict (safetensors; keys `{prefix}weight_ih`,
    /// `weight_hh`, `bias_ih`, `bias_hh`), which `nn.GRUCell(...).load_state_dict` takes.
    /// PyTorch's cell is one form of Keras': `reset_after`, tanh and sigmoid; another form
    /// is an `InvalidConfig` error naming the setting.
    pub fn save_torch(&self, prefix: &str, path: &Path) -> Result<()> {
        let c = self.config();
        let checks = [
            ("reset_after", c.reset_after, "true (PyTorch's form)"),
            ("activation", c.activation == Activation::Tanh, "tanh"),
            (
                "recurrent_activation",
                c.recurrent_activation == Activation::Sigmoid,
                "sigmoid",
            ),
        ];
        if let Some((key, _, expected)) = checks.iter().find(|c| !c.1) {
            return Err(crate::Error::Gru(GruError::InvalidConfig {
                key: key.to_string(),
                expected: format!("{expected} for an nn.GRUCell"),
                got: c.to_keras_json()[*key].to_string(),
            }));
        }
        let values = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
        };
        let (input, u) = (self.input_dim(), c.units);
        let w = KerasWeights {
            kernel: values(self.kernel())?,
            recurrent_kernel: values(self.recurrent_kernel())?,
            bias: self.bias().map(values).transpose()?,
            input_dim: input,
            units: u,
        }
        .to_torch()?;
        let dtype = self.dtype();
        let tensor = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
        };
        let mut map = HashMap::new();
        map.insert(
            format!("{prefix}weight_ih"),
            tensor(w.weight_ih, &[3 * u, input])?,
        );
        map.insert(
            format!("{prefix}weight_hh"),
            tensor(w.weight_hh, &[3 * u, u])?,
        );
        if let (Some(bi), Some(bh)) = (w.bias_ih, w.bias_hh) {
            map.insert(format!("{prefix}bias_ih"), tensor(bi, &[3 * u])?);
            map.insert(format!("{prefix}bias_hh"), tensor(bh, &[3 * u])?);
        }
        candle_core::safetensors::save(&map, path).map_err(|e| {
            let problem = FileProblem::Unwritable(e.to_string());
            file_error(path.display().to_string(), problem)
        })
    }
}

/// The cell's prefix: the one asked for (it must be there), or the file's only one.
fn pick_prefix(
    source: &str,
    tensors: &HashMap<String, Tensor>,
    asked: Option<&str>,
) -> Result<String> {
    let found = cell_prefixes(tensors);
    match (asked, found.as_slice()) {
        (Some(p), _) if found.iter().any(|q| q == p) => Ok(p.to_string()),
        (Some(p), _) => {
            let what = format!("{p}weight_ih (the cells here: {found:?})");
            Err(file_error(source, FileProblem::Missing(what)))
        }
        (None, [p]) => Ok(p.clone()),
        (None, []) => Err(file_error(source, FileProblem::Missing("weight_ih".into()))),
        (None, many) => {
            let what = format!(
                "several cells in one file (prefixes {many:?}): load one with TorchLoad's prefix"
            );
            Err(file_error(source, FileProblem::Unsupported(what)))
        }
    }
}

fn shape(source: &str, name: &str, expected: Vec<usize>, got: &[usize]) -> crate::Error {
    let problem = FileProblem::Shape {
        name: name.to_string(),
        expected,
        got: got.to_vec(),
    };
    file_error(source, problem)
}
