//! The descriptors of one GRU call: dropout (rate 0), RNN, RNN data, tensor.

use super::Handle;
use crate::error::CudnnError;
use crate::result::{self, RNN_PADDED_IO_ENABLED};
use candle_core::cuda_backend::cudarc::cudnn::sys;

type Result<T> = std::result::Result<T, CudnnError>;

macro_rules! owned_descriptor {
    ($name:ident, $raw:ty, $destroy:path) => {
        impl $name {
            /// The raw descriptor, for calls in [`crate::result`].
            pub fn raw(&self) -> $raw {
                self.raw
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: `raw` came from the matching create call and is not used after
                // drop; a failure cannot be reported from drop.
                let _ = unsafe { $destroy(self.raw) };
            }
        }
    };
}

/// A dropout descriptor with rate 0: cuDNN applies RNN dropout only between layers, and the
/// GRU has one layer (Keras' dropout is applied to the inputs before the call).
#[derive(Debug)]
pub struct DropoutDescriptor {
    raw: sys::cudnnDropoutDescriptor_t,
}
owned_descriptor!(
    DropoutDescriptor,
    sys::cudnnDropoutDescriptor_t,
    result::destroy_dropout_descriptor
);

impl DropoutDescriptor {
    /// A rate-0 descriptor (no random states needed).
    pub fn none(handle: &Handle) -> Result<Self> {
        let d = DropoutDescriptor {
            raw: result::create_dropout_descriptor()?,
        };
        // SAFETY: both objects are live; a rate of 0 takes no state buffer (null, 0 bytes),
        // as TensorFlow's cuDNN RNN does.
        unsafe {
            result::set_dropout_descriptor(d.raw, handle.raw(), 0.0, std::ptr::null_mut(), 0, 0)
        }?;
        Ok(d)
    }
}

/// The numeric settings of an RNN descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RnnMath {
    /// Data type of x, y, h and the weights.
    pub data_type: sys::cudnnDataType_t,
    /// Compute precision (FLOAT for half types: f32 accumulation).
    pub math_prec: sys::cudnnDataType_t,
    /// FMA (exact f32), DEFAULT (may use TF32 on Ampere+), TENSOR_OP (half types).
    pub math_type: sys::cudnnMathType_t,
}

/// An RNN descriptor for a Keras GRU: one unidirectional layer, `CUDNN_GRU` (the
/// reset-after form), double bias, linear input, padded I/O (variable lengths).
#[derive(Debug)]
pub struct RnnDescriptor {
    raw: sys::cudnnRNNDescriptor_t,
}
owned_descriptor!(
    RnnDescriptor,
    sys::cudnnRNNDescriptor_t,
    result::destroy_rnn_descriptor
);

impl RnnDescriptor {
    /// The GRU descriptor with `CUDNN_RNN_ALGO_STANDARD` (the only algorithm that takes
    /// variable lengths).
    pub fn gru(
        math: RnnMath,
        input_size: usize,
        hidden_size: usize,
        dropout: &DropoutDescriptor,
    ) -> Result<Self> {
        let to_i32 = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| CudnnError::Input {
                what: what.into(),
                expected: "at most i32::MAX".into(),
                got: v.to_string(),
            })
        };
        let (input, hidden) = (
            to_i32("input size", input_size)?,
            to_i32("units", hidden_size)?,
        );
        let d = RnnDescriptor {
            raw: result::create_rnn_descriptor()?,
        };
        // SAFETY: `d` and the dropout descriptor are live; the enums are valid values.
        unsafe {
            result::set_rnn_descriptor_v8(
                d.raw,
                sys::cudnnRNNAlgo_t::CUDNN_RNN_ALGO_STANDARD,
                sys::cudnnRNNMode_t::CUDNN_GRU,
                sys::cudnnRNNBiasMode_t::CUDNN_RNN_DOUBLE_BIAS,
                sys::cudnnDirectionMode_t::CUDNN_UNIDIRECTIONAL,
                sys::cudnnRNNInputMode_t::CUDNN_LINEAR_INPUT,
                math.data_type,
                math.math_prec,
                math.math_type,
                input,
                hidden,
                hidden,
                1,
                dropout.raw(),
                RNN_PADDED_IO_ENABLED,
            )
        }?;
        Ok(d)
    }
}

