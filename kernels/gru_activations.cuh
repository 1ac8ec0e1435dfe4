// One idea: every activation a GRU gate can use, and its derivative, for the step kernels.
//
// The codes are gru_core::step::activation_code's; the formulas are gru_core::Activation's
// (`apply` and `derivative`), the f64 references they are tested against (through the host
// build of this header). C is the compute type: float for f32, f16 and bf16, double for f64.
#pragma once

#ifdef __CUDACC__
#define GRU_FN __device__ __forceinline__
#else
#include <cmath>
#define GRU_FN inline
#endif

GRU_FN float g_exp(float x) { return expf(x); }
GRU_FN double g_exp(double x) { return exp(x); }
GRU_FN float g_expm1(float x) { return expm1f(x); }
GRU_FN double g_expm1(double x) { return expm1(x); }
GRU_FN float g_log1p(float x) { return log1pf(x); }
GRU_FN double g_log1p(double x) { return log1p(x); }
GRU_FN float g_tanh(float x) { return tanhf(x); }
GRU_FN double g_tanh(double x) { return tanh(x); }
GRU_FN float g_erf(float x) { return erff(x); }
GRU_FN double g_erf(double x) { return erf(x); }
GRU_FN float g_sqrt(float x) { return sqrtf(x); }
GRU_FN double g_sqrt(double x) { return sqrt(x); }
GRU_FN float g_abs(float x) { return fabsf(x); }
GRU_FN double g_abs(double x) { return fabs(x); }

template <typename C> GRU_FN C g_max(C a, C b) { return a > b ? a : b; }
template <typename C> GRU_FN C g_min(C a, C b) { return a < b ? a : b; }
template <typename C> GRU_FN C g_clamp(C x, C lo, C hi) { return g_min(g_max(x, lo), hi); }
template <typename C> GRU_FN C g_sigmoid(C x) { return C(1) / (C(1) + g_exp(-x)); }
template <typename C> GRU_FN C g_hard_sigmoid(C x) { return g_clamp(x / C(6) + C(0.5), C(0), C(1)); }
// log(1 + exp(x)) without overflow.
template <typename C> GRU_FN C g_softplus(C x) { return g_max(x, C(0)) + g_log1p(g_exp(-g_abs(x))); }

enum GruActivation {
    ACT_TANH = 0, ACT_SIGMOID, ACT_HARD_SIGMOID, ACT_RELU, ACT_LINEAR, ACT_ELU, ACT_SELU,
    ACT_SOFTPLUS, ACT_SOFTSIGN, ACT_SILU, ACT_GELU, ACT_EXPONENTIAL, ACT_RELU6, ACT_LEAKY_RELU,
    ACT_HARD_TANH, ACT_LOG_SIGMOID, ACT_MISH, ACT_HARD_SILU, ACT_CELU, ACT_TANH_SHRINK,
    ACT_SQUAREPLUS, ACT_SPARSE_PLUS, ACT_HARD_SHRINK, ACT_SOFT_SHRINK,
    // ONNX's activations with parameters (alpha, beta).
    ACT_ONNX_AFFINE, ACT_ONNX_LEAKY_RELU, ACT_ONNX_THRESHOLDED_RELU, ACT_ONNX_SCALED_TANH,
    ACT_ONNX_HARD_SIGMOID, ACT_ONNX_ELU,
};

#define GRU_SELU_ALPHA 1.6732632423543772
#define GRU_SELU_SCALE 1.0507009873554805
#define GRU_SQRT1_2 0.70710678118654752440
#define GRU_INV_SQRT_2PI 0.39894228040143267794

