//! RAII types over the cuDNN objects of the GRU path, one per object: each owns its raw
//! descriptor and destroys it on drop (cudarc's `safe` layer, for the RNN v8 objects cudarc
//! does not wrap).

mod descriptors;
mod handle;

pub use descriptors::{
    DropoutDescriptor, RnnDataDescriptor, RnnDescriptor, RnnMath, TensorDescriptor, ZeroFill,
};
pub use handle::Handle;
