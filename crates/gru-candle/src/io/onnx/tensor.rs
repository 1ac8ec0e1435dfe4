//! ONNX `TensorProto` float values as f64, in their stored form
//! (`raw_data` little-endian bytes or the typed repeated fields), count-checked against
//! the dims and the limit before anything is converted.

use super::proto::{tensor_proto::DataLocation, tensor_proto::DataType, TensorProto};
use crate::error::{file_error, Error, FileProblem, Result};
use gru_core::GruError;
use half::{bf16, f16};

/// A tensor's dims and values.
pub(crate) struct Values<T> {
    pub dims: Vec<usize>,
    pub data: Vec<T>,
}

/// The element count of `t`'s dims, checked against `max_bytes` (as 8-byte values).
fn count(source: &str, what: &str, t: &TensorProto, max_bytes: u64) -> Result<(Vec<usize>, usize)> {
    let bad = |why: String| file_error(source, FileProblem::Unreadable(format!("{what}: {why}")));
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let n = dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    match n.and_then(|n| n.checked_mul(8).map(|b| (n, b as u64))) {
        Some((n, b)) if b <= max_bytes => Ok((dims, n)),
        _ => Err(Error::Gru(GruError::TooLarge {
            what: format!("{source}: {what} of dims {:?}", t.dims),
            limit: format!("{max_bytes} bytes (Limits::max_weight_bytes)"),
            needed: n.map_or("more than usize::MAX values".into(), |n| {
                format!("{n} values")
            }),
        })),
    }
}

/// Little-endian elements of `width` bytes from `raw`, decoded by `f`.
fn from_raw<T>(raw: &[u8], width: usize, n: usize, f: impl Fn(&[u8]) -> T) -> Option<Vec<T>> {
    (raw.len() == n * width).then(|| raw.chunks_exact(width).map(f).collect())
}

/// A float tensor (float, double, float16 or bfloat16) as f64 values.
pub(crate) fn floats(
    source: &str,
    what: &str,
    t: &TensorProto,
    max_bytes: u64,
) -> Result<Values<f64>> {
    if t.data_location == Some(DataLocation::External as i32) {
        let why = format!("{what}: external data (weights in a separate file)");
        return Err(file_error(source, FileProblem::Unsupported(why)));
    }
    let (dims, n) = count(source, what, t, max_bytes)?;
    let raw = t.raw_data.as_deref().unwrap_or(&[]);
    let dt = DataType::try_from(t.data_type.unwrap_or(0)).unwrap_or(DataType::Undefined);
    let half_bits = |v: &i32| *v as u16;
    let data = match (dt, raw.is_empty()) {
        (DataType::Float, false) => from_raw(raw, 4, n, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        }),
        (DataType::Float, true) => Some(t.float_data.iter().map(|&v| v as f64).collect()),
        (DataType::Double, false) => from_raw(raw, 8, n, |b| {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        }),
        (DataType::Double, true) => Some(t.double_data.clone()),
        (DataType::Float16, false) => {
            from_raw(raw, 2, n, |b| f16::from_le_bytes([b[0], b[1]]).to_f64())
        }
        (DataType::Float16, true) => Some(
            t.int32_data
                .iter()
                .map(|v| f16::from_bits(half_bits(v)).to_f64())
                .collect(),
        ),
        (DataType::Bfloat16, false) => {
            from_raw(raw, 2, n, |b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
        }
        (DataType::Bfloat16, true) => Some(
            t.int32_data
                .iter()
                .map(|v| bf16::from_bits(half_bits(v)).to_f64())
                .collect(),
        ),
        (other, _) => {
            let why = format!(
                "{what}: data type {other:?} (float, double, float16 or bfloat16 expected)"
            );
            return Err(file_error(source, FileProblem::Unsupported(why)));
        }
    };
    match data {
        Some(data) if data.len() == n => Ok(Values { dims, data }),
        _ => Err(file_error(
            source,
            FileProblem::Unreadable(format!("{what}: its values do not fill dims {dims:?}")),
        )),
    }
}
