//! Keras model files: Keras 3 `.keras` archives (zip: `config.json` + `model.weights.h5`)
//! and `.weights.h5` files, and the legacy HDF5 files of Keras 2 (and of Keras 3's legacy
//! writer): whole `.h5` models and weights-only `.h5` files (see `legacy.rs`); read with a
//! pure-Rust HDF5 reader (no system library).
//!
//! Keras 3 stores variables by position in the object tree: the k-th layer of a class is
//! `layers/{snake_case(class)}` then `_1`, `_2`... in creation order, a GRU's variables are
//! `cell/vars/0..3` (kernel, recurrent_kernel, bias), a Dense's `vars/0..2`, a
//! Bidirectional's sit under `forward_layer/` and `backward_layer/`.
//!
//! Chains of InputLayer, Embedding, Masking, Dropout, SpatialDropout1D, GRU,
//! Bidirectional(GRU), LayerNormalization, BatchNormalization, Normalization, Rescaling,
//! Identity, GlobalAveragePooling1D,
//! GlobalMaxPooling1D,
//! Conv1D, MaxPooling1D, AveragePooling1D, Conv2D, MaxPooling2D, AveragePooling2D, Dense,
//! TimeDistributed(Dense), Activation, the
//! activation layers (LeakyReLU, ReLU, ELU, PReLU, Softmax), reshaping (Flatten, RepeatVector,
//! Reshape, Permute, ZeroPadding1D, Cropping1D, UpSampling1D), noise (GaussianNoise,
//! GaussianDropout, AlphaDropout) and ActivityRegularization run end to end; functional
//! models run as the graph their config records: branches joined by merge layers (Add,
//! Subtract, Multiply, Average, Maximum, Minimum, Concatenate), a GRU's state as a tensor or
//! another GRU's `initial_state`, several inputs and outputs, attention layers (`Attention`,
//! `AdditiveAttention`, `MultiHeadAttention`), the mask operations Keras 3 records
//! (`NotEqual`, `Any`, `LogicalOr`, ...) that layers' `mask` arguments name, layers called
//! more than once and models nested as layers.

mod attention;
mod batch_norm;
mod build;
mod build_conv2d;
mod build_layers;
mod build_simple;
mod conv;
mod conv2d;
mod conv_op;
mod from_layers;
mod graph;
mod keras2;
mod layers;
mod legacy;
mod mask_ops;
mod merge;
mod mha;
mod noise;
mod order;
mod pool;
mod preprocessing;
mod reshaping;
mod run;
mod run_node;
mod save;
mod seed;
mod stacked;
mod train;
mod walk;
mod weights;

pub use attention::{Attention, Scores};
pub use batch_norm::BatchNorm;
pub use conv::{Conv1D, Padding1D, Pooling1D};
pub use conv2d::{Conv2D, Pooling2D};
pub use from_layers::KerasLayer;
pub use layers::{Dense, Embedding, GlobalPooling1D, LayerActivation, LayerNorm, PRelu};
pub use mask_ops::MaskOp;
pub use merge::{MaskRule, MergeOp};
pub use mha::{MultiHeadAttention, Projection};
pub use noise::{Noise, NoiseKind};
pub use preprocessing::{Normalization, Rescaling};
pub use reshaping::Reshaping;
pub use stacked::StackedGru;
pub use train::{Dropout, ModelCall, ModelOutput, WeightRule};

use crate::bidirectional::Bidirectional;
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use crate::limits::Limits;
use candle_core::{DType, Device};
use candle_nn::VarMap;
use hdf5_reader::Hdf5File;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use weights::Weights;