// act(x).
template <typename C> GRU_FN C gru_activate(int code, C x, C alpha, C beta) {
    switch (code) {
    case ACT_TANH: return g_tanh(x);
    case ACT_SIGMOID: return g_sigmoid(x);
    case ACT_HARD_SIGMOID: return g_hard_sigmoid(x);
    case ACT_RELU: return g_max(x, C(0));
    case ACT_LINEAR: return x;
    case ACT_ELU: return x > C(0) ? x : g_expm1(x);
    case ACT_SELU: return C(GRU_SELU_SCALE) * (x > C(0) ? x : C(GRU_SELU_ALPHA) * g_expm1(x));
    case ACT_SOFTPLUS: return g_softplus(x);
    case ACT_SOFTSIGN: return x / (C(1) + g_abs(x));
    case ACT_SILU: return x * g_sigmoid(x);
    case ACT_GELU: return C(0.5) * x * (C(1) + g_erf(x * C(GRU_SQRT1_2)));
    case ACT_EXPONENTIAL: return g_exp(x);
    case ACT_RELU6: return g_clamp(x, C(0), C(6));
    case ACT_LEAKY_RELU: return x >= C(0) ? x : C(0.2) * x;
    case ACT_HARD_TANH: return g_clamp(x, C(-1), C(1));
    case ACT_LOG_SIGMOID: return -g_softplus(-x);
    case ACT_MISH: return x * g_tanh(g_softplus(x));
    case ACT_HARD_SILU: return x * g_hard_sigmoid(x);
    case ACT_CELU: return g_max(x, C(0)) + g_min(g_expm1(x), C(0));
    case ACT_TANH_SHRINK: return x - g_tanh(x);
    case ACT_SQUAREPLUS: return (x + g_sqrt(x * x + C(4))) / C(2);
    case ACT_SPARSE_PLUS: return x <= C(-1) ? C(0) : (x >= C(1) ? x : (x + C(1)) * (x + C(1)) / C(4));
    case ACT_HARD_SHRINK: return g_abs(x) > C(0.5) ? x : C(0);
    case ACT_SOFT_SHRINK: return x - g_clamp(x, C(-0.5), C(0.5));
    case ACT_ONNX_AFFINE: return alpha * x + beta;
    case ACT_ONNX_LEAKY_RELU: return x >= C(0) ? x : alpha * x;
    case ACT_ONNX_THRESHOLDED_RELU: return x > alpha ? x : C(0);
    case ACT_ONNX_SCALED_TANH: return alpha * g_tanh(beta * x);
    case ACT_ONNX_HARD_SIGMOID: return g_clamp(alpha * x + beta, C(0), C(1));
    case ACT_ONNX_ELU: return x >= C(0) ? x : alpha * g_expm1(x);
    default: return x;
    }
}

// act'(x); `y` is act(x) (sigmoid and tanh use it, as the CPU kernels do).
template <typename C> GRU_FN C gru_derivative(int code, C x, C y, C alpha, C beta) {
    switch (code) {
    case ACT_TANH: return C(1) - y * y;
    case ACT_SIGMOID: return y * (C(1) - y);
    case ACT_HARD_SIGMOID: return (x > C(-3) && x < C(3)) ? C(1) / C(6) : C(0);
    case ACT_RELU: return x > C(0) ? C(1) : C(0);
    case ACT_LINEAR: return C(1);
    case ACT_ELU: return x > C(0) ? C(1) : g_exp(x);
    case ACT_SELU: return C(GRU_SELU_SCALE) * (x > C(0) ? C(1) : C(GRU_SELU_ALPHA) * g_exp(x));
    case ACT_SOFTPLUS: return g_sigmoid(x);
    case ACT_SOFTSIGN: { C d = C(1) + g_abs(x); return C(1) / (d * d); }
    case ACT_SILU: { C s = g_sigmoid(x); return s * (C(1) + x * (C(1) - s)); }
    case ACT_GELU: {
        C pdf = g_exp(C(-0.5) * x * x) * C(GRU_INV_SQRT_2PI);
        return C(0.5) * (C(1) + g_erf(x * C(GRU_SQRT1_2))) + x * pdf;
    }
    case ACT_EXPONENTIAL: return g_exp(x);
    case ACT_RELU6: return (x > C(0) && x < C(6)) ? C(1) : C(0);
    case ACT_LEAKY_RELU: return x >= C(0) ? C(1) : C(0.2);
    case ACT_HARD_TANH: return (x > C(-1) && x < C(1)) ? C(1) : C(0);
    case ACT_LOG_SIGMOID: return g_sigmoid(-x);
    case ACT_MISH: {
        C t = g_tanh(g_softplus(x));
        return t + x * (C(1) - t * t) * g_sigmoid(x);
    }
    case ACT_HARD_SILU: return x <= C(-3) ? C(0) : (x >= C(3) ? C(1) : x / C(3) + C(0.5));
    case ACT_CELU: return x > C(0) ? C(1) : g_exp(x);
    case ACT_TANH_SHRINK: { C t = g_tanh(x); return t * t; }
    case ACT_SQUAREPLUS: return C(0.5) * (C(1) + x / g_sqrt(x * x + C(4)));
    case ACT_SPARSE_PLUS: return x <= C(-1) ? C(0) : (x >= C(1) ? C(1) : (x + C(1)) / C(2));
    case ACT_HARD_SHRINK: return g_abs(x) > C(0.5) ? C(1) : C(0);
    case ACT_SOFT_SHRINK: return g_abs(x) > C(0.5) ? C(1) : C(0);
    case ACT_ONNX_AFFINE: return alpha;
    case ACT_ONNX_LEAKY_RELU: return x >= C(0) ? C(1) : alpha;
    case ACT_ONNX_THRESHOLDED_RELU: return x > alpha ? C(1) : C(0);
    case ACT_ONNX_SCALED_TANH: { C t = g_tanh(beta * x); return alpha * beta * (C(1) - t * t); }
    case ACT_ONNX_HARD_SIGMOID: { C v = alpha * x + beta; return (v > C(0) && v < C(1)) ? alpha : C(0); }
    case ACT_ONNX_ELU: return x >= C(0) ? C(1) : alpha * g_exp(x);
    default: return C(1);
    }
}
