//! RAII types over the cuDNN objects of the GRU path, one per object: each owns its raw
//! descriptor and destroys it on drop (cudarc's `safe` layer, for the RNN v8 objects cudarc
//! does not wrap); the queries of an RNN descriptor; and [`RnnCall`], the forward and
//! backward calls on typed, size-checked device buffers. Raw pointers stay in here and in
//! [`crate::result`].

mod descriptors;
mod handle;
mod query;
mod rnn;

pub use descriptors::{
    DropoutDescriptor, RnnDataDescriptor, RnnDescriptor, RnnMath, TensorDescriptor, ZeroFill,
};
pub use handle::Handle;
pub use rnn::{BackwardDataBuffers, BackwardWeightsBuffers, ForwardBuffers, RnnCall, RnnShape};