/// One layer of a loaded model.
#[derive(Debug)]
pub enum ModelLayer {
    /// `InputLayer` (no computation).
    Input,
    /// `Masking(mask_value)`: mask = any feature != mask_value; masked steps are zeroed.
    Masking {
        /// The value that marks padding.
        mask_value: f64,
    },
    /// A GRU.
    Gru(Box<Gru>),
    /// `Bidirectional(GRU)`.
    Bidirectional(Box<Bidirectional>),
    /// `RNN(StackedRNNCells([GRUCell, ...]))`.
    StackedGru(Box<StackedGru>),
    /// `Dense`.
    Dense(Dense),
    /// `Embedding`: token ids in, vectors out.
    Embedding(Embedding),
    /// `Dropout`, `SpatialDropout1D`: the identity outside training.
    Dropout(Box<Dropout>),
    /// `Activation`.
    Activation(LayerActivation),
    /// `LayerNormalization` over the last axis.
    LayerNorm(LayerNorm),
    /// `BatchNormalization` over the last axis.
    BatchNorm(BatchNorm),
    /// `GlobalAveragePooling1D`, `GlobalMaxPooling1D`.
    GlobalPooling(GlobalPooling1D),
    /// `Conv1D`.
    Conv1D(Conv1D),
    /// `MaxPooling1D`, `AveragePooling1D`.
    Pooling(Pooling1D),
    /// `Conv2D`.
    Conv2D(Conv2D),
    /// `MaxPooling2D`, `AveragePooling2D`.
    Pooling2D(Pooling2D),
    /// `Flatten`, `RepeatVector`, `Reshape`, `Permute`, `ZeroPadding1D`, `Cropping1D`,
    /// `UpSampling1D`.
    Reshaping(Reshaping),
    /// `GaussianNoise`, `GaussianDropout`, `AlphaDropout`: the identity outside training.
    Noise(Box<Noise>),
    /// `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`, `Concatenate`: joins
    /// the branches of a functional model.
    Merge(MergeOp),
    /// A mask computation Keras 3 records in a functional graph (`NotEqual`, `Any`,
    /// `LogicalOr`, ...), whose output a layer's `mask` argument names.
    MaskOp(MaskOp),
    /// `Attention`, `AdditiveAttention`: `[query, value(, key)]` in.
    Attention(Box<Attention>),
    /// `MultiHeadAttention`: `query, value(, key)` in.
    MultiHeadAttention(Box<MultiHeadAttention>),
    /// `PReLU`, with its learned slopes.
    PRelu(PRelu),
    /// `Normalization` (preprocessing): adapted or given mean and variance.
    Normalization(Normalization),
    /// `Rescaling`: `x * scale + offset`.
    Rescaling(Rescaling),
    /// `TimeDistributed` over a GRU, Bidirectional, RNN or model: the layer runs on every
    /// step of the second axis (`TimeDistributed(Dense)` is a `Dense`).
    TimeDistributed(Box<ModelLayer>),
    /// A model used as a layer of another (`Sequential` or functional): its inputs' masks
    /// reach its layers, and its outputs carry the masks its layers leave, as in Keras.
    Model(Box<KerasModel>),
}

impl ModelLayer {
    /// The dtype the layer computes in; `None` for layers that keep their input's dtype
    /// (`Input`, `Masking`, `Dropout`, `Activation`, normalizations, pooling, reshaping,
    /// noise).
    pub fn compute_dtype(&self) -> Option<DType> {
        match self {
            ModelLayer::Input
            | ModelLayer::Masking { .. }
            | ModelLayer::Dropout(_)
            | ModelLayer::Activation(_)
            | ModelLayer::LayerNorm(_)
            | ModelLayer::BatchNorm(_)
            | ModelLayer::GlobalPooling(_)
            | ModelLayer::Pooling(_)
            | ModelLayer::Pooling2D(_)
            | ModelLayer::Reshaping(_)
            | ModelLayer::Noise(_)
            | ModelLayer::Merge(_)
            | ModelLayer::MaskOp(_)
            | ModelLayer::PRelu(_)
            | ModelLayer::Model(_) => None,
            ModelLayer::Conv1D(c) => Some(c.compute_dtype),
            ModelLayer::Conv2D(c) => Some(c.compute_dtype),
            ModelLayer::Embedding(e) => Some(e.compute_dtype),
            ModelLayer::Gru(g) => Some(g.compute_dtype()),
            ModelLayer::Bidirectional(b) => Some(b.forward_layer().compute_dtype()),
            ModelLayer::StackedGru(s) => s.grus().first().map(|g| g.compute_dtype()),
            ModelLayer::TimeDistributed(inner) => inner.compute_dtype(),
            ModelLayer::Dense(d) => Some(d.compute_dtype),
            ModelLayer::Attention(a) => Some(a.compute_dtype),
            ModelLayer::MultiHeadAttention(a) => Some(a.compute_dtype),
            ModelLayer::Normalization(n) => Some(n.compute_dtype),
            ModelLayer::Rescaling(r) => Some(r.compute_dtype),
        }
    }
}