/// An RNN data descriptor: batch-major unpacked (batch, max_seq, vector) with per-row
/// lengths.
#[derive(Debug)]
pub struct RnnDataDescriptor {
    raw: sys::cudnnRNNDataDescriptor_t,
}
owned_descriptor!(
    RnnDataDescriptor,
    sys::cudnnRNNDataDescriptor_t,
    result::destroy_rnn_data_descriptor
);

impl RnnDataDescriptor {
    /// A new, unset descriptor.
    pub fn new() -> Result<Self> {
        Ok(RnnDataDescriptor {
            raw: result::create_rnn_data_descriptor()?,
        })
    }

    /// Sets shape and lengths. Padded output steps are filled with zeros.
    pub fn set(
        &mut self,
        data_type: sys::cudnnDataType_t,
        max_seq: usize,
        lengths: &[i32],
        vector: usize,
        zero_fill: &mut ZeroFill,
    ) -> Result<()> {
        let dims = [max_seq, lengths.len(), vector].map(|v| i32::try_from(v).ok());
        let [Some(t), Some(b), Some(v)] = dims else {
            return Err(CudnnError::Input {
                what: "RNN data shape".into(),
                expected: "each dimension at most i32::MAX".into(),
                got: format!("time {max_seq}, batch {}, vector {vector}", lengths.len()),
            });
        };
        // SAFETY: `raw` is live; `lengths` has `b` entries; `zero_fill` points to 8 zero
        // bytes that live for the call (cuDNN copies the value).
        unsafe {
            result::set_rnn_data_descriptor(
                self.raw,
                data_type,
                sys::cudnnRNNDataLayout_t::CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                t,
                b,
                v,
                lengths,
                zero_fill.ptr(),
            )
        }
    }
}

/// A host zero for `paddingFill`, read as the data type of the RNN data (8 zero bytes: a
/// zero of every float type cuDNN's RNN takes).
#[derive(Debug, Default)]
pub struct ZeroFill {
    zero: u64,
}

impl ZeroFill {
    fn ptr(&mut self) -> *mut std::ffi::c_void {
        self.zero = 0;
        (&mut self.zero as *mut u64).cast()
    }
}

/// A fully packed N-d tensor descriptor (here the 3-d (layers, batch, units) state).
#[derive(Debug)]
pub struct TensorDescriptor {
    raw: sys::cudnnTensorDescriptor_t,
}
owned_descriptor!(
    TensorDescriptor,
    sys::cudnnTensorDescriptor_t,
    result::destroy_tensor_descriptor
);

impl TensorDescriptor {
    /// A new, unset descriptor (as `cudnnGetRNNWeightParams` fills in).
    pub fn new() -> Result<Self> {
        Ok(TensorDescriptor {
            raw: result::create_tensor_descriptor()?,
        })
    }

    /// A packed descriptor of `dims` (row-major strides).
    pub fn packed(data_type: sys::cudnnDataType_t, dims: &[usize]) -> Result<Self> {
        let d = Self::new()?;
        let dims_i: Vec<i32> = dims
            .iter()
            .map(|&v| i32::try_from(v))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| CudnnError::Input {
                what: "tensor shape".into(),
                expected: "each dimension at most i32::MAX".into(),
                got: format!("{dims:?}"),
            })?;
        let mut strides = vec![1i32; dims_i.len()];
        for k in (0..dims_i.len().saturating_sub(1)).rev() {
            strides[k] = strides[k + 1] * dims_i[k + 1];
        }
        // SAFETY: `raw` is live; dims and strides have the same length.
        unsafe { result::set_tensor_nd_descriptor(d.raw, data_type, &dims_i, &strides) }?;
        Ok(d)
    }

    /// The descriptor's data type and dimensions.
    pub fn dims(&self) -> Result<(sys::cudnnDataType_t, Vec<i32>)> {
        // SAFETY: `raw` is live (set by `packed` or by cudnnGetRNNWeightParams).
        unsafe { result::get_tensor_nd_descriptor(self.raw) }
    }
}
