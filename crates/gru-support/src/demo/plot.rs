//! A loss/accuracy plot of a training run, written as PNG (drawn here: lines, a grid and a
//! small bitmap font; the `png` crate encodes it).

use super::EpochStats;
use std::path::Path;

const W: usize = 720;
const H: usize = 420;
const LEFT: usize = 70;
const RIGHT: usize = 30;
const TOP: usize = 50;
const BOTTOM: usize = 60;

type Rgb = [u8; 3];
const BLACK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];
const LOSS: Rgb = [214, 39, 40];
const TRAIN: Rgb = [31, 119, 180];
const TEST: Rgb = [44, 160, 44];

/// 5x7 glyphs for the characters the plot writes.
fn glyph(c: char) -> Option<[&'static str; 7]> {
    Some(match c {
        '0' => [
            ".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.",
        ],
        '1' => [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        '2' => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####",
        ],
        '3' => [
            "####.", "....#", "....#", ".###.", "....#", "....#", "####.",
        ],
        '4' => [
            "...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.",
        ],
        '5' => [
            "#####", "#....", "####.", "....#", "....#", "#...#", ".###.",
        ],
        '6' => [
            "..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.",
        ],
        '7' => [
            "#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...",
        ],
        '8' => [
            ".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.",
        ],
        '9' => [
            ".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..",
        ],
        '.' => [
            ".....", ".....", ".....", ".....", ".....", ".##..", ".##..",
        ],
        '/' => [
            "....#", "...#.", "...#.", "..#..", ".#...", ".#...", "#....",
        ],
        'A' => [
            ".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#",
        ],
        'C' => [
            ".###.", "#...#", "#....", "#....", "#....", "#...#", ".###.",
        ],
        'E' => [
            "#####", "#....", "#....", "####.", "#....", "#....", "#####",
        ],
        'G' => [
            ".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####",
        ],
        'H' => [
            "#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#",
        ],
        'I' => [
            ".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        'L' => [
            "#....", "#....", "#....", "#....", "#....", "#....", "#####",
        ],
        'M' => [
            "#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#",
        ],
        'N' => [
            "#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#",
        ],
        'O' => [
            ".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###.",
        ],
        'P' => [
            "####.", "#...#", "#...#", "####.", "#....", "#....", "#....",
        ],
        'R' => [
            "####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#",
        ],
        'S' => [
            ".####", "#....", "#....", ".###.", "....#", "....#", "####.",
        ],
        'T' => [
            "#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#..",
        ],
        'U' => [
            "#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###.",
        ],
        'X' => [
            "#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#",
        ],
        ' ' => ["....."; 7],
        _ => return None,
    })
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            px: vec![255; W * H * 3],
        }
    }

    fn dot(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, thick: i64) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            let x = x0 + (x1 - x0) * s / steps;
            let y = y0 + (y1 - y0) * s / steps;
            for dx in 0..thick {
                for dy in 0..thick {
                    self.dot(x + dx, y + dy, c);
                }
            }
        }
    }

    /// Text at 2x scale; unknown characters are skipped.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (k, ch) in s.to_uppercase().chars().enumerate() {
            if let Some(g) = glyph(ch) {
                for (r, row) in g.iter().enumerate() {
                    for (col, b) in row.bytes().enumerate() {
                        if b == b'#' {
                            let (px, py) = (x + 12 * k as i64 + 2 * col as i64, y + 2 * r as i64);
                            for d in 0..4 {
                                self.dot(px + d % 2, py + d / 2, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Draws train loss (scaled by its maximum), train and test accuracy per epoch, and writes
/// the PNG.
pub fn write_png(epochs: &[EpochStats], path: &Path) -> std::io::Result<()> {
    let mut cv = Canvas::new();
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let n = epochs.len().max(2);
    let max_loss = epochs
        .iter()
        .map(|e| e.loss)
        .fold(f64::MIN_POSITIVE, f64::max);
    let at = |i: usize, v: f64| -> (i64, i64) {
        let x = LEFT as f64 + pw * i as f64 / (n - 1) as f64;
        let y = TOP as f64 + ph * (1.0 - v.clamp(0.0, 1.0));
        (x.round() as i64, y.round() as i64)
    };
    for k in 0..=4 {
        let v = k as f64 / 4.0;
        let (_, y) = at(0, v);
        cv.line((LEFT as i64, y), ((W - RIGHT) as i64, y), GRID, 1);
        cv.text(LEFT as i64 - 52, y - 7, &format!("{v:.2}"), BLACK);
    }
    for i in 0..epochs.len() {
        let (x, _) = at(i, 0.0);
        let label = (i + 1).to_string();
        if epochs.len() <= 15 || (i + 1) % 5 == 0 {
            cv.text(
                x - 6 * label.len() as i64,
                (H - BOTTOM) as i64 + 8,
                &label,
                BLACK,
            );
        }
    }
    cv.line(
        (LEFT as i64, TOP as i64),
        (LEFT as i64, (H - BOTTOM) as i64),
        BLACK,
        2,
    );
    cv.line(
        (LEFT as i64, (H - BOTTOM) as i64),
        ((W - RIGHT) as i64, (H - BOTTOM) as i64),
        BLACK,
        2,
    );
    cv.text((W / 2) as i64 - 30, (H - 28) as i64, "EPOCH", BLACK);
    cv.text(LEFT as i64, 12, "GRU TRAINING", BLACK);
    let loss: Vec<f64> = epochs.iter().map(|e| e.loss / max_loss).collect();
    let train: Vec<f64> = epochs.iter().map(|e| e.train_accuracy).collect();
    let test: Vec<f64> = epochs.iter().map(|e| e.test_accuracy).collect();
    let series = [
        (LOSS, "LOSS/MAX", &loss),
        (TRAIN, "TRAIN ACC", &train),
        (TEST, "TEST ACC", &test),
    ];
    for (k, (color, name, values)) in series.iter().enumerate() {
        for i in 1..values.len() {
            cv.line(at(i - 1, values[i - 1]), at(i, values[i]), *color, 3);
        }
        let lx = 250 + 150 * k as i64;
        cv.line((lx, 19), (lx + 16, 19), *color, 4);
        cv.text(lx + 22, 12, name, *color);
    }
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&cv.px)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}
