//! Variables read from a Keras HDF5 weights file by their object-tree paths (Keras 3), or
//! through a legacy file's `layer_names` / `weight_names` lists.

use super::legacy::LegacyIndex;
use crate::error::{file_error, FileProblem, Result};
use crate::io::check_shape;
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor};
use gru_core::GruConfig;
use hdf5_reader::Hdf5File;
use std::cell::RefCell;
use std::collections::HashSet;

/// Reads variables from an HDF5 weights file.
pub(super) struct Weights {
    pub(super) file: Hdf5File,
    pub(super) source: String,
    /// The most bytes one variable's values may take (as f64).
    pub(super) max_bytes: u64,
    /// A trainable load: every variable becomes a `Var` of this map, named by its path.
    pub(super) vars: Option<candle_nn::VarMap>,
    /// A legacy file's variable lists (`None`: Keras 3's object tree).
    pub(super) legacy: Option<LegacyIndex>,
    /// The datasets read so far (a legacy file must have every variable read).
    pub(super) used: RefCell<HashSet<String>>,
    /// A legacy file: each layer's Keras 3 object-tree group and its name in the file.
    aliases: RefCell<Vec<(String, String)>>,
    /// Every variable read, by its Keras 3 object-tree path, in reading order.
    pub(super) read: RefCell<Vec<(String, Tensor)>>,
    /// The Keras release that wrote the file (a legacy file's `keras_version` attribute, a
    /// `.keras` archive's `metadata.json`).
    pub(super) keras_version: Option<String>,
}

impl Weights {
    /// Variables of `file`, in the layout the file has (legacy or Keras 3).
    pub(super) fn new(
        file: Hdf5File,
        source: String,
        max_bytes: u64,
        vars: Option<candle_nn::VarMap>,
    ) -> Result<Weights> {
        let legacy = LegacyIndex::read(&file, &source)?;
        let keras_version = super::legacy::keras_version(&file);
        Ok(Weights {
            keras_version,
            file,
            source,
            max_bytes,
            vars,
            legacy,
            used: RefCell::new(HashSet::new()),
            aliases: RefCell::new(Vec::new()),
            read: RefCell::new(Vec::new()),
        })
    }

    /// A legacy file: the variables of the layer at object-tree `group` are those the file
    /// lists for the layer named `name`.
    pub(super) fn alias(&self, group: &str, name: &str) {
        self.aliases
            .borrow_mut()
            .push((group.to_string(), name.to_string()));
    }

    /// The dataset that holds the variable at object-tree `path`.
    fn locate(&self, path: &str) -> Result<String> {
        let Some(legacy) = &self.legacy else {
            return Ok(path.to_string());
        };
        let aliases = self.aliases.borrow();
        // The innermost group: a nested model's layers sit inside the model's group.
        let found = aliases
            .iter()
            .filter_map(|(group, name)| {
                let rest = path.strip_prefix(group.as_str())?.strip_prefix('/')?;
                Some((name, rest))
            })
            .min_by_key(|(_, rest)| rest.len());
        match found {
            Some((name, rest)) => legacy.resolve(&self.source, name, rest),
            None => Err(file_error(
                &self.source,
                FileProblem::Missing(format!("variable {path}")),
            )),
        }
    }

    /// Whether the file is in a legacy layout (layers found by name, not object-tree path).
    pub(super) fn is_legacy(&self) -> bool {
        self.legacy.is_some()
    }

    /// A legacy file: every variable of every layer it lists was read (a variable the
    /// config has no place for, such as a bias of a layer configured without one, is an
    /// error, as in Keras' legacy loader).
    pub(super) fn check_all_read(&self) -> Result<()> {
        let Some(legacy) = &self.legacy else {
            return Ok(());
        };
        let used = self.used.borrow();
        match legacy.unread(&used) {
            None => Ok(()),
            Some(path) => {
                let what = format!("variable {path}, which the model config has no place for");
                Err(file_error(&self.source, FileProblem::Unsupported(what)))
            }
        }
    }

    fn dataset(&self, path: &str) -> Result<hdf5_reader::Dataset> {
        self.file.dataset(path).map_err(|_| {
            file_error(
                &self.source,
                FileProblem::Missing(format!("variable {path}")),
            )
        })
    }

    /// The dataset holding the variable at object-tree `path`, and its name, once its shape
    /// is `expected`.
    fn checked(&self, path: &str, expected: &[usize]) -> Result<(String, hdf5_reader::Dataset)> {
        let dataset = self.locate(path)?;
        let ds = self.dataset(&dataset)?;
        let shape: Vec<usize> = ds
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        check_shape(&self.source, &dataset, &shape, expected)?;
        Ok((dataset, ds))
    }

