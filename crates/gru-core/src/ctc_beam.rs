//! CTC beam search decoding as TensorFlow's `CTCBeamSearchDecoder` computes it (what
//! `keras.ops.ctc_decode(strategy="beam_search")` runs on Keras' TensorFlow backend).
//!
//! The search keeps up to `beam_width` labelings (prefixes). Each carries the
//! log-probability of the frames so far ending in a blank and ending in its last label; each
//! frame (its inputs through a log-softmax, so logits and log-probabilities give the same)
//! extends every kept prefix by the blank, by its own last label, and by every other label,
//! and keeps the `beam_width` most probable. A beam as wide as every labeling is exact:
//! each score is the log of the sum over all frame paths that collapse to the labeling.
//!
//! A narrower beam loses what a prefix gathered once it falls out: if it comes back it
//! starts again from its parent, and a kept prefix whose parent fell out gathers nothing
//! more from it. TensorFlow's order of work is kept where it changes the result: the
//! prefixes grow children most probable first, and one that fell out this frame and failed
//! to come back as a child grows none.

use crate::seq::parallel::split;
use crate::seq::team::run_each;
use crate::seq::Threads;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// No node: the root's parent and label.
const NONE: u32 = u32::MAX;

/// Log-probabilities of a prefix: its paths ending in a blank, in its last label, and both.
#[derive(Debug, Clone, Copy)]
struct Prob {
    blank: f64,
    label: f64,
    total: f64,
}

impl Prob {
    /// Impossible: no paths.
    const ZERO: Prob = Prob {
        blank: f64::NEG_INFINITY,
        label: f64::NEG_INFINITY,
        total: f64::NEG_INFINITY,
    };
}

/// `ln(e^a + e^b)`, exact when either is minus infinity.
fn lse(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// A prefix in the tree of all prefixes seen: its parent and last label (`NONE` for the
/// empty prefix), and whether it is in the beam now.
#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    label: u32,
    active: bool,
}

/// A prefix in the beam with its probabilities.
#[derive(Debug, Clone, Copy)]
struct Entry {
    node: u32,
    p: Prob,
}

/// Orders heap items by total log-probability, the smallest on top (the beam's bottom).
#[derive(Debug, Clone, Copy)]
struct Bottom(Entry);

impl PartialEq for Bottom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bottom {}
impl PartialOrd for Bottom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bottom {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .p
            .total
            .total_cmp(&self.0.p.total)
            .then(other.0.node.cmp(&self.0.node))
    }
}

/// One sample's search.
struct Search {
    width: usize,
    blank: usize,
    nodes: Vec<Node>,
    /// `(parent, label)` -> node.
    children: HashMap<(u32, u32), u32>,
    /// The beam, most probable first.
    beam: Vec<Entry>,
}

impl Search {
    fn new(width: usize, blank: usize) -> Search {
        let root = Node {
            parent: NONE,
            label: NONE,
            active: true,
        };
        let p = Prob {
            blank: 0.0,
            label: f64::NEG_INFINITY,
            total: 0.0,
        };
        Search {
            width,
            blank,
            nodes: vec![root],
            children: HashMap::new(),
            beam: vec![Entry { node: 0, p }],
        }
    }