/// A Keras model loaded from a model file: a chain of layers, or a functional graph whose
/// branches merge.
#[derive(Debug)]
pub struct KerasModel {
    /// The model's name.
    pub name: String,
    /// `(layer name, layer)` in order.
    pub layers: Vec<(String, ModelLayer)>,
    /// The activity regularizers of the layers other than GRUs (a GRU computes its own), by
    /// layer name.
    pub(super) activity: Vec<(String, gru_core::Regularizer)>,
    /// Every variable by its Keras 3 object-tree path (`layers/gru/cell/vars/0`, ...): the
    /// tensors the layers hold (a trainable load's `Var`s, so they follow training).
    pub(super) variables: Vec<(String, candle_core::Tensor)>,
    /// The model config, in Keras 3's form (a Keras 2 config as read).
    pub(super) config: Value,
    /// Which outputs each layer takes, and the model's outputs.
    graph: graph::Graph,
}

/// Keras' `to_snake_case` (`keras.src.utils.naming`): drop non-word characters, then
/// `re.sub("(.)([A-Z][a-z]+)", r"\1_\2")`, then `re.sub("([a-z])([A-Z])", r"\1_\2")`,
/// lower-cased (`Conv1D` -> `conv1d`, `GlobalMaxPooling1D` -> `global_max_pooling1d`).
fn snake(class: &str) -> String {
    let c: Vec<char> = class
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // (.)([A-Z][a-z]+): matches are consumed left to right, without overlap.
    let mut words = Vec::with_capacity(c.len() + 4);
    let mut i = 0;
    while i < c.len() {
        let starts_word = |j: usize| {
            c.get(j).is_some_and(char::is_ascii_uppercase)
                && c.get(j + 1).is_some_and(char::is_ascii_lowercase)
        };
        if starts_word(i + 1) {
            let mut end = i + 2;
            while c.get(end).is_some_and(char::is_ascii_lowercase) {
                end += 1;
            }
            words.push(c[i]);
            words.push('_');
            words.extend_from_slice(&c[i + 1..end]);
            i = end;
        } else {
            words.push(c[i]);
            i += 1;
        }
    }
    // ([a-z])([A-Z]).
    let mut out = String::with_capacity(words.len() + 4);
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if words[i].is_ascii_lowercase() && words.get(i + 1).is_some_and(char::is_ascii_uppercase) {
            out.push('_');
            out.push(words[i + 1]);
            i += 2;
        } else {
            i += 1;
        }
    }
    out.to_ascii_lowercase()
}

fn unsupported(source: &str, what: impl Into<String>) -> crate::Error {
    file_error(source, FileProblem::Unsupported(what.into()))
}

fn malformed(source: &str, what: impl Into<String>) -> crate::Error {
    file_error(source, FileProblem::Unreadable(what.into()))
}

/// The last dimension of a shape list in a config (`batch_shape`, `build_config.input_shape`).
fn last_dim(v: Option<&Value>) -> Option<usize> {
    v?.as_array()?.last()?.as_u64().map(|d| d as usize)
}

/// The largest `config.json` read from an archive.
const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Reads one archive member, bounded: its declared size must be within `cap`, and it must
/// not inflate past its declared size (a deflate bomb stops there).
fn read_member<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    source: &str,
    name: &str,
    cap: u64,
) -> Result<Vec<u8>> {
    let f = zip.by_name(name).map_err(|_| {
        file_error(
            source,
            FileProblem::Missing(format!("archive member {name}")),
        )
    })?;
    let declared = f.size();
    if declared > cap {
        return Err(crate::Error::Gru(gru_core::GruError::TooLarge {
            what: format!("{source}: archive member {name}"),
            limit: format!("{cap} bytes (Limits::max_member_bytes)"),
            needed: format!("{declared} bytes, as the archive declares"),
        }));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(declared as usize).map_err(|_| {
        malformed(
            source,
            format!("{name}: {declared} bytes cannot be allocated"),
        )
    })?;
    f.take(declared + 1)
        .read_to_end(&mut buf)
        .map_err(|e| malformed(source, format!("{name}: {e}")))?;
    if buf.len() as u64 != declared {
        let what = format!(
            "{name}: inflates to {} bytes, the archive declares {declared}",
            buf.len()
        );
        return Err(malformed(source, what));
    }
    Ok(buf)
}

/// Whether the file starts as an HDF5 file does (a legacy `.h5` model) rather than as a zip
/// archive (`.keras`).
fn is_hdf5(path: &Path) -> Result<bool> {
    let source = path.display().to_string();
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| malformed(&source, e.to_string()))?;
    let n = f
        .read(&mut head)
        .map_err(|e| malformed(&source, e.to_string()))?;
    Ok(head[..n] == *legacy::HDF5_MAGIC)
}