    /// The values of a dataset whose shape was checked (so the read is bounded).
    fn values(&self, path: &str, ds: &hdf5_reader::Dataset) -> Result<Vec<f64>> {
        let bad = |e: hdf5_reader::error::Error| {
            file_error(
                &self.source,
                FileProblem::Unreadable(format!("{path}: {e}")),
            )
        };
        Ok(match ds.dtype() {
            hdf5_reader::Datatype::FloatingPoint { size: 4, .. } => ds
                .read_array::<f32>()
                .map_err(bad)?
                .iter()
                .map(|&v| v as f64)
                .collect(),
            hdf5_reader::Datatype::FloatingPoint { size: 8, .. } => ds
                .read_array::<f64>()
                .map_err(bad)?
                .iter()
                .copied()
                .collect(),
            other => {
                let what = format!("{path}: datatype {other:?} (float32 or float64 expected)");
                return Err(file_error(&self.source, FileProblem::Unsupported(what)));
            }
        })
    }

    /// The variable at `path`, which must have shape `expected`: the shape is checked, and
    /// its size against the limit, before any value is read.
    pub(super) fn tensor(
        &self,
        path: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let tree_path = path;
        let (dataset, ds) = self.checked(path, expected)?;
        let path = dataset.as_str();
        let bytes = expected
            .iter()
            .try_fold(8u64, |p, &d| p.checked_mul(d as u64));
        if bytes.is_none_or(|b| b > self.max_bytes) {
            return Err(crate::Error::Gru(gru_core::GruError::TooLarge {
                what: format!("{}: variable {path} of shape {expected:?}", self.source),
                limit: format!("{} bytes (Limits::max_weight_bytes)", self.max_bytes),
                needed: bytes.map_or("more than 2^64 bytes".into(), |b| format!("{b} bytes")),
            }));
        }
        let values = self.values(path, &ds)?;
        self.used.borrow_mut().insert(path.to_string());
        let t = crate::io::tensor_from(&self.source, path, values, expected, dtype, device)?;
        let t = match &self.vars {
            Some(vars) => crate::io::register_var(vars, path, t)?,
            None => t,
        };
        self.read
            .borrow_mut()
            .push((tree_path.to_string(), t.clone()));
        Ok(t)
    }

    /// The integer variable at `path` (a Normalization's `count`), which must have shape
    /// `expected`: an i64 tensor, kept to be written back as it was read.
    pub(super) fn int_tensor(
        &self,
        path: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Tensor> {
        let tree_path = path;
        let (dataset, ds) = self.checked(path, expected)?;
        let path = dataset.as_str();
        let bad = |e: hdf5_reader::error::Error| {
            file_error(
                &self.source,
                FileProblem::Unreadable(format!("{path}: {e}")),
            )
        };
        let values: Vec<i64> = match ds.dtype() {
            hdf5_reader::Datatype::FixedPoint {
                size: 8,
                signed: true,
                ..
            } => ds
                .read_array::<i64>()
                .map_err(bad)?
                .iter()
                .copied()
                .collect(),
            hdf5_reader::Datatype::FixedPoint {
                size: 4,
                signed: true,
                ..
            } => ds
                .read_array::<i32>()
                .map_err(bad)?
                .iter()
                .map(|&v| i64::from(v))
                .collect(),
            other => {
                let what = format!("{path}: datatype {other:?} (int64 or int32 expected)");
                return Err(file_error(&self.source, FileProblem::Unsupported(what)));
            }
        };
        self.used.borrow_mut().insert(path.to_string());
        let t = Tensor::from_vec(values, expected, device)?;
        self.read
            .borrow_mut()
            .push((tree_path.to_string(), t.clone()));
        Ok(t)
    }

    /// The GRU of the layer at object-tree `group` (its cell's variables under
    /// `{group}/cell/vars`).
    pub(super) fn gru(
        &self,
        group: &str,
        config: GruConfig,
        input_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Gru> {
        self.gru_vars(
            &format!("{group}/cell/vars"),
            config,
            input_dim,
            dtype,
            device,
        )
    }

    /// A GRU whose kernel, recurrent kernel and bias are `{vars}/0`, `/1`, `/2`.
    pub(super) fn gru_vars(
        &self,
        vars: &str,
        config: GruConfig,
        input_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Gru> {
        let u = config.units;
        let kernel = self.tensor(&format!("{vars}/0"), &[input_dim, 3 * u], dtype, device)?;
        let recurrent = self.tensor(&format!("{vars}/1"), &[u, 3 * u], dtype, device)?;
        let bias = match config.bias_shape() {
            Some(shape) => Some(self.tensor(&format!("{vars}/2"), &shape, dtype, device)?),
            None => None,
        };
        Gru::from_weights(config, kernel, recurrent, bias)
    }
}
