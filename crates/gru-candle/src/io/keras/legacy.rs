//! The legacy HDF5 formats: a whole model saved by Keras 2 (`model.save("m.h5")`, and
//! Keras 3's `keras.saving.save_model(m, "m.h5")`), and Keras 2's weights-only
//! `model.save_weights("w.h5")`.
//!
//! A model file holds the architecture as the root attribute `model_config` and the weights
//! under `model_weights/`; a weights-only file holds them at its root. Either way the
//! weights group lists its layers in the attribute `layer_names`, each layer's group lists
//! its variables in `weight_names` (in the order the layer created them), and a variable is
//! the dataset `{layer}/{weight name}` of the weights group. Layers are matched by name, and
//! each one's variables by position, as Keras' legacy loader does.
//!
//! Keras 2 configs differ from Keras 3's in a few forms, which `keras2.rs` rewrites.

use super::malformed;
use crate::error::Result;
use hdf5_reader::global_heap::GlobalHeapCollection;
use hdf5_reader::group::Group;
use hdf5_reader::messages::datatype::VarLenKind;
use hdf5_reader::{Attribute, Datatype, Hdf5File};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// The first bytes of every HDF5 file.
pub(super) const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// Where a legacy file keeps each layer's variables.
#[derive(Debug)]
pub(super) struct LegacyIndex {
    /// `model_weights/` in a model file, empty in a weights-only file.
    root: String,
    /// Layer name -> the dataset paths of its variables, in order.
    layers: HashMap<String, Vec<String>>,
}

/// The strings of a string attribute: fixed-length, or variable-length (h5py's `str` and
/// object arrays, whose elements live in the file's global heap); an empty attribute of any
/// type (h5py writes an empty list as float64) is no strings.
fn strings(group: &Group, a: &Attribute) -> std::result::Result<Vec<String>, String> {
    if a.num_elements() == 0 {
        return Ok(Vec::new());
    }
    let utf8 = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec()).map_err(|e| e.to_string())
    };
    match &a.datatype {
        Datatype::VarLen {
            kind: VarLenKind::String,
            ..
        } if a.num_elements() == 1 => Ok(vec![utf8(&a.raw_data)?]), // the reader resolves one
        Datatype::VarLen {
            kind: VarLenKind::String,
            ..
        } => heap_strings(group, &a.raw_data, a.num_elements()),
        _ if a.shape.is_empty() => a.read_string().map(|s| vec![s]).map_err(|e| e.to_string()),
        _ => {
            let data = group.file_data().map_err(|e| e.to_string())?;
            a.read_vlen_strings(&data, group.offset_size())
                .map_err(|e| e.to_string())
        }
    }
}

