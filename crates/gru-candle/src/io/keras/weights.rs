//! Variables read from a Keras HDF5 weights file by their object-tree paths.

use crate::error::{file_error, FileProblem, Result};
use crate::io::check_shape;
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor};
use gru_core::GruConfig;
use hdf5_reader::Hdf5File;

/// Reads variables from an HDF5 weights file.
pub(super) struct Weights {
    pub(super) file: Hdf5File,
    pub(super) source: String,
}

impl Weights {
    fn read(&self, path: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let ds = self.file.dataset(path).map_err(|_| {
            file_error(
                &self.source,
                FileProblem::Missing(format!("variable {path}")),
            )
        })?;
        let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
        let bad = |e: hdf5_reader::error::Error| {
            file_error(
                &self.source,
                FileProblem::Unreadable(format!("{path}: {e}")),
            )
        };
        let values: Vec<f64> = match ds.dtype() {
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
                return Err(file_error(
                    &self.source,
                    FileProblem::Unsupported(format!(
                        "{path}: datatype {other:?} (float32 or float64 expected)"
                    )),
                ))
            }
        };
        Ok((shape, values))
    }

    pub(super) fn tensor(
        &self,
        path: &str,
        expected: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (shape, values) = self.read(path)?;
        check_shape(&self.source, path, &shape, expected)?;
        crate::io::tensor_from(&self.source, path, values, expected, dtype, device)
    }

    pub(super) fn gru(
        &self,
        group: &str,
        config: GruConfig,
        input_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Gru> {
        let u = config.units;
        let kernel = self.tensor(
            &format!("{group}/cell/vars/0"),
            &[input_dim, 3 * u],
            dtype,
            device,
        )?;
        let recurrent = self.tensor(&format!("{group}/cell/vars/1"), &[u, 3 * u], dtype, device)?;
        let bias = match config.bias_shape() {
            Some(shape) => {
                Some(self.tensor(&format!("{group}/cell/vars/2"), &shape, dtype, device)?)
            }
            None => None,
        };
        Gru::from_weights(config, kernel, recurrent, bias)
    }
}
