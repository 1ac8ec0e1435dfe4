// One idea: the gate math of one forward step of the fused GRU path, after the step's
// recurrent product(s), for every (batch row, unit) at once: the gates, the candidate, the
// blend, Keras' output rule at masked steps, and (in training) the activations the backward
// needs. One thread per element of the (B, u) state; no thread reads another's element.
//
// reset_after (Keras' default, cuDNN's form): one kernel after hp = h @ U.
// reset_before: gru_fwd_before_gates computes z, r and q = r * (h * m_h); the host then runs
// hq = q @ U_h; gru_fwd_before_out computes the candidate and the blend.
// The step sequence around them is gru_core::step (forward.rs).
#include "gru_activations.cuh"
#include "gru_step_args.h"

// Keras' blend and output rule for element (b, j): a valid step sets the state and the
// output to z h + (1 - z) hh; a masked step keeps the state and outputs the last output
// (zeros with zero_output_for_mask).
template <typename T, typename C>
GRU_DEV void gru_finish(const GruStepArgs& a, int b, int j, C z, C hh) {
    const long long i = (long long)b * a.units + j;
    T* h = gru_ptr<T>(a.h);
    T* out = gru_ptr<T>(a.out_prev);
    const unsigned char* mask = gru_ptr<const unsigned char>(a.mask);
    const bool valid = mask == 0 || mask[(long long)b * a.time + a.t] != 0;
    if (valid) {
        C hv = gru_load<C>(h, i);
        C hn = z * hv + (C(1) - z) * hh;
        gru_store(h, i, hn);
        gru_store(out, i, hn);
    } else if (a.zero_output_for_mask) {
        gru_store(out, i, C(0));
    }
    T* seq = gru_ptr<T>(a.seq);
    seq[((long long)b * a.time + a.step) * a.units + j] = out[i];
}

template <typename T, typename C> GRU_DEV void gru_fwd_after(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const T* x = gru_ptr<const T>(a.xp) + ((long long)b * a.time + a.t) * 3 * u;
    const T* hp = gru_ptr<const T>(a.hp) + (long long)b * 3 * u;
    const T* rb = gru_ptr<const T>(a.rbias);
    const C bz = rb ? gru_load<C>(rb, j) : C(0);
    const C br = rb ? gru_load<C>(rb, u + j) : C(0);
    const C bh = rb ? gru_load<C>(rb, 2 * u + j) : C(0);
    const C ra = (C)a.rec_alpha, rbeta = (C)a.rec_beta, ca = (C)a.act_alpha, cb = (C)a.act_beta;
    const C az = gru_clip(gru_load<C>(x, j) + gru_load<C>(hp, j) + bz, a.clip);
    const C ar = gru_clip(gru_load<C>(x, u + j) + gru_load<C>(hp, u + j) + br, a.clip);
    const C z = gru_activate(a.rec_act, az, ra, rbeta);
    const C r = gru_activate(a.rec_act, ar, ra, rbeta);
    const C pre = gru_load<C>(hp, 2 * u + j) + bh;
    const C ah = gru_clip(gru_load<C>(x, 2 * u + j) + r * pre, a.clip);
    const C hh = gru_activate(a.act, ah, ca, cb);
    gru_store(gru_ptr<T>(a.s_hprev), i, gru_load<C>(gru_ptr<const T>(a.h), i));
    gru_store(gru_ptr<T>(a.s_z), i, z);
    gru_store(gru_ptr<T>(a.s_az), i, az);
    gru_store(gru_ptr<T>(a.s_r), i, r);
    gru_store(gru_ptr<T>(a.s_ar), i, ar);
    gru_store(gru_ptr<T>(a.s_hh), i, hh);
    gru_store(gru_ptr<T>(a.s_ah), i, ah);
    gru_store(gru_ptr<T>(a.s_extra), i, pre);
    gru_finish<T, C>(a, b, j, z, hh);
}

template <typename T, typename C> GRU_DEV void gru_fwd_before_gates(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const T* x = gru_ptr<const T>(a.xp) + ((long long)b * a.time + a.t) * 3 * u;
    const T* hp = gru_ptr<const T>(a.hp) + (long long)b * 3 * u;
    const C ra = (C)a.rec_alpha, rbeta = (C)a.rec_beta;
    const C az = gru_clip(gru_load<C>(x, j) + gru_load<C>(hp, j), a.clip);
    const C ar = gru_clip(gru_load<C>(x, u + j) + gru_load<C>(hp, u + j), a.clip);
    const C z = gru_activate(a.rec_act, az, ra, rbeta);
    const C r = gru_activate(a.rec_act, ar, ra, rbeta);
    const C hv = gru_load<C>(gru_ptr<const T>(a.h), i);
    const T* hm = gru_ptr<const T>(a.hmask);
    const C q = r * (hm ? hv * gru_load<C>(hm, i) : hv);
    gru_store(gru_ptr<T>(a.s_hprev), i, hv);
    gru_store(gru_ptr<T>(a.s_z), i, z);
    gru_store(gru_ptr<T>(a.s_az), i, az);
    gru_store(gru_ptr<T>(a.s_r), i, r);
    gru_store(gru_ptr<T>(a.s_ar), i, ar);
    gru_store(gru_ptr<T>(a.s_extra), i, q);
}

template <typename T, typename C> GRU_DEV void gru_fwd_before_out(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const T* x = gru_ptr<const T>(a.xp) + ((long long)b * a.time + a.t) * 3 * u;
    const C ah = gru_clip(gru_load<C>(x, 2 * u + j) + gru_load<C>(gru_ptr<const T>(a.hq), i), a.clip);
    const C hh = gru_activate(a.act, ah, (C)a.act_alpha, (C)a.act_beta);
    gru_store(gru_ptr<T>(a.s_hh), i, hh);
    gru_store(gru_ptr<T>(a.s_ah), i, ah);
    gru_finish<T, C>(a, b, j, gru_load<C>(gru_ptr<const T>(a.s_z), i), hh);
}

GRU_STEP_KERNELS(gru_fwd_after, gru_fwd_after)
GRU_STEP_KERNELS(gru_fwd_before_gates, gru_fwd_before_gates)
GRU_STEP_KERNELS(gru_fwd_before_out, gru_fwd_before_out)
