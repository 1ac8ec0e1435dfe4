//! The CUDA C source of `kernels/gru_mask_scan.cu`, compiled as C++ for the host (with
//! `__global__`, `blockIdx`, `threadIdx` and `blockDim` stood in) and run thread by thread,
//! against `MaskScan::on_host`, the Rust reference of the same rules. This checks the
//! kernel's logic on every CI run; the GPU tests check the same kernel on the device.

use candle_core::Device;
use candle_gru::cudnn::MaskScan;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const HARNESS: &str = r#"
#include <cstdio>
#include <vector>
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
#define __global__
#include KERNEL
int main() {
    int B, T, gb, zo;
    if (scanf("%d %d %d %d", &B, &T, &gb, &zo) != 4) return 2;
    std::vector<unsigned char> m(B * T);
    for (auto& v : m) { int x; if (scanf("%d", &x) != 1) return 2; v = (unsigned char)x; }
    std::vector<int> len(B, -1), flags(B, -1);
    std::vector<unsigned> g(B * T, 77777), e(B * T, 77777);
    std::vector<unsigned char> gk(B * T, 9), ek(B * T, 9);
    blockDim = {4, 1, 1};
    // Blocks and threads in a scrambled order, with spare threads past the last row.
    unsigned blocks = (B + 3) / 4;
    for (unsigned i = 0; i < blocks; ++i) {
        for (unsigned tx = 4; tx-- > 0;) {
            blockIdx = {blocks - 1 - i, 0, 0};
            threadIdx = {tx, 0, 0};
            gru_mask_scan(m.data(), B, T, gb, zo, len.data(), flags.data(), g.data(), gk.data(),
                          e.data(), ek.data());
        }
    }
    for (int v : len) { printf("%d ", v); }
    printf("\n");
    for (int v : flags) { printf("%d ", v); }
    printf("\n");
    for (unsigned v : g) { printf("%u ", v); }
    printf("\n");
    for (unsigned v : gk) { printf("%u ", v); }
    printf("\n");
    for (unsigned v : e) { printf("%u ", v); }
    printf("\n");
    for (unsigned v : ek) { printf("%u ", v); }
    printf("\n");
    return 0;
}
"#;

fn build() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let kernel = root.join("kernels/gru_mask_scan.cu");
    let dir = std::env::temp_dir().join(format!("gru-kernel-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("harness.cpp");
    std::fs::write(&src, HARNESS).unwrap();
    let bin = dir.join("harness");
    let out = Command::new("c++")
        .args(["-std=c++17", "-O1", "-Wall", "-Werror", "-x", "c++"])
        .arg(format!("-DKERNEL=\"{}\"", kernel.display()))
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => panic!(
            "the kernel does not compile as C++ ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            println!("skipped: no C++ compiler ({e})");
            None
        }
    }
}

fn run(bin: &PathBuf, mask: &[bool], b: usize, t: usize, gb: bool, zo: bool) -> Vec<Vec<u64>> {
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = format!("{b} {t} {} {}\n", gb as i32, zo as i32);
    for &m in mask {
        input.push_str(if m { "1 " } else { "0 " });
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn mask_scan_kernel_source_matches_the_host_reference() {
    let Some(bin) = build() else { return };
    let mut cases = 0;
    for (b, t) in [(1, 1), (3, 5), (9, 7), (13, 16)] {
        for pattern in 0..6 {
            let mask: Vec<bool> = (0..b * t)
                .map(|k| {
                    let (r, c) = (k / t, k % t);
                    match (pattern + r) % 6 {
                        0 => true,
                        1 => c < (r % t) + 1,
                        2 => c >= r % t,
                        3 => (r * 31 + c * 17) % 5 < 3,
                        4 => c == (r * 3) % t,
                        _ => false,
                    }
                })
                .collect();
            for gb in [false, true] {
                for zo in [false, true] {
                    let got = run(&bin, &mask, b, t, gb, zo);
                    let want = MaskScan::on_host(&mask, b, t, gb, zo, &Device::Cpu).unwrap();
                    let maps = want.index_maps().unwrap();
                    let (g, gk, e, ek) =
                        (maps.gather, maps.gather_keep, maps.expand, maps.expand_keep);
                    let as64 = |v: Vec<u64>| v;
                    assert_eq!(
                        got[0],
                        as64(want.lengths.iter().map(|&v| v as u64).collect()),
                        "lengths b={b} t={t} pattern={pattern} gb={gb} zo={zo}"
                    );
                    assert_eq!(
                        got[1],
                        want.flags().iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "flags"
                    );
                    assert_eq!(
                        got[2],
                        g.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "gather"
                    );
                    assert_eq!(
                        got[3],
                        gk.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "gather keep"
                    );
                    assert_eq!(
                        got[4],
                        e.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "expand"
                    );
                    assert_eq!(
                        got[5],
                        ek.iter().map(|&v| v as u64).collect::<Vec<_>>(),
                        "expand keep"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 96);
}
