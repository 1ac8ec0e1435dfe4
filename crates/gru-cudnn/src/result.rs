//! One thin function per cuDNN C call the GRU path makes, each turning the
//! `cudnnStatus_t` into a [`CudnnError`] that names the call (cudarc's `result` layer, for
//! the RNN v8 calls cudarc does not wrap). The `unsafe` ones take raw descriptors and device
//! pointers: their callers (the types in `safe/` and the op) state why those are valid.

use crate::error::CudnnError;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use std::ffi::{c_void, CStr};
use std::os::raw::c_char;

/// The result of a cuDNN call.
pub type Result<T> = std::result::Result<T, CudnnError>;

/// `CUDNN_RNN_PADDED_IO_ENABLED` (a `#define` in cudnn_adv.h, so not in the bindings).
pub const RNN_PADDED_IO_ENABLED: u32 = 1;

/// Turns a status into a result; on failure it asks cuDNN for its last error message.
pub fn check(call: &'static str, status: sys::cudnnStatus_t) -> Result<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    let mut buf = [0 as c_char; 1024];
    // SAFETY: `buf` is writable for `buf.len()` bytes; cuDNN writes at most that many,
    // NUL-terminated.
    unsafe { sys::cudnnGetLastErrorString(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: the buffer was zeroed and cuDNN NUL-terminates, so a NUL lies within it.
    let message = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .trim()
        .to_string();
    Err(CudnnError::Status {
        call,
        status: format!("{status:?}"),
        message,
    })
}

/// `cudnnGetVersion`: e.g. 91900 for 9.19.0.
pub fn version() -> usize {
    // SAFETY: takes no arguments and only reads the loaded library's version.
    unsafe { sys::cudnnGetVersion() }
}

/// `cudnnCreate`.
pub fn create_handle() -> Result<sys::cudnnHandle_t> {
    let mut h = std::ptr::null_mut();
    // SAFETY: `h` is a valid out-pointer.
    check("cudnnCreate", unsafe { sys::cudnnCreate(&mut h) })?;
    Ok(h)
}

/// `cudnnDestroy`.
///
/// # Safety
/// `h` came from [`create_handle`] and is not used afterwards.
pub unsafe fn destroy_handle(h: sys::cudnnHandle_t) -> Result<()> {
    check("cudnnDestroy", unsafe { sys::cudnnDestroy(h) })
}

/// `cudnnSetStream`.
///
/// # Safety
/// `h` is a live handle and `stream` a live stream of the handle's context.
pub unsafe fn set_stream(h: sys::cudnnHandle_t, stream: sys::cudaStream_t) -> Result<()> {
    check("cudnnSetStream", unsafe { sys::cudnnSetStream(h, stream) })
}

macro_rules! create_destroy {
    ($create:ident, $destroy:ident, $ty:ty, $c_create:ident, $c_destroy:ident) => {
        #[doc = concat!("`", stringify!($c_create), "`.")]
        pub fn $create() -> Result<$ty> {
            let mut d = std::ptr::null_mut();
            // SAFETY: `d` is a valid out-pointer.
            check(stringify!($c_create), unsafe { sys::$c_create(&mut d) })?;
            Ok(d)
        }

        #[doc = concat!("`", stringify!($c_destroy), "`.")]
        ///
        /// # Safety
        /// The descriptor came from the matching create call and is not used afterwards.
        pub unsafe fn $destroy(d: $ty) -> Result<()> {
            check(stringify!($c_destroy), unsafe { sys::$c_destroy(d) })
        }
    };
}

create_destroy!(
    create_rnn_descriptor,
    destroy_rnn_descriptor,
    sys::cudnnRNNDescriptor_t,
    cudnnCreateRNNDescriptor,
    cudnnDestroyRNNDescriptor
);
create_destroy!(
    create_rnn_data_descriptor,
    destroy_rnn_data_descriptor,
    sys::cudnnRNNDataDescriptor_t,
    cudnnCreateRNNDataDescriptor,
    cudnnDestroyRNNDataDescriptor
);
create_destroy!(
    create_tensor_descriptor,
    destroy_tensor_descriptor,
    sys::cudnnTensorDescriptor_t,
    cudnnCreateTensorDescriptor,
    cudnnDestroyTensorDescriptor
);
create_destroy!(
    create_dropout_descriptor,
    destroy_dropout_descriptor,
    sys::cudnnDropoutDescriptor_t,
    cudnnCreateDropoutDescriptor,
    cudnnDestroyDropoutDescriptor
);

/// `cudnnSetDropoutDescriptor`.
///
/// # Safety
/// `d` and `h` are live; `states` points to `state_bytes` device bytes (or is null with 0).
pub unsafe fn set_dropout_descriptor(
    d: sys::cudnnDropoutDescriptor_t,
    h: sys::cudnnHandle_t,
    dropout: f32,
    states: *mut c_void,
    state_bytes: usize,
    seed: u64,
) -> Result<()> {
    check("cudnnSetDropoutDescriptor", unsafe {
        sys::cudnnSetDropoutDescriptor(d, h, dropout, states, state_bytes, seed)
    })
}

/// `cudnnSetTensorNdDescriptor`.
///
/// # Safety
/// `d` is live; `dims` and `strides` have the same length.
pub unsafe fn set_tensor_nd_descriptor(
    d: sys::cudnnTensorDescriptor_t,
    data_type: sys::cudnnDataType_t,
    dims: &[i32],
    strides: &[i32],
) -> Result<()> {
    check("cudnnSetTensorNdDescriptor", unsafe {
        sys::cudnnSetTensorNdDescriptor(
            d,
            data_type,
            dims.len() as i32,
            dims.as_ptr(),
            strides.as_ptr(),
        )
    })
}

/// `cudnnGetTensorNdDescriptor`: the data type and dimensions (up to 8) of a descriptor.
///
/// # Safety
/// `d` is a live, set descriptor.
pub unsafe fn get_tensor_nd_descriptor(
    d: sys::cudnnTensorDescriptor_t,
) -> Result<(sys::cudnnDataType_t, Vec<i32>)> {
    let mut data_type = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
    let mut nb = 0i32;
    let mut dims = [0i32; 8];
    let mut strides = [0i32; 8];
    check("cudnnGetTensorNdDescriptor", unsafe {
        sys::cudnnGetTensorNdDescriptor(
            d,
            8,
            &mut data_type,
            &mut nb,
            dims.as_mut_ptr(),
            strides.as_mut_ptr(),
        )
    })?;
    Ok((data_type, dims[..nb.clamp(0, 8) as usize].to_vec()))
}

/// `cudnnSetRNNDescriptor_v8`.
///
/// # Safety
/// `d` and `dropout` are live descriptors.
#[allow(clippy::too_many_arguments)]
pub unsafe fn set_rnn_descriptor_v8(
    d: sys::cudnnRNNDescriptor_t,
    algo: sys::cudnnRNNAlgo_t,
    cell: sys::cudnnRNNMode_t,
    bias: sys::cudnnRNNBiasMode_t,
    dir: sys::cudnnDirectionMode_t,
    input_mode: sys::cudnnRNNInputMode_t,
    data_type: sys::cudnnDataType_t,
    math_prec: sys::cudnnDataType_t,
    math_type: sys::cudnnMathType_t,
    input_size: i32,
    hidden_size: i32,
    proj_size: i32,
    num_layers: i32,
    dropout: sys::cudnnDropoutDescriptor_t,
    aux_flags: u32,
) -> Result<()> {
    check("cudnnSetRNNDescriptor_v8", unsafe {
        sys::cudnnSetRNNDescriptor_v8(
            d,
            algo,
            cell,
            bias,
            dir,
            input_mode,
            data_type,
            math_prec,
            math_type,
            input_size,
            hidden_size,
            proj_size,
            num_layers,
            dropout,
            aux_flags,
        )
    })
}

/// `cudnnSetRNNDataDescriptor`.
///
/// # Safety
/// `d` is live; `lengths` has `batch` entries; `padding_fill` is null or points to one
/// value of the math type, alive for the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn set_rnn_data_descriptor(
    d: sys::cudnnRNNDataDescriptor_t,
    data_type: sys::cudnnDataType_t,
    layout: sys::cudnnRNNDataLayout_t,
    max_seq: i32,
    batch: i32,
    vector: i32,
    lengths: &[i32],
    padding_fill: *mut c_void,
) -> Result<()> {
    check("cudnnSetRNNDataDescriptor", unsafe {
        sys::cudnnSetRNNDataDescriptor(
            d,
            data_type,
            layout,
            max_seq,
            batch,
            vector,
            lengths.as_ptr(),
            padding_fill,
        )
    })
}

/// `cudnnGetRNNWeightSpaceSize`, in bytes.
///
/// # Safety
/// `h` and `d` are live and `d` is set.
pub unsafe fn get_rnn_weight_space_size(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
) -> Result<usize> {
    let mut size = 0usize;
    check("cudnnGetRNNWeightSpaceSize", unsafe {
        sys::cudnnGetRNNWeightSpaceSize(h, d, &mut size)
    })?;
    Ok(size)
}

/// `cudnnGetRNNWeightParams` for one linear layer of pseudo-layer 0: the matrix and bias
/// addresses inside `space`, with their descriptors filled in.
///
/// # Safety
/// `h`, `d`, `m_desc`, `b_desc` are live; `space` points to `space_bytes` device bytes.
pub unsafe fn get_rnn_weight_params(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
    space_bytes: usize,
    space: *const c_void,
    lin_layer: i32,
    m_desc: sys::cudnnTensorDescriptor_t,
    b_desc: sys::cudnnTensorDescriptor_t,
) -> Result<(*mut c_void, *mut c_void)> {
    let (mut m, mut b) = (std::ptr::null_mut(), std::ptr::null_mut());
    check("cudnnGetRNNWeightParams", unsafe {
        sys::cudnnGetRNNWeightParams(
            h,
            d,
            0,
            space_bytes,
            space,
            lin_layer,
            m_desc,
            &mut m,
            b_desc,
            &mut b,
        )
    })?;
    Ok((m, b))
}

/// `cudnnGetRNNTempSpaceSizes`: (workspace, reserve space) bytes for a forward mode.
///
/// # Safety
/// `h`, `d`, `x` are live and set.
pub unsafe fn get_rnn_temp_space_sizes(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
    mode: sys::cudnnForwardMode_t,
    x: sys::cudnnRNNDataDescriptor_t,
) -> Result<(usize, usize)> {
    let (mut work, mut reserve) = (0usize, 0usize);
    check("cudnnGetRNNTempSpaceSizes", unsafe {
        sys::cudnnGetRNNTempSpaceSizes(h, d, mode, x, &mut work, &mut reserve)
    })?;
    Ok((work, reserve))
}

/// The device buffers of one RNN call (all device pointers; null where unused).
#[derive(Debug, Clone, Copy)]
pub struct RnnBuffers {
    /// Per-row lengths, int32, on the device.
    pub dev_seq_lengths: *const i32,
    /// Input (batch, time, input) / its gradient.
    pub x: *mut c_void,
    /// Output (batch, time, units).
    pub y: *mut c_void,
    /// Initial state (1, batch, units).
    pub hx: *mut c_void,
    /// Final state (1, batch, units) / its gradient.
    pub hy: *mut c_void,
    /// Weight space (or its gradient) and its size in bytes.
    pub weights: *mut c_void,
    /// Weight-space bytes.
    pub weight_bytes: usize,
    /// Workspace and its bytes.
    pub work: *mut c_void,
    /// Workspace bytes.
    pub work_bytes: usize,
    /// Reserve space and its bytes (training only).
    pub reserve: *mut c_void,
    /// Reserve-space bytes.
    pub reserve_bytes: usize,
}

/// `cudnnRNNForward` (no cell state: a GRU).
///
/// # Safety
/// Every descriptor is live and set for these buffers' shapes; every pointer in `b` points
/// to device memory of the size its descriptor implies, on the handle's stream's context.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rnn_forward(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
    mode: sys::cudnnForwardMode_t,
    x_desc: sys::cudnnRNNDataDescriptor_t,
    y_desc: sys::cudnnRNNDataDescriptor_t,
    h_desc: sys::cudnnTensorDescriptor_t,
    b: &RnnBuffers,
) -> Result<()> {
    check("cudnnRNNForward", unsafe {
        sys::cudnnRNNForward(
            h,
            d,
            mode,
            b.dev_seq_lengths,
            x_desc,
            b.x,
            y_desc,
            b.y,
            h_desc,
            b.hx,
            b.hy,
            h_desc,
            std::ptr::null(),
            std::ptr::null_mut(),
            b.weight_bytes,
            b.weights,
            b.work_bytes,
            b.work,
            b.reserve_bytes,
            b.reserve,
        )
    })
}

