//! `cargo bench`: the fused CPU path and the reference loop, forward (inference) and a
//! training step (forward + backward of sum(output)), f32, one thread, at the main shapes.
//! `examples/bench_cpu.rs` prints the full table with candle-nn and writes JSON;
//! `scripts/bench_anchors.py` adds Keras-TF and PyTorch.

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::CpuPath;
use candle_gru::{CallOptions, Gru, GruConfig};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn layer(vm: &VarMap, i: usize, h: usize, path: CpuPath) -> Gru {
    let mut c = GruConfig::new(h);
    c.return_sequences = true;
    let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
    Gru::new(c, i, vb.pp("gru"))
        .expect("layer")
        .with_cpu_path(path)
        .with_threads(Some(1))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gru");
    group.sample_size(10);
    for (b, t, i, h) in [(64, 100, 128, 256), (1, 100, 128, 256), (32, 500, 64, 128)] {
        let x = Tensor::randn(0f32, 1.0, (b, t, i), &Device::Cpu).expect("input");
        for (name, path) in [("fused", CpuPath::Fused), ("loop", CpuPath::Loop)] {
            let vm = VarMap::new();
            let g = layer(&vm, i, h, path);
            let id = format!("{name}/B{b}_T{t}_I{i}_H{h}");
            group.bench_function(BenchmarkId::new("forward", &id), |bn| {
                bn.iter(|| g.call(&x, CallOptions::default()).expect("call"))
            });
            if name == "loop" && b * t > 10_000 {
                continue; // the op-by-op backward at this size takes seconds per run
            }
            group.bench_function(BenchmarkId::new("train", &id), |bn| {
                bn.iter(|| {
                    let out = g
                        .call(
                            &x,
                            CallOptions {
                                training: true,
                                ..Default::default()
                            },
                        )
                        .expect("call");
                    out.output
                        .sum_all()
                        .expect("sum")
                        .backward()
                        .expect("backward")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
