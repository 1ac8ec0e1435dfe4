//! PyTorch state_dicts holding several GRUs (a whole model's), `batch_first=False`, and
//! batches packed by their lengths (`pack_padded_sequence`), against PyTorch
//! (tests/data/torch, made by scripts/make_torch_model_cases.py).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_gru::candle::io::torch::TorchGru;
use candle_gru::candle::{Error, FileProblem};
use common::{flat, max_diff};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/torch")
        .join(name)
}

fn case() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("seq2seq.json")).unwrap()).unwrap()
}

/// A nested JSON array as an f32 tensor.
fn tensor(v: &Value) -> Tensor {
    fn walk(v: &Value, values: &mut Vec<f32>, shape: &mut Vec<usize>, depth: usize) {
        match v.as_array() {
            Some(a) => {
                if shape.len() == depth {
                    shape.push(a.len());
                }
                a.iter().for_each(|x| walk(x, values, shape, depth + 1));
            }
            None => values.push(v.as_f64().unwrap() as f32),
        }
    }
    let (mut values, mut shape) = (Vec::new(), Vec::new());
    walk(v, &mut values, &mut shape, 0);
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn close(ours: &Tensor, want: &Value, what: &str) {
    let want = tensor(want);
    assert_eq!(ours.dims(), want.dims(), "{what}");
    let err = max_diff(&flat(ours), &flat(&want));
    println!("{what}: max error {err:.1e}");
    assert!(err < 1e-5, "{what}: max error {err:.2e}");
}

#[test]
fn a_whole_models_grus_load_by_prefix_and_run_packed_and_time_first_as_pytorch() {
    let c = case();
    let file = data("seq2seq.safetensors");
    assert_eq!(TorchGru::prefixes(&file).unwrap(), ["decoder.", "encoder."]);
    let mut encoder = TorchGru::load_prefix(&file, "encoder.", DType::F32, &Device::Cpu).unwrap();
    let mut decoder = TorchGru::load_prefix(&file, "decoder.", DType::F32, &Device::Cpu).unwrap();
    assert_eq!((encoder.num_layers, encoder.bidirectional), (2, true));
    encoder.batch_first = false;
    decoder.batch_first = false;
    let lengths: Vec<usize> = serde_json::from_value(c["lengths"].clone()).unwrap();
    let (out, h_n) = encoder
        .forward_packed(&tensor(&c["inputs"]), &lengths, None)
        .unwrap();
    close(&out, &c["encoder_output"], "encoder output");
    close(&h_n, &c["encoder_h_n"], "encoder h_n");
    let (out, h_n) = decoder
        .forward(
            &tensor(&c["decoder_inputs"]),
            Some(&tensor(&c["decoder_h0"])),
        )
        .unwrap();
    close(&out, &c["decoder_output"], "decoder output");
    close(&h_n, &c["decoder_h_n"], "decoder h_n");
}

#[test]
fn packing_matters_and_bad_lengths_or_prefixes_are_typed_errors() {
    let c = case();
    let file = data("seq2seq.safetensors");
    let mut encoder = TorchGru::load_prefix(&file, "encoder.", DType::F32, &Device::Cpu).unwrap();
    encoder.batch_first = false;
    let x = tensor(&c["inputs"]);
    // Run unpacked, the padded steps change the backward direction and h_n.
    let (_, h_n) = encoder.forward(&x, None).unwrap();
    let want = tensor(&c["encoder_h_n"]);
    assert!(max_diff(&flat(&h_n), &flat(&want)) > 1e-3);
    for bad in [vec![7, 3], vec![7, 0, 5], vec![7, 8, 5]] {
        match encoder.forward_packed(&x, &bad, None) {
            Err(Error::Gru(e)) => assert!(e.to_string().contains("lengths"), "{e}"),
            other => panic!("{bad:?}: expected a typed error, got {other:?}"),
        }
    }
    // The file holds two GRUs: loading without a prefix names them; a wrong prefix too.
    match TorchGru::load(&file, DType::F32, &Device::Cpu) {
        Err(Error::File {
            problem: FileProblem::Unsupported(what),
            ..
        }) => assert!(
            what.contains("encoder.") && what.contains("load_prefix"),
            "{what}"
        ),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match TorchGru::load_prefix(&file, "bridge.", DType::F32, &Device::Cpu) {
        Err(Error::File {
            problem: FileProblem::Missing(what),
            ..
        }) => assert!(what.contains("bridge.weight_ih_l0"), "{what}"),
        other => panic!("expected Missing, got {other:?}"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candle-gru-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn layers_written_as_a_pytorch_state_dict_read_back_to_the_same_gru() {
    use candle_gru::candle::io::export::{save_torch, save_torch_stack};
    use candle_gru::candle::io::keras::{KerasModel, ModelLayer};
    // PyTorch -> here -> PyTorch's layout: the same encoder, bit for bit.
    let c = case();
    let file = data("seq2seq.safetensors");
    let encoder = TorchGru::load_prefix(&file, "encoder.", DType::F32, &Device::Cpu).unwrap();
    let written = scratch("encoder.safetensors");
    save_torch_stack(encoder.stack(), "gru.", &written).unwrap();
    let again = TorchGru::load(&written, DType::F32, &Device::Cpu).unwrap();
    let x = tensor(&c["inputs"]).transpose(0, 1).unwrap();
    let lengths: Vec<usize> = serde_json::from_value(c["lengths"].clone()).unwrap();
    let (a, ha) = encoder.forward_packed(&x, &lengths, None).unwrap();
    let (b, hb) = again.forward_packed(&x, &lengths, None).unwrap();
    assert_eq!((flat(&a), flat(&ha)), (flat(&b), flat(&hb)));
    // A Keras Bidirectional(GRU, concat) as a PyTorch bidirectional nn.GRU.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models");
    let keras = KerasModel::load(
        &models.join("bidirectional_concat_seq.keras"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let bi = keras
        .layers
        .iter()
        .find_map(|(_, l)| match l {
            ModelLayer::Bidirectional(b) => Some(b),
            _ => None,
        })
        .unwrap();
    let written = scratch("bidirectional.safetensors");
    save_torch(
        &[(bi.forward_layer(), Some(bi.backward_layer()))],
        "",
        &written,
    )
    .unwrap();
    let torch = TorchGru::load(&written, DType::F32, &Device::Cpu).unwrap();
    let x = common::model_case_inputs("bidirectional_concat_seq");
    let keras_out = bi.call(&x, None, None, false).unwrap().outputs;
    let (torch_out, _) = torch.forward(&x, None).unwrap();
    assert!(max_diff(&flat(&keras_out[0]), &flat(&torch_out)) < 1e-6);
    // Forms PyTorch lacks are refused by name: reset_before, two hidden sizes.
    let reset_before = KerasModel::load(
        &models.join("reset_before_go_backwards.keras"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let stacked = KerasModel::load(
        &models.join("stacked_gru_dense.keras"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    for (m, key) in [(&reset_before, "reset_after"), (&stacked, "units")] {
        match save_torch(&grus(m), "", &scratch("refused.safetensors")) {
            Err(Error::Gru(e)) => assert!(e.to_string().contains(key), "{e}"),
            other => panic!("expected a typed error naming {key}, got {other:?}"),
        }
    }
}

/// The GRU layers of a model, each a one-direction layer.
fn grus(
    m: &candle_gru::candle::io::keras::KerasModel,
) -> Vec<(&candle_gru::Gru, Option<&candle_gru::Gru>)> {
    use candle_gru::candle::io::keras::ModelLayer;
    m.layers
        .iter()
        .filter_map(|(_, l)| match l {
            ModelLayer::Gru(g) => Some((&**g, None)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pytorch_gru_fine_tunes_here_and_goes_back_to_pytorch() {
    use candle_gru::candle::io::export::save_torch_stack;
    use candle_gru::candle::io::torch::TorchLoad;
    use candle_nn::{Optimizer, VarMap, SGD};
    let c = case();
    let file = data("seq2seq.safetensors");
    let varmap = VarMap::new();
    let opts = TorchLoad {
        prefix: Some("encoder."),
        vars: Some(&varmap),
    };
    let mut encoder = TorchGru::load_with(&file, DType::F32, &Device::Cpu, opts).unwrap();
    encoder.batch_first = false;
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names.len(),
        12,
        "2 layers x 2 directions x (kernel, recurrent_kernel, bias)"
    );
    assert_eq!(names[0], "encoder.l0.bias");
    let x = tensor(&c["inputs"]);
    let lengths: Vec<usize> = serde_json::from_value(c["lengths"].clone()).unwrap();
    let run = |m: &TorchGru| m.forward_packed(&x, &lengths, None).unwrap().0;
    let before = flat(&run(&encoder));
    let mut sgd = SGD::new(varmap.all_vars(), 0.5).unwrap();
    for _ in 0..3 {
        let loss = run(&encoder).sqr().unwrap().mean_all().unwrap();
        sgd.backward_step(&loss).unwrap();
    }
    let after = flat(&run(&encoder));
    assert!(max_diff(&before, &after) > 1e-3, "training moved nothing");
    // Written for PyTorch and read back: the tuned weights.
    let written = scratch("tuned.safetensors");
    save_torch_stack(encoder.stack(), "", &written).unwrap();
    let mut again = TorchGru::load(&written, DType::F32, &Device::Cpu).unwrap();
    again.batch_first = false;
    assert_eq!(flat(&run(&again)), after);
}

fn cell_case() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data("cell_decoder.json")).unwrap()).unwrap()
}

/// Steps the case's decoder with `cell` and `aux`: (cell states, aux states), (5, 3, h).
fn decode(cell: &candle_gru::GruCell, aux: &candle_gru::GruCell) -> (Tensor, Tensor) {
    let c = cell_case();
    let sd =
        candle_core::safetensors::load(data("cell_decoder.safetensors"), &Device::Cpu).unwrap();
    let (w, b) = (&sd["out.weight"], &sd["out.bias"]);
    let (mut x, mut h) = (tensor(&c["x0"]), tensor(&c["h0"]));
    let mut g = aux.initial_state(3).unwrap();
    let (mut hs, mut gs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        h = cell.call(&x, &h, false).unwrap();
        g = aux.call(&h, &g, false).unwrap();
        x = h
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(b)
            .unwrap()
            .tanh()
            .unwrap();
        hs.push(h.clone());
        gs.push(g.clone());
    }
    (
        Tensor::stack(&hs, 0).unwrap(),
        Tensor::stack(&gs, 0).unwrap(),
    )
}

#[test]
fn pytorch_gru_cells_step_as_pytorch_steps_them() {
    use candle_gru::candle::io::torch::TorchLoad;
    use candle_gru::GruCell;
    let path = data("cell_decoder.safetensors");
    let load =
        |prefix| GruCell::load_torch(&path, DType::F32, &Device::Cpu, TorchLoad::prefixed(prefix));
    let (cell, aux) = (load("cell.").unwrap(), load("aux.").unwrap());
    assert!(cell.bias().is_some() && aux.bias().is_none());
    assert_eq!(
        (cell.input_dim(), cell.config().units, aux.config().units),
        (7, 6, 4)
    );
    let c = cell_case();
    let (hs, gs) = decode(&cell, &aux);
    let (eh, eg) = (
        max_diff(&flat(&hs), &flat(&tensor(&c["cell_states"]))),
        max_diff(&flat(&gs), &flat(&tensor(&c["aux_states"]))),
    );
    println!("cell states {eh:.2e}, aux states {eg:.2e}");
    assert!(eh < 1e-6 && eg < 1e-6, "{eh} {eg}");
    // Written back as nn.GRUCell state_dicts, read again: the same steps.
    let dir = std::env::temp_dir().join(format!("gru-cell-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    cell.save_torch("cell.", &dir.join("cell.safetensors"))
        .unwrap();
    aux.save_torch("", &dir.join("aux.safetensors")).unwrap();
    let cell2 = GruCell::load_torch(
        &dir.join("cell.safetensors"),
        DType::F32,
        &Device::Cpu,
        TorchLoad::default(),
    )
    .unwrap();
    let aux2 = GruCell::load_torch(
        &dir.join("aux.safetensors"),
        DType::F32,
        &Device::Cpu,
        TorchLoad::default(),
    )
    .unwrap();
    let (hs2, gs2) = decode(&cell2, &aux2);
    assert_eq!((flat(&hs2), flat(&gs2)), (flat(&hs), flat(&gs)));
    // A trainable load: every weight a Var of the map.
    let vars = candle_nn::VarMap::new();
    let opts = TorchLoad {
        prefix: Some("cell."),
        vars: Some(&vars),
    };
    let trainable = GruCell::load_torch(&path, DType::F32, &Device::Cpu, opts).unwrap();
    assert!(trainable.weights().iter().all(|w| w.is_variable()));
    assert_eq!(vars.all_vars().len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn files_without_one_clear_gru_cell_are_typed_errors() {
    use candle_gru::candle::io::torch::TorchLoad;
    use candle_gru::{GruCell, GruCellConfig};
    let file_problem = |r: candle_gru::candle::Result<GruCell>| match r {
        Err(Error::File { problem, .. }) => problem,
        other => panic!("expected a file error, got {other:?}"),
    };
    // Two cells and no prefix: the error lists them.
    let p = file_problem(GruCell::load_torch(
        &data("cell_decoder.safetensors"),
        DType::F32,
        &Device::Cpu,
        TorchLoad::default(),
    ));
    assert!(
        matches!(&p, FileProblem::Unsupported(w) if w.contains("\"aux.\"") && w.contains("\"cell.\"")),
        "{p:?}"
    );
    // An nn.GRU's state_dict holds no cell.
    let p = file_problem(GruCell::load_torch(
        &data("seq2seq.safetensors"),
        DType::F32,
        &Device::Cpu,
        TorchLoad::default(),
    ));
    assert!(
        matches!(&p, FileProblem::Missing(w) if w.contains("weight_ih")),
        "{p:?}"
    );
    // An LSTMCell's shapes (4h rows).
    let mut t = std::collections::HashMap::new();
    t.insert(
        "weight_ih".to_string(),
        Tensor::zeros((16, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "weight_hh".to_string(),
        Tensor::zeros((16, 4), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = file_problem(GruCell::from_torch_tensors(
        "lstm",
        &t,
        DType::F32,
        &Device::Cpu,
        TorchLoad::default(),
    ));
    assert!(
        matches!(&p, FileProblem::Unsupported(w) if w.contains("LSTMCell")),
        "{p:?}"
    );
    // A Keras form PyTorch has no cell for.
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let before = GruCell::new(
        GruCellConfig {
            reset_after: false,
            ..GruCellConfig::new(3)
        },
        2,
        vb,
    )
    .unwrap();
    let e = before
        .save_torch("", &std::env::temp_dir().join("never.safetensors"))
        .unwrap_err();
    assert!(e.to_string().contains("reset_after"), "{e}");
}

/// candle-nn's `rnn::gru` names its variables as PyTorch does (`weight_ih_l0` ...): a
/// checkpoint of it loads with `TorchGru`, runs what candle-nn runs, and its layer's cell
/// steps what candle-nn's `RNN::step` steps.
#[test]
fn candle_nn_gru_checkpoints_load_and_step_as_candle_nn_runs_them() {
    use candle_gru::candle::StackLayer;
    use candle_nn::rnn::RNN;
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let theirs = candle_nn::rnn::gru(5, 7, Default::default(), vb.pp("decoder.gru")).unwrap();
    // Non-zero biases, so that both are checked.
    for (name, var) in vm.data().lock().unwrap().iter() {
        if name.contains("bias") {
            var.set(&Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let path =
        std::env::temp_dir().join(format!("candle-nn-gru-{}.safetensors", std::process::id()));
    vm.save(&path).unwrap();
    let ours = TorchGru::load_prefix(&path, "decoder.gru.", DType::F32, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).ok();
    let x = Tensor::randn(0f32, 1.0, (3, 6, 5), &Device::Cpu).unwrap();
    let want = theirs.states_to_tensor(&theirs.seq(&x).unwrap()).unwrap();
    let (got, _) = ours.forward(&x, None).unwrap();
    assert!(max_diff(&flat(&got), &flat(&want)) < 1e-6);
    let StackLayer::Gru(layer) = &ours.stack().layers()[0] else {
        panic!("one direction")
    };
    let cell = layer.cell().unwrap();
    let (mut h, mut s) = (
        cell.initial_state(3).unwrap(),
        theirs.zero_state(3).unwrap(),
    );
    for t in 0..6 {
        let xt = x.get_on_dim(1, t).unwrap();
        h = cell.call(&xt, &h, false).unwrap();
        s = theirs.step(&xt, &s).unwrap();
        assert!(max_diff(&flat(&h), &flat(&s.h)) < 1e-6, "step {t}");
    }
}