    /// The prefix probabilities after one more frame of inputs `row` (log-softmax taken
    /// here, as TensorFlow takes it).
    fn step(&mut self, row: &[f64]) {
        let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let norm = top + row.iter().map(|x| (x - top).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = row.iter().map(|x| x - norm).collect();
        let mut old = std::mem::take(&mut self.beam);
        let mut heap = self.update(&old, &logp);
        self.grow(&mut old, &logp, &mut heap);
        let mut beam: Vec<Entry> = heap.into_iter().map(|Bottom(e)| e).collect();
        beam.sort_by(|a, b| b.p.total.total_cmp(&a.p.total).then(a.node.cmp(&b.node)));
        self.beam = beam;
    }

    /// Every kept prefix one frame on: by a blank, by its own label, and (while its parent
    /// is kept) from its parent. They fill the next beam.
    fn update(&self, old: &[Entry], logp: &[f64]) -> BinaryHeap<Bottom> {
        let slot: HashMap<u32, usize> = old.iter().enumerate().map(|(i, e)| (e.node, i)).collect();
        let mut heap = BinaryHeap::with_capacity(old.len() + 1);
        // A parent counts as kept by its current total, updated or not, as in TensorFlow.
        let mut now: Vec<Prob> = old.iter().map(|e| e.p).collect();
        for (i, e) in old.iter().enumerate() {
            let node = self.nodes[e.node as usize];
            let mut p = e.p;
            if node.parent != NONE {
                let kept = slot
                    .get(&node.parent)
                    .filter(|&&pi| now[pi].total > f64::NEG_INFINITY);
                if let Some(&pi) = kept {
                    let before = &old[pi].p;
                    let from = match self.nodes[node.parent as usize].label == node.label {
                        true => before.blank,
                        false => before.total,
                    };
                    p.label = lse(p.label, from);
                }
                p.label += logp[node.label as usize];
            }
            p.blank = e.p.total + logp[self.blank];
            p.total = lse(p.blank, p.label);
            now[i] = p;
            heap.push(Bottom(Entry { node: e.node, p }));
        }
        heap
    }

    /// New prefixes: every kept prefix (most probable first) and one more label, each
    /// entering the beam while it beats the bottom, which then leaves. A prefix that left
    /// the beam this frame and comes back as a child is recomputed from its parent alone;
    /// if that does not enter, it grows no children this frame either (TensorFlow resets
    /// its previous probabilities).
    fn grow(&mut self, old: &mut [Entry], logp: &[f64], heap: &mut BinaryHeap<Bottom>) {
        let slot: HashMap<u32, usize> = old.iter().enumerate().map(|(i, e)| (e.node, i)).collect();
        for i in 0..old.len() {
            let e = old[i];
            if !self.candidate(heap, e.p.total) {
                continue;
            }
            let last = self.nodes[e.node as usize].label;
            for (label, &x) in logp.iter().enumerate() {
                if label == self.blank {
                    continue;
                }
                let label = label as u32;
                let child = self.children.get(&(e.node, label)).copied();
                if child.is_some_and(|c| self.nodes[c as usize].active) {
                    continue;
                }
                let from = match label == last {
                    true => e.p.blank,
                    false => e.p.total,
                };
                let total = x + from;
                if !self.candidate(heap, total) {
                    if let Some(&ci) = child.and_then(|c| slot.get(&c)) {
                        old[ci].p = Prob::ZERO;
                    }
                    continue;
                }
                if heap.len() == self.width {
                    if let Some(Bottom(out)) = heap.pop() {
                        self.nodes[out.node as usize].active = false;
                    }
                }
                let node = child.unwrap_or_else(|| self.add(e.node, label));
                self.nodes[node as usize].active = true;
                let p = Prob {
                    blank: f64::NEG_INFINITY,
                    label: total,
                    total,
                };
                heap.push(Bottom(Entry { node, p }));
            }
        }
    }

    /// Whether a prefix of log-probability `total` would enter the beam now.
    fn candidate(&self, heap: &BinaryHeap<Bottom>, total: f64) -> bool {
        total > f64::NEG_INFINITY
            && (heap.len() < self.width || heap.peek().is_some_and(|b| total > b.0.p.total))
    }

    fn add(&mut self, parent: u32, label: u32) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            parent,
            label,
            active: false,
        });
        self.children.insert((parent, label), id);
        id
    }

    /// A node's labels from the first.
    fn labels(&self, mut node: u32) -> Vec<u32> {
        let mut out = Vec::new();
        while self.nodes[node as usize].parent != NONE {
            out.push(self.nodes[node as usize].label);
            node = self.nodes[node as usize].parent;
        }
        out.reverse();
        out
    }
}

/// One decoded labeling and its score (the log-probability the search gathered for it).
#[derive(Debug, Clone, PartialEq)]
pub struct BeamPath {
    /// The labels, blanks and repeats already collapsed.
    pub labels: Vec<u32>,
    /// The log-probability the search gathered for it (each frame through a log-softmax).
    pub score: f64,
}

/// The beam search over one sample's `frames` rows of `classes` inputs (`inputs` row-major,
/// at least `frames * classes` long): the `top_paths` most probable labelings, best first,
/// or as many as the beam holds when that is fewer (none without classes). `beam_width`
/// is taken as at least 1; `blank < classes` (the caller checks).
pub fn beam_search(
    inputs: &[f64],
    frames: usize,
    classes: usize,
    blank: usize,
    beam_width: usize,
    top_paths: usize,
) -> Vec<BeamPath> {
    if classes == 0 {
        return Vec::new();
    }
    let mut search = Search::new(beam_width.max(1), blank);
    for row in inputs.chunks_exact(classes).take(frames) {
        search.step(row);
    }
    search
        .beam
        .iter()
        .take(top_paths)
        .map(|e| BeamPath {
            labels: search.labels(e.node),
            score: e.p.total,
        })
        .collect()
}

