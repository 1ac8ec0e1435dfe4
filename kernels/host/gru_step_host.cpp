// The step kernels of kernels/gru_step_*.cu built as C++ for the host: the same source, with
// CUDA's thread indices stood in, each launch run as a loop over its threads (the kernels
// share no memory between threads and never synchronize, so any order is a valid schedule).
// gru_core::step::host calls these through FFI; its tests and the golden cases run the fused
// GPU path's exact step sequence and kernel code on every CI machine.
#include <cmath>

struct GruDim3 {
    unsigned x, y, z;
};
static thread_local GruDim3 blockIdx, threadIdx, blockDim;
#define __global__

#include "../gru_step_forward.cu"
#include "../gru_step_backward.cu"
#include "../gru_step_elementwise.cu"

// Runs kernel `f` over `threads` threads in blocks of 128, last block first and the threads
// of a block in reverse, so that no result can depend on a launch order.
template <typename F> static void gru_host_run(F f, const GruStepArgs& a, long long threads) {
    const unsigned block = 128;
    const long long blocks = (threads + block - 1) / block;
    blockDim = {block, 1, 1};
    for (long long bi = blocks; bi-- > 0;) {
        for (unsigned tx = block; tx-- > 0;) {
            blockIdx = {(unsigned)bi, 0, 0};
            threadIdx = {tx, 0, 0};
            f(a);
        }
    }
}

#define GRU_HOST(name)                                                                     \
    extern "C" void gru_host_##name(GruStepArgs a, long long threads) {                    \
        gru_host_run(name, a, threads);                                                    \
    }

GRU_HOST(gru_fwd_after_f32)
GRU_HOST(gru_fwd_after_f64)
GRU_HOST(gru_fwd_before_gates_f32)
GRU_HOST(gru_fwd_before_gates_f64)
GRU_HOST(gru_fwd_before_out_f32)
GRU_HOST(gru_fwd_before_out_f64)
GRU_HOST(gru_bwd_after_f32)
GRU_HOST(gru_bwd_after_f64)
GRU_HOST(gru_bwd_before_a_f32)
GRU_HOST(gru_bwd_before_a_f64)
GRU_HOST(gru_bwd_before_b_f32)
GRU_HOST(gru_bwd_before_b_f64)
GRU_HOST(gru_mask_rows_f32)
GRU_HOST(gru_mask_rows_f64)
GRU_HOST(gru_mask_accumulate_f32)
GRU_HOST(gru_mask_accumulate_f64)

// The activations themselves, for the test against gru_core::Activation.
extern "C" double gru_host_activate(int code, double x, double alpha, double beta) {
    return gru_activate<double>(code, x, alpha, beta);
}

extern "C" double gru_host_derivative(int code, double x, double y, double alpha, double beta) {
    return gru_derivative<double>(code, x, y, alpha, beta);
}
