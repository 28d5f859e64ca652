//! Hugging Face GPT-2 directories: a tiny random GPT-2 made by transformers at test time is
//! imported with the same logits, searched like any env, and saved pruned as a directory that
//! transformers reloads with fewer heads and the same logits.

use crate::common;
use autoprune::model::hf;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The fixtures in a folder of their own (`tag`: one per test, as tests run in parallel).
fn fixtures(tag: &str) -> std::path::PathBuf {
    common::export_fixtures("gpt2.py", tag, &["make".into()])
}

fn ids(dir: &Path) -> Tensor {
    let values: Vec<i64> = common::read_f32(&dir.join("ids.f32"))
        .iter()
        .map(|&v| v as i64)
        .collect();
    Tensor::from_slice(&values).view([2, 24])
}

/// Largest difference between our logits for `model` and transformers' in `file`.
fn difference(model: &Path, ids: &Tensor, file: &Path) -> f64 {
    let gpt = hf::read(model, 24, 256).unwrap();
    let net = gpt.load(model, Device::Cpu).unwrap();
    let ours = tch::no_grad(|| net.forward_t(ids, false));
    let theirs = Tensor::from_slice(&common::read_f32(file)).view([2, 24, 256]);
    assert!(f64::try_from(theirs.abs().max()).unwrap() > 0.1);
    f64::try_from((ours.to_kind(Kind::Float) - theirs).abs().max()).unwrap()
}

#[test]
fn a_gpt2_directory_imports_with_its_logits() {
    let dir = fixtures("gpt2-import");
    let ids = ids(&dir);
    let diff = difference(&dir.join("gpt2"), &ids, &dir.join("gpt2.logits.f32"));
    assert!(diff < 1e-4, "logits differ by {diff}");
    // A directory whose heads were pruned: layer 0 keeps heads 0 and 3.
    let pruned = hf::read(&dir.join("gpt2-pruned"), 24, 256).unwrap();
    assert_eq!(pruned.layout.heads, vec![2, 4]);
    assert_eq!(pruned.head_ids[0], vec![0, 3]);
    let diff = difference(
        &dir.join("gpt2-pruned"),
        &ids,
        &dir.join("gpt2-pruned.logits.f32"),
    );
    assert!(diff < 1e-4, "logits differ by {diff}");
    // A vocabulary that is not the data's is refused, naming the key.
    let err = hf::read(&dir.join("gpt2"), 24, 300)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size"), "{err}");
    let err = hf::read(&dir.join("gpt2"), 100, 256)
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_positions"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_pruned_gpt2_saves_as_a_directory_transformers_reloads() {
    let dir = fixtures("gpt2-save");
    let work = tempfile::tempdir().unwrap();
    let text = work.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    let corpus = common::repo().join("data/shakespeare");
    for name in ["train.txt", "val.txt", "test.txt"] {
        let bytes = std::fs::read(corpus.join(name)).unwrap();
        std::fs::write(text.join(name), &bytes[..8_000]).unwrap();
    }
    let env_for = |model: &Path, file: &str| {
        let mut table: toml::Table =
            std::fs::read_to_string(common::repo().join("envs/shakespeare-gpt.toml"))
                .unwrap()
                .parse()
                .unwrap();
        let mut spec = toml::Table::new();
        spec.insert("arch".into(), "hf-gpt2".into());
        spec.insert("path".into(), model.to_str().unwrap().into());
        table.insert("model".into(), spec.into());
        let data = table["data"].as_table_mut().unwrap();
        data.insert("dir".into(), text.to_str().unwrap().into());
        data.insert("context".into(), 24.into());
        let path = work.path().join(file);
        std::fs::write(&path, table.to_string()).unwrap();
        path
    };
    let env = env_for(&dir.join("gpt2"), "env.toml");
    let env = env.to_str().unwrap();
    let policy = work.path().join("policy.json");
    let out = common::run(&[
        "baseline",
        "--env",
        env,
        "--method",
        "uniform",
        "--out",
        policy.to_str().unwrap(),
        "--json",
    ]);
    common::success_json(&out);
    let saved = work.path().join("pruned");
    let out = common::run(&[
        "apply",
        "--env",
        env,
        "--policy",
        policy.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
        "--json",
    ]);
    let applied = common::success_json(&out);
    // transformers reloads it: half the heads in every layer, the MLP at full width.
    let reload = common::export_fixtures(
        "gpt2.py",
        "gpt2-reload",
        &["logits".into(), saved.to_str().unwrap().into()],
    );
    std::fs::copy(dir.join("ids.f32"), reload.join("ids.f32")).unwrap();
    let shapes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reload.join("reloaded.json")).unwrap()).unwrap();
    assert_eq!(shapes["heads"], serde_json::json!([2, 2]));
    assert_eq!(shapes["mlp"], serde_json::json!([128, 128]));
    // The same logits as autoprune reading the directory back ...
    let diff = difference(&saved, &ids(&dir), &reload.join("reloaded.logits.f32"));
    assert!(diff < 1e-4, "logits differ by {diff}");
    // ... which is the pruned model autoprune scored.
    let env2 = env_for(&saved, "pruned.toml");
    let out = common::run(&["evaluate", "--env", env2.to_str().unwrap(), "--json"]);
    let evaluated = common::success_json(&out);
    let (a, b) = (
        applied["loss"].as_f64().unwrap(),
        evaluated["loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-5,
        "the saved model scores {b}, the pruned one {a}"
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(reload).unwrap();
}
