//! What the CPU benchmark examples share: their common arguments and the median timing.

use super::shape::{parse_shape, Shape};
use anyhow::{bail, Context};
use std::time::{Duration, Instant};

/// `--threads N`, `--shape B,T,I,H` (repeatable), `--json PATH`, `--min-time SECONDS`.
pub struct BenchArgs {
    pub threads: usize,
    pub shapes: Vec<Shape>,
    pub json: Option<String>,
    pub min_time: Duration,
}

/// Parses the common arguments; `extra(flag, value)` takes the others (true when it knew
/// the flag). Without `--shape`, the `default_shapes`.
pub fn parse_args(
    default_shapes: &[&str],
    mut extra: impl FnMut(&str, Option<String>) -> anyhow::Result<bool>,
) -> anyhow::Result<BenchArgs> {
    let mut a = BenchArgs {
        threads: 1,
        shapes: Vec::new(),
        json: None,
        min_time: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--threads" => a.threads = it.next().context("--threads N")?.parse()?,
            "--shape" => a
                .shapes
                .push(parse_shape(&it.next().context("--shape B,T,I,H")?)?),
            "--json" => a.json = Some(it.next().context("--json PATH")?),
            "--min-time" => {
                a.min_time =
                    Duration::from_secs_f64(it.next().context("--min-time SECONDS")?.parse()?)
            }
            other => {
                if !extra(other, it.next())? {
                    bail!("unknown argument {other}");
                }
            }
        }
    }
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if a.shapes.is_empty() {
        for s in default_shapes {
            a.shapes.push(parse_shape(s)?);
        }
    }
    Ok(a)
}

/// Median of runs of `f` after one warm-up, until `min_time` passed (at most `max_runs`
/// runs) and at least 5 runs.
pub fn median_ms(
    min_time: Duration,
    max_runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < min_time && times.len() < max_runs) {
        let t0 = Instant::now();
        f()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