/// `cudnnRNNBackwardData_v8`: `dx`, `dhx` from `y`, `dy`, `dhy` (no cell state).
///
/// # Safety
/// As [`rnn_forward`]; `dy`, `dhy` are outputs' gradients, `dx`, `dhx` writable buffers of
/// the input and initial state's sizes; the reserve space is the training forward's.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rnn_backward_data(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
    x_desc: sys::cudnnRNNDataDescriptor_t,
    y_desc: sys::cudnnRNNDataDescriptor_t,
    h_desc: sys::cudnnTensorDescriptor_t,
    b: &RnnBuffers,
    dy: *const c_void,
    dhy: *const c_void,
    dx: *mut c_void,
    dhx: *mut c_void,
) -> Result<()> {
    check("cudnnRNNBackwardData_v8", unsafe {
        sys::cudnnRNNBackwardData_v8(
            h,
            d,
            b.dev_seq_lengths,
            y_desc,
            b.y,
            dy,
            x_desc,
            dx,
            h_desc,
            b.hx,
            dhy,
            dhx,
            h_desc,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null_mut(),
            b.weight_bytes,
            b.weights,
            b.work_bytes,
            b.work,
            b.reserve_bytes,
            b.reserve,
        )
    })
}

/// `cudnnRNNBackwardWeights_v8` with `CUDNN_WGRAD_MODE_ADD`: adds the weight gradients into
/// `b.weights` (zero it first).
///
/// # Safety
/// As [`rnn_backward_data`], called after it with the same reserve space.
pub unsafe fn rnn_backward_weights(
    h: sys::cudnnHandle_t,
    d: sys::cudnnRNNDescriptor_t,
    x_desc: sys::cudnnRNNDataDescriptor_t,
    y_desc: sys::cudnnRNNDataDescriptor_t,
    h_desc: sys::cudnnTensorDescriptor_t,
    b: &RnnBuffers,
) -> Result<()> {
    check("cudnnRNNBackwardWeights_v8", unsafe {
        sys::cudnnRNNBackwardWeights_v8(
            h,
            d,
            sys::cudnnWgradMode_t::CUDNN_WGRAD_MODE_ADD,
            b.dev_seq_lengths,
            x_desc,
            b.x,
            h_desc,
            b.hx,
            y_desc,
            b.y,
            b.weight_bytes,
            b.weights,
            b.work_bytes,
            b.work,
            b.reserve_bytes,
            b.reserve,
        )
    })
}
