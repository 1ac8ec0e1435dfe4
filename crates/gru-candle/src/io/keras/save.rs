//! Writing a loaded (and possibly trained) model back in Keras 3's formats: the
//! `.weights.h5` file `model.save_weights` writes (each variable a dataset at its
//! object-tree path, `layers/gru/cell/vars/0`, ...) and the `.keras` archive `model.save`
//! writes (`config.json`, `metadata.json`, `model.weights.h5`), written with `hdf5-pure`
//! (pure Rust, no libhdf5).

use super::KerasModel;
use crate::error::{file_error, FileProblem, Result};
use candle_core::{DType, Tensor};
use hdf5_pure::{DatasetBuilder, FileBuilder, GroupBuilder};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The Keras release whose file layout is written.
pub(super) const KERAS_VERSION: &str = "3.15.1";

/// One HDF5 group of the file being written.
#[derive(Default)]
struct Node {
    groups: BTreeMap<String, Node>,
    datasets: Vec<(String, Tensor)>,
}

impl Node {
    fn insert(&mut self, path: &str, t: &Tensor) {
        match path.split_once('/') {
            Some((group, rest)) => self
                .groups
                .entry(group.to_string())
                .or_default()
                .insert(rest, t),
            None => self.datasets.push((path.to_string(), t.clone())),
        }
    }
}

/// Adds one variable's values (float64 stays float64, int64 (a Normalization's count)
/// stays int64, every other type is written as float32, Keras' variable dtype).
fn dataset(ds: &mut DatasetBuilder, t: &Tensor) -> Result<()> {
    let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    let flat = t.flatten_all()?;
    match t.dtype() {
        DType::F64 => ds.with_f64_data(&flat.to_vec1::<f64>()?),
        DType::I64 => ds.with_i64_data(&flat.to_vec1::<i64>()?),
        _ => ds.with_f32_data(&flat.to_dtype(DType::F32)?.to_vec1::<f32>()?),
    };
    ds.with_shape(&shape);
    Ok(())
}

fn fill(g: &mut GroupBuilder, node: &Node) -> Result<()> {
    for (name, t) in &node.datasets {
        dataset(g.create_dataset(name), t)?;
    }
    for (name, child) in &node.groups {
        let mut c = g.create_group(name);
        fill(&mut c, child)?;
        g.add_group(c.finish());
    }
    Ok(())
}

/// The bytes of a Keras 3 `.weights.h5` file holding `variables` at their object-tree paths.
pub(super) fn weights_h5_bytes(variables: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut root = Node::default();
    for (path, t) in variables {
        root.insert(path, t);
    }
    let mut file = FileBuilder::new();
    for (name, t) in &root.datasets {
        dataset(file.create_dataset(name), t)?;
    }
    for (name, child) in &root.groups {
        let mut g = file.create_group(name);
        fill(&mut g, child)?;
        file.add_group(g.finish());
    }
    file.finish().map_err(|e| {
        let what = format!("HDF5 encoding: {e}");
        file_error("model.weights.h5", FileProblem::Unwritable(what))
    })
}

impl KerasModel {
    /// Every variable of the model by its Keras 3 object-tree path (`layers/gru/cell/vars/0`
    /// is the first GRU's kernel), the tensors the layers compute with: after training a
    /// model from [`KerasModel::load_trainable`], its trained values.
    pub fn variables(&self) -> &[(String, Tensor)] {
        &self.variables
    }

    /// The model's config in Keras 3's form (a Keras 2 config as this crate reads it).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The bytes of the `.weights.h5` file Keras 3's `model.save_weights` writes for this
    /// model, with the variables' current values.
    pub fn weights_h5_bytes(&self) -> Result<Vec<u8>> {
        weights_h5_bytes(&self.variables)
    }

    /// Writes the variables' current values as Keras 3's `model.save_weights("m.weights.h5")`
    /// does: Keras' `model.load_weights` reads it into the same architecture (any Keras 3
    /// backend), and so does [`KerasModel::load_weights_h5`].
    pub fn save_weights_h5(&self, path: &Path) -> Result<()> {
        let bytes = self.weights_h5_bytes()?;
        std::fs::write(path, bytes).map_err(|e| unwritable(path, e))
    }

    /// Writes a `.keras` archive as Keras 3's `model.save("m.keras")` does: the config
    /// ([`KerasModel::config`], with the `module` entries Keras 3 resolves classes by),
    /// `metadata.json` and the variables' current values. A model read from a Keras 2 file
    /// is written in Keras 3's form, which Keras 3's `load_model` reads; it is then a Keras 3
    /// model: merge layers over masked branches follow Keras 3's mask rule ([`MaskRule`]).
    ///
    /// [`MaskRule`]: super::MaskRule
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = self.weights_h5_bytes()?;
        let unwritable_as =
            |why: String| file_error(path.display().to_string(), FileProblem::Unwritable(why));
        let archive = super::keras2::archive_form(&self.config).map_err(unwritable_as)?;
        let config = serde_json::to_vec(&archive).map_err(|e| unwritable_as(e.to_string()))?;
        let metadata = serde_json::json!({ "keras_version": KERAS_VERSION });
        let file = std::fs::File::create(path).map_err(|e| unwritable(path, e))?;
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let members: [(&str, &[u8]); 3] = [
            (
                "metadata.json",
                &serde_json::to_vec(&metadata).unwrap_or_default(),
            ),
            ("config.json", &config),
            ("model.weights.h5", &weights),
        ];
        for (name, bytes) in members {
            zip.start_file(name, options)
                .map_err(|e| unwritable(path, e))?;
            zip.write_all(bytes).map_err(|e| unwritable(path, e))?;
        }
        zip.finish().map_err(|e| unwritable(path, e))?;
        Ok(())
    }
}

fn unwritable(path: &Path, e: impl std::fmt::Display) -> crate::Error {
    file_error(
        path.display().to_string(),
        FileProblem::Unwritable(e.to_string()),
    )
}
