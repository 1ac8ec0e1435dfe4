//! A cuDNN handle bound to a CUDA stream.

use crate::error::CudnnError;
use crate::result;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use std::sync::Arc;

/// A cuDNN handle whose work goes to one CUDA stream (candle's stream for a device). cuDNN
/// handles are not thread-safe: keep one per thread (the path keeps them thread-local, as
/// candle does for its convolution handles).
#[derive(Debug)]
pub struct Handle {
    raw: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
}

impl Handle {
    /// Creates a handle on `stream`'s context and binds it to `stream`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self, CudnnError> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| CudnnError::Input {
                what: "CUDA context".into(),
                expected: "a context that can be bound to this thread".into(),
                got: format!("{e:?}"),
            })?;
        let raw = result::create_handle()?;
        let handle = Handle { raw, stream };
        // SAFETY: `raw` was just created and `cu_stream` belongs to the bound context; the
        // stream outlives the handle because the handle holds an Arc to it.
        unsafe { result::set_stream(handle.raw, handle.stream.cu_stream() as sys::cudaStream_t) }?;
        Ok(handle)
    }

    /// The raw handle, for calls in [`crate::result`].
    pub fn raw(&self) -> sys::cudnnHandle_t {
        self.raw
    }

    /// The stream the handle's work goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from cudnnCreate and nothing uses it after drop. An error here
        // cannot be reported from drop; the handle is gone either way.
        let _ = unsafe { result::destroy_handle(self.raw) };
    }
}
