//! The `--shape B,T,I,H` argument of the benchmark examples.

use anyhow::{bail, Context};

/// A benchmark shape: batch, timesteps, input features, units.
#[derive(Clone, Copy)]
pub struct Shape {
    pub b: usize,
    pub t: usize,
    pub i: usize,
    pub h: usize,
}

/// Parses `B,T,I,H` (four positive integers).
pub fn parse_shape(s: &str) -> anyhow::Result<Shape> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .context("--shape B,T,I,H")?;
    match v.as_slice() {
        [b, t, i, h] if *b > 0 && *t > 0 && *i > 0 && *h > 0 => Ok(Shape {
            b: *b,
            t: *t,
            i: *i,
            h: *h,
        }),
        _ => bail!("--shape takes four positive integers B,T,I,H, got {s:?}"),
    }
}
