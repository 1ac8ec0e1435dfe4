//! The order Keras 3 runs a functional model's calls in (`Function._run_through_graph`
//! over `map_graph`'s `nodes_by_depth`): it decides which calls see a tensor's mask
//! before a `MultiHeadAttention` removes it (Keras keeps masks on tensor objects, and that
//! layer clears the masks of the tensors it takes).
//!
//! `_build_map` walks back from the outputs, depth first, through each call's tensor
//! arguments (positional ones in order, then keyword ones by sorted name); `map_graph`
//! gives each call the largest distance to an output over the calls that take its
//! outputs (a layer's calls at least its deepest earlier one), and lists the calls of
//! each depth in the order it first met them; the model runs the deepest first. Calls no
//! output depends on do not run.

use super::graph::{Node, Source};
use std::collections::HashMap;

/// The calls of `nodes` in the order Keras runs them, from the calls that make
/// `outputs`.
pub(super) fn keras_run_order(nodes: &[Node], outputs: &[usize]) -> Vec<usize> {
    let decreasing = build_map(nodes, outputs);
    let mut depths = Depths::default();
    let mut layer_depth: HashMap<usize, usize> = HashMap::new();
    for &n in decreasing.iter().rev() {
        let own = depths.get(n).unwrap_or(0);
        let layer = nodes[n].layer;
        let depth = own.max(layer_depth.get(&layer).copied().unwrap_or(0));
        layer_depth.insert(layer, depth);
        depths.set(n, depth);
        for parent in parents(&nodes[n]) {
            if decreasing.contains(&parent) {
                let previous = depths.get(parent).unwrap_or(0);
                depths.set(parent, (depth + 1).max(previous));
            }
        }
    }
    let deepest = depths.list.iter().map(|&(_, d)| d).max().unwrap_or(0);
    (0..=deepest)
        .rev()
        .flat_map(|d| {
            let list = &depths.list;
            list.iter()
                .filter(move |&&(_, nd)| nd == d)
                .map(|&(n, _)| n)
        })
        .collect()
}

/// Each call's depth, in the order calls were first given one (a Python dict's order).
#[derive(Default)]
struct Depths {
    list: Vec<(usize, usize)>,
    at: HashMap<usize, usize>,
}

impl Depths {
    fn get(&self, n: usize) -> Option<usize> {
        self.at.get(&n).map(|&i| self.list[i].1)
    }

    fn set(&mut self, n: usize, depth: usize) {
        match self.at.get(&n) {
            Some(&i) => self.list[i].1 = depth,
            None => {
                self.at.insert(n, self.list.len());
                self.list.push((n, depth));
            }
        }
    }
}

/// The calls whose outputs a call takes, in Keras' order of its tensor arguments.
fn parents(node: &Node) -> impl Iterator<Item = usize> + '_ {
    node.call.tensors.iter().filter_map(|s| match *s {
        Source::Node { node, .. } => Some(node),
        Source::ModelInput(_) => None,
    })
}

/// `_build_map`: the calls the outputs depend on, each after the calls it takes.
fn build_map(nodes: &[Node], outputs: &[usize]) -> Vec<usize> {
    let mut finished = vec![false; nodes.len()];
    let mut out = Vec::new();
    // An explicit stack: (call, next argument to visit).
    for &o in outputs {
        let mut stack = vec![(o, 0usize)];
        while let Some(&mut (n, ref mut k)) = stack.last_mut() {
            if finished.get(n).copied().unwrap_or(true) {
                stack.pop();
                continue;
            }
            match parents(&nodes[n]).nth(*k) {
                Some(p) => {
                    *k += 1;
                    let on_stack = stack.iter().any(|&(s, _)| s == p);
                    if !on_stack {
                        stack.push((p, 0));
                    }
                }
                None => {
                    finished[n] = true;
                    out.push(n);
                    stack.pop();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::keras::graph::Inbound;

    /// A call of `layer` taking the first outputs of `parents` (none: a model input).
    fn call(layer: usize, parents: &[usize]) -> Node {
        let tensors: Vec<Source> = match parents {
            [] => vec![Source::ModelInput(0)],
            p => p
                .iter()
                .map(|&node| Source::Node { node, tensor: 0 })
                .collect(),
        };
        Node {
            layer,
            call: Inbound {
                sources: tensors.clone(),
                tensors,
                ..Inbound::default()
            },
        }
    }

    #[test]
    fn calls_run_deepest_first_and_in_keras_dict_order_within_a_depth() {
        // input -> masking -> gru -> (attention a, attention b), both model outputs: Keras
        // meets b's depth-0 call first when it walks back, so b runs before a.
        let nodes = [
            call(0, &[]),
            call(1, &[0]),
            call(2, &[1]),
            call(3, &[2]),
            call(4, &[2]),
        ];
        assert_eq!(keras_run_order(&nodes, &[3, 4]), [0, 1, 2, 4, 3]);
        // A diamond: the branches run in the order the join takes them.
        let nodes = [call(0, &[]), call(1, &[0]), call(2, &[0]), call(3, &[1, 2])];
        assert_eq!(keras_run_order(&nodes, &[3]), [0, 1, 2, 3]);
        // A call no output depends on does not run.
        let nodes = [call(0, &[]), call(1, &[0]), call(2, &[0])];
        assert_eq!(keras_run_order(&nodes, &[1]), [0, 1]);
        // A shared layer's later call is at least as deep as its earlier one.
        let nodes = [call(0, &[]), call(1, &[0]), call(2, &[1]), call(1, &[2])];
        assert_eq!(keras_run_order(&nodes, &[3]), [0, 1, 2, 3]);
    }
}