/// `n` variable-length strings whose references (length u32, heap collection address,
/// object index u32) are `refs`.
fn heap_strings(group: &Group, refs: &[u8], n: u64) -> std::result::Result<Vec<String>, String> {
    let offset = usize::from(group.offset_size());
    let size = 8 + offset;
    if offset > 8 || (refs.len() as u64) < n.saturating_mul(size as u64) {
        return Err(format!("{n} string references in {} bytes", refs.len()));
    }
    let mut heaps: HashMap<u64, GlobalHeapCollection> = HashMap::new();
    let mut out = Vec::new();
    for r in refs.chunks_exact(size).take(n as usize) {
        let word = |b: &[u8]| b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
        let (len, addr, index) = (
            word(&r[..4]) as usize,
            word(&r[4..4 + offset]),
            word(&r[4 + offset..]),
        );
        let heap = match heaps.entry(addr) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                GlobalHeapCollection::parse_at_storage(
                    group.storage(),
                    addr,
                    group.offset_size(),
                    group.length_size(),
                )
                .map_err(|e| e.to_string())?,
            ),
        };
        let object = u16::try_from(index)
            .ok()
            .and_then(|i| heap.get_object(i))
            .ok_or_else(|| format!("string object {index} missing at {addr}"))?;
        let bytes = &object.data[..len.min(object.data.len())];
        out.push(String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// One string attribute of a group, if it is there.
fn group_strings(file: &Hdf5File, group: &str, name: &str) -> Option<Vec<String>> {
    let g = match group {
        "" => file.root_group(),
        g => file.group(g),
    };
    let g = g.ok()?;
    let a = g.attribute(name).ok()?;
    strings(&g, &a).ok()
}

impl LegacyIndex {
    /// The index of a legacy file, or `None` when the file has no `layer_names` attribute
    /// at its root or under `model_weights` (a Keras 3 `.weights.h5` file, or no Keras file).
    pub(super) fn read(file: &Hdf5File, source: &str) -> Result<Option<LegacyIndex>> {
        let root = match group_strings(file, "model_weights", "layer_names") {
            Some(_) => "model_weights/",
            None if group_strings(file, "", "layer_names").is_some() => "",
            None => return Ok(None),
        };
        let group = root.trim_end_matches('/');
        let names = group_strings(file, group, "layer_names").unwrap_or_default();
        let mut layers = HashMap::with_capacity(names.len());
        for layer in names {
            let path = format!("{root}{layer}");
            let weights = group_strings(file, &path, "weight_names").ok_or_else(|| {
                malformed(
                    source,
                    format!("{path}: no readable weight_names attribute"),
                )
            })?;
            let paths = weights.iter().map(|w| format!("{path}/{w}")).collect();
            layers.insert(layer, paths);
        }
        Ok(Some(LegacyIndex {
            root: root.to_string(),
            layers,
        }))
    }

    /// The first variable (layers in name order) that is not in `read`.
    pub(super) fn unread(&self, read: &HashSet<String>) -> Option<&str> {
        let mut layers: Vec<_> = self.layers.iter().collect();
        layers.sort();
        layers
            .into_iter()
            .flat_map(|(_, paths)| paths)
            .find(|p| !read.contains(*p))
            .map(String::as_str)
    }

    /// The variables of the layer `layer`: a layer the file lists, `model/inner`, a
    /// layer inside the nested model `model` (whose variables the file lists under the
    /// model, each named `inner/...`, trainable ones first), or `layer|cell`, the
    /// variables of one cell of a stacked RNN (named `.../cell/...`).
    fn weights_of(&self, layer: &str) -> Option<std::borrow::Cow<'_, [String]>> {
        if let Some(w) = self.layers.get(layer) {
            return Some(w.as_slice().into());
        }
        if let Some((rnn, cell)) = layer.split_once('|') {
            let part = format!("/{cell}/");
            let w = self.weights_of(rnn)?;
            let cells: Vec<String> = w.iter().filter(|p| p.contains(&part)).cloned().collect();
            return Some(cells.into());
        }
        let (model, inner) = layer.split_once('/')?;
        let group = format!("{}{model}/{inner}/", self.root);
        let w: Vec<String> = self
            .layers
            .get(model)?
            .iter()
            .filter(|p| p.starts_with(&group))
            .cloned()
            .collect();
        Some(w.into())
    }

    /// The dataset of a variable of the layer named `layer`, at `rest` below the layer's
    /// object-tree group: `vars/k`, `cell/vars/k`, `layer/vars/k` (TimeDistributed) or
    /// `{forward,backward}_layer/cell/vars/k` (Bidirectional, whose backward variables
    /// follow the forward ones).
    pub(super) fn resolve(&self, source: &str, layer: &str, rest: &str) -> Result<String> {
        let missing = |what: String| {
            crate::error::file_error(source, crate::error::FileProblem::Missing(what))
        };
        let path = format!("{layer}/{rest}");
        let weights = self
            .weights_of(layer)
            .ok_or_else(|| missing(format!("layer {layer:?} in {}layer_names", self.root)))?;
        let (sub, k) = rest
            .rsplit_once("vars/")
            .and_then(|(sub, k)| Some((sub, k.parse::<usize>().ok()?)))
            .ok_or_else(|| missing(format!("variable {path}")))?;
        let offset = match sub {
            "backward_layer/cell/" => {
                let forward = weights.iter().filter(|w| w.contains("forward_")).count();
                match forward {
                    0 => weights.len() / 2,
                    n => n,
                }
            }
            _ => 0,
        };
        weights.get(offset + k).cloned().ok_or_else(|| {
            let n = weights.len();
            missing(format!(
                "variable {} of layer {layer:?}, which holds {n} in weight_names",
                offset + k + 1
            ))
        })
    }
}

/// The `keras_version` root attribute a legacy file records.
pub(super) fn keras_version(file: &Hdf5File) -> Option<String> {
    group_strings(file, "", "keras_version")?.into_iter().next()
}

/// The `model_config` root attribute of a legacy model file, parsed.
pub(super) fn model_config(file: &Hdf5File, source: &str) -> Result<Value> {
    let text = group_strings(file, "", "model_config")
        .and_then(|s| s.into_iter().next())
        .ok_or_else(|| {
            let what = "no model_config attribute: not a Keras model file (a weights-only \
                        file loads with KerasModel::load_weights_h5 and the model's config)";
            malformed(source, what)
        })?;
    serde_json::from_str(&text).map_err(|e| malformed(source, format!("model_config: {e}")))
}