/// Reads a whole HDF5 file whose size is within `cap`.
fn read_hdf5(path: &Path, cap: u64) -> Result<Hdf5File> {
    let source = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|e| malformed(&source, e.to_string()))?
        .len();
    if size > cap {
        return Err(crate::Error::Gru(gru_core::GruError::TooLarge {
            what: source,
            limit: format!("{cap} bytes (Limits::max_member_bytes)"),
            needed: format!("{size} bytes"),
        }));
    }
    let bytes = std::fs::read(path).map_err(|e| malformed(&source, e.to_string()))?;
    Hdf5File::from_vec(bytes).map_err(|e| malformed(&source, e.to_string()))
}

fn open_archive(path: &Path) -> Result<zip::ZipArchive<std::fs::File>> {
    let source = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| malformed(&source, e.to_string()))?;
    zip::ZipArchive::new(file)
        .map_err(|e| malformed(&source, format!("not a .keras zip archive: {e}")))
}

impl KerasModel {
    /// Loads a model file under the default [`Limits`]: a `.keras` archive, or a legacy
    /// `.h5` model (Keras 2's `model.save("m.h5")`, Keras 3's
    /// `keras.saving.save_model(m, "m.h5")`), told apart by their first bytes.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<KerasModel> {
        Self::load_file(path, dtype, device, &Limits::default(), None)
    }

    /// Loads a `.keras` archive or a legacy `.h5` model: each archive member (a legacy file
    /// as a whole) is bounded by its declared size and the limits, each variable's shape
    /// checked before its values are read.
    pub fn load_with_limits(
        path: &Path,
        dtype: DType,
        device: &Device,
        limits: &Limits,
    ) -> Result<KerasModel> {
        Self::load_file(path, dtype, device, limits, None)
    }

    /// Loads a `.keras` archive or a legacy `.h5` model for training: every variable becomes
    /// a `Var` of `varmap`, named by its path in the weights file (`layers/gru/cell/vars/0`,
    /// ...; in a legacy file `model_weights/gru/gru/gru_cell/kernel:0`, ...), so that an
    /// optimizer over `varmap.all_vars()` trains the model (the weights of layers with
    /// `trainable = false` take part as constants). `varmap` must not hold those names yet.
    /// Train with [`KerasModel::call_with`], [`KerasModel::regularization_loss`] and
    /// [`KerasModel::apply_constraints`]; `varmap.save` writes the trained weights.
    pub fn load_trainable(
        path: &Path,
        dtype: DType,
        device: &Device,
        varmap: &VarMap,
    ) -> Result<KerasModel> {
        Self::load_file(path, dtype, device, &Limits::default(), Some(varmap))
    }

    fn load_file(
        path: &Path,
        dtype: DType,
        device: &Device,
        limits: &Limits,
        vars: Option<&VarMap>,
    ) -> Result<KerasModel> {
        let source = path.display().to_string();
        if is_hdf5(path)? {
            let file = read_hdf5(path, limits.max_member_bytes)?;
            let config = legacy::model_config(&file, &source)?;
            let w = Weights::new(file, source, limits.max_weight_bytes, vars.cloned())?;
            if !w.is_legacy() {
                let what = "model_weights/ with a layer_names attribute";
                return Err(file_error(&w.source, FileProblem::Missing(what.into())));
            }
            return walk::build(&config, w, dtype, device);
        }
        let mut zip = open_archive(path)?;
        let config_bytes = read_member(
            &mut zip,
            &source,
            "config.json",
            MAX_CONFIG_BYTES.min(limits.max_member_bytes),
        )?;
        let weights = read_member(
            &mut zip,
            &source,
            "model.weights.h5",
            limits.max_member_bytes,
        )?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| malformed(&source, format!("config.json: {e}")))?;
        let h5_source = format!("{source}:model.weights.h5");
        let file = Hdf5File::from_vec(weights).map_err(|e| malformed(&h5_source, e.to_string()))?;
        let mut w = Weights::new(file, h5_source, limits.max_weight_bytes, vars.cloned())?;
        // metadata.json (optional) records the Keras release that wrote the archive.
        w.keras_version = read_member(&mut zip, &source, "metadata.json", MAX_CONFIG_BYTES)
            .ok()
            .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
            .and_then(|m| m["keras_version"].as_str().map(str::to_string));
        walk::build(&config, w, dtype, device)
    }

    /// Loads a weights file for the model described by `config` (the `config.json` of a
    /// `.keras` archive, `model.to_json()`, or [`KerasModel::model_config`]): Keras 3's
    /// `.weights.h5` (variables by object-tree path) or Keras 2's `save_weights` `.h5`
    /// (layers by name, each one's variables in order), told apart by the file's layout. In
    /// a legacy file every variable must find its place in the config.
    pub fn load_weights_h5(
        config: &Value,
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<KerasModel> {
        Self::load_h5(config, path, dtype, device, None)
    }

    /// [`KerasModel::load_weights_h5`] for training, as [`KerasModel::load_trainable`].
    pub fn load_weights_h5_trainable(
        config: &Value,
        path: &Path,
        dtype: DType,
        device: &Device,
        varmap: &VarMap,
    ) -> Result<KerasModel> {
        Self::load_h5(config, path, dtype, device, Some(varmap))
    }

    fn load_h5(
        config: &Value,
        path: &Path,
        dtype: DType,
        device: &Device,
        vars: Option<&VarMap>,
    ) -> Result<KerasModel> {
        let source = path.display().to_string();
        let limits = Limits::default();
        let file = read_hdf5(path, limits.max_member_bytes)?;
        let w = Weights::new(file, source, limits.max_weight_bytes, vars.cloned())?;
        walk::build(config, w, dtype, device)
    }

    /// Reads `config.json` out of a `.keras` archive.
    pub fn archive_config(path: &Path) -> Result<Value> {
        let source = path.display().to_string();
        let mut zip = open_archive(path)?;
        let buf = read_member(&mut zip, &source, "config.json", MAX_CONFIG_BYTES)?;
        serde_json::from_slice(&buf).map_err(|e| malformed(&source, format!("config.json: {e}")))
    }

    /// The architecture of a model file: `config.json` of a `.keras` archive, or the
    /// `model_config` attribute of a legacy `.h5` model (as written; Keras 2 forms are
    /// read when the model is built).
    pub fn model_config(path: &Path) -> Result<Value> {
        if !is_hdf5(path)? {
            return Self::archive_config(path);
        }
        let file = read_hdf5(path, Limits::default().max_member_bytes)?;
        legacy::model_config(&file, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn keras_snake_case() {
        assert_eq!(snake("GRU"), "gru");
        assert_eq!(snake("Bidirectional"), "bidirectional");
        assert_eq!(snake("InputLayer"), "input_layer");
        assert_eq!(snake("Dense"), "dense");
        assert_eq!(snake("LSTMCell"), "lstm_cell");
        // Keras' own answers (keras.src.utils.naming.to_snake_case).
        for (class, keras) in [
            ("Conv1D", "conv1d"),
            ("GlobalMaxPooling1D", "global_max_pooling1d"),
            ("SpatialDropout1D", "spatial_dropout1d"),
            ("TimeDistributed", "time_distributed"),
            ("LayerNormalization", "layer_normalization"),
            ("ABcDe", "a_bc_de"),
            ("HTTPServer2XYZ", "http_server2xyz"),
            ("A1Bc", "a1_bc"),
            ("aBC", "a_bc"),
            ("AbCdEf", "ab_cd_ef"),
        ] {
            assert_eq!(snake(class), keras, "{class}");
        }
    }
}