/// [`beam_search`] over a batch: `inputs` (batch, frames, classes) row-major, sample `b`
/// over its first `lengths[b]` frames; samples split over `threads`.
pub fn beam_search_batch(
    inputs: &[f64],
    dims: (usize, usize, usize),
    lengths: &[usize],
    (blank, beam_width, top_paths): (usize, usize, usize),
    threads: Threads,
) -> Vec<Vec<BeamPath>> {
    let (batch, frames, classes) = dims;
    let parts = split(batch, threads.at_once(threads.count));
    let each = run_each(threads.team, parts, |part| {
        part.map(|b| {
            let rows = &inputs[b * frames * classes..(b + 1) * frames * classes];
            beam_search(rows, lengths[b], classes, blank, beam_width, top_paths)
        })
        .collect::<Vec<_>>()
    });
    each.unwrap_or_default().concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctc::tests::log_softmax;

    /// Every labeling of `frames` frames with its probability: the sum over the frame
    /// paths that collapse to it.
    fn all_labelings(logp: &[f64], frames: usize, classes: usize, blank: usize) -> Vec<BeamPath> {
        let mut sums: HashMap<Vec<u32>, f64> = HashMap::new();
        for mut code in 0..classes.pow(frames as u32) {
            let (mut lp, mut out, mut prev) = (0.0, Vec::new(), None);
            for t in 0..frames {
                let c = code % classes;
                code /= classes;
                lp += logp[t * classes + c];
                if c != blank && prev != Some(c) {
                    out.push(c as u32);
                }
                prev = Some(c);
            }
            *sums.entry(out).or_insert(0.0) += lp.exp();
        }
        let mut all: Vec<BeamPath> = sums
            .into_iter()
            .map(|(labels, p)| BeamPath {
                labels,
                score: p.ln(),
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all
    }

    #[test]
    fn a_beam_as_wide_as_every_labeling_is_exact() {
        for (frames, classes, blank) in [(5, 3, 0), (4, 4, 3), (6, 3, 1)] {
            let mut logp: Vec<f64> = (0..frames * classes)
                .map(|i| ((i as f64) * 1.37).sin() * 2.0)
                .collect();
            log_softmax(&mut logp, classes);
            let want = all_labelings(&logp, frames, classes, blank);
            let got = beam_search(&logp, frames, classes, blank, 10_000, want.len());
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.labels, w.labels, "{frames} {classes} {blank}");
                assert!((g.score - w.score).abs() < 1e-12, "{g:?} {w:?}");
            }
        }
    }

    #[test]
    fn a_narrow_beam_keeps_its_width_and_order() {
        let (frames, classes) = (12, 5);
        let logp: Vec<f64> = (0..frames * classes)
            .map(|i| ((i as f64) * 0.91).cos() * 3.0)
            .collect();
        let got = beam_search(&logp, frames, classes, 0, 4, 10);
        assert_eq!(got.len(), 4);
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        // Scores are relative to each frame's largest input: never above 0.
        assert!(got.iter().all(|p| p.score <= 0.0));
        // A width-1 beam, fewer frames than given, and no labels but the blank.
        let one = beam_search(&logp, 3, classes, 0, 1, 1);
        assert_eq!(one.len(), 1);
        let blank_only = beam_search(&[0.0, -1.0, -2.0], 1, 3, 0, 1, 1);
        assert_eq!(blank_only[0].labels, Vec::<u32>::new());
    }

    #[test]
    fn a_batch_on_threads_is_each_sample_alone() {
        let (batch, frames, classes) = (5, 9, 4);
        let logp: Vec<f64> = (0..batch * frames * classes)
            .map(|i| ((i as f64) * 0.53).sin() * 2.5)
            .collect();
        let lengths = [9, 1, 5, 9, 7];
        let threads = Threads::new(2, &crate::seq::ScopedThreads);
        let all = beam_search_batch(
            &logp,
            (batch, frames, classes),
            &lengths,
            (2, 6, 3),
            threads,
        );
        assert_eq!(all.len(), batch);
        for (b, got) in all.iter().enumerate() {
            let rows = &logp[b * frames * classes..];
            assert_eq!(got, &beam_search(rows, lengths[b], classes, 2, 6, 3));
        }
    }
}
