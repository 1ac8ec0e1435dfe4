//! The README's main example: it learns the task to the stated accuracy, saves weights that
//! reload, and writes a PNG plot.

use candle_nn::{VarBuilder, VarMap};
use gru_support::demo::{make_data, plot, train, Classifier, TrainConfig};
use rand::SeedableRng;

#[test]
fn training_reaches_the_stated_accuracy() {
    // The README's run, exactly: the default configuration (about 10 s on 2 cores).
    let cfg = TrainConfig::default();
    let mut lines = 0;
    let report = train(&cfg, |e| {
        lines += 1;
        println!(
            "epoch {} loss {:.4} train {:.3} test {:.3}",
            e.epoch, e.loss, e.train_accuracy, e.test_accuracy
        );
    })
    .unwrap();
    assert_eq!(lines, cfg.epochs);
    let first = report.epochs[0];
    let last = *report.epochs.last().unwrap();
    assert!(
        last.loss < 0.5 * first.loss,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    // Chance is 1/3; the README states >= 95% held-out accuracy.
    assert!(
        last.test_accuracy >= 0.95,
        "test accuracy {}",
        last.test_accuracy
    );

    // Saved weights reload into a fresh model that gives the same held-out predictions.
    let dir = std::env::temp_dir().join(format!("candle-gru-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("classifier.safetensors");
    report.varmap.save(&weights).unwrap();
    let mut vm = VarMap::new();
    let fresh = Classifier::new(
        &cfg,
        VarBuilder::from_varmap(&vm, candle_core::DType::F32, &cfg.device),
    )
    .unwrap();
    vm.load(&weights).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(123);
    let data = make_data(64, &mut rng, &cfg.device).unwrap();
    let a = report
        .model
        .logits(&data.tokens, &data.mask, false)
        .unwrap();
    let b = fresh.logits(&data.tokens, &data.mask, false).unwrap();
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );

    // The Keras 3 model the example writes (classifier.keras) computes the same logits from
    // the token ids alone (its Embedding's mask_zero is the mask), before and after a save.
    let keras = report.model.keras_model().unwrap();
    let path = dir.join("classifier.keras");
    keras.save(&path).unwrap();
    let read = gru_candle::io::keras::KerasModel::load(&path, candle_core::DType::F32, &cfg.device)
        .unwrap();
    for m in [&keras, &read] {
        let c = m.call(&data.tokens, None).unwrap().remove(0);
        let diff = (&c - &a).unwrap().abs().unwrap().flatten_all().unwrap();
        let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "Keras model logits differ by {diff}");
    }

    // The plot is a PNG of the expected size.
    let png = dir.join("training.png");
    plot::write_png(&report.epochs, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 720);
}

#[test]
fn the_task_labels_count_after_the_last_reset() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let d = make_data(200, &mut rng, &candle_core::Device::Cpu).unwrap();
    let tokens: Vec<Vec<u32>> = d.tokens.to_vec2().unwrap();
    let labels: Vec<u32> = d.labels.to_vec1().unwrap();
    let mask: Vec<Vec<u8>> = d.mask.to_vec2().unwrap();
    for ((t, l), m) in tokens.iter().zip(&labels).zip(&mask) {
        let len = m.iter().filter(|&&v| v == 1).count();
        assert!(t[len..].iter().all(|&v| v == 0) && t[..len].iter().all(|&v| v != 0));
        let start = t[..len].iter().rposition(|&v| v == 4).map_or(0, |p| p + 1);
        let count = |k: u32| t[start..len].iter().filter(|&&v| v == k).count();
        let c = [count(1), count(2), count(3)];
        assert_eq!(
            c.iter().filter(|&&x| x == c[*l as usize]).count(),
            1,
            "a unique maximum"
        );
        assert_eq!(*c.iter().max().unwrap(), c[*l as usize]);
    }
}
