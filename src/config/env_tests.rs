//! Unit tests of env files: parsing, validation and the keys each arch takes.

use super::*;

/// An env of `arch` with `keys` in its `[model]` table.
fn env_text(arch: &str, keys: &str) -> String {
    format!(
        "name = \"n\"\n[model]\narch = \"{arch}\"\n{keys}\n[data]\ndataset = \"synthetic\"\nval_size = 400\n"
    )
}

fn parse(text: &str) -> Result<EnvSpec> {
    EnvSpec::parse(text, Path::new("env.toml"))
}

/// `path` only belongs to onnx models: on a zoo arch it is an error naming the key and
/// its line, never silently ignored.
macro_rules! path_is_refused {
    ($($test:ident: $arch:literal, $keys:literal;)*) => {$(
        #[test]
        fn $test() {
            let text = env_text($arch, concat!($keys, "\npath = \"model.onnx\""));
            let line = parse(&text).unwrap_err().to_string();
            assert!(line.contains("key `model.path`: unknown field `path`"), "{line}");
            let own = parse(&env_text($arch, $keys)).unwrap();
            assert_eq!(own.model.arch(), serde_json::from_value::<Arch>($arch.into()).unwrap());
        }
    )*};
}

path_is_refused! {
    mlp_refuses_path: "mlp", "hidden = [8]";
    lenet5_refuses_path: "lenet5", "";
    vgg_refuses_path: "vgg", "cfg = [8, \"M\"]";
    resnet_refuses_path: "resnet", "depth = 8";
    mobilenetv2_refuses_path: "mobilenetv2", "width = 0.5";
}

#[test]
fn keys_of_another_arch_and_checkpoints_on_onnx_are_refused() {
    let line = parse(&env_text("mlp", "depth = 20"))
        .unwrap_err()
        .to_string();
    assert!(line.contains("key `model.depth`"), "{line}");
    let line = parse(&env_text(
        "onnx",
        "path = \"m.onnx\"\ncheckpoint = \"c.safetensors\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(line.contains("key `model.checkpoint`"), "{line}");
    let line = parse(&env_text("onnx", "")).unwrap_err().to_string();
    assert!(line.contains("missing field `path`"), "{line}");
}

#[test]
fn defaults_and_ranges_of_the_zoo_keys() {
    let mlp = parse(&env_text("mlp", "")).unwrap();
    assert!(matches!(&mlp.model, ModelSpec::Mlp { hidden, .. } if hidden == &[300, 100]));
    let line = parse(&env_text("resnet", "depth = 21"))
        .unwrap_err()
        .to_string();
    assert!(
        line.contains("model.depth") && line.contains("6n+2"),
        "{line}"
    );
    let line = parse(&env_text("vgg", "cfg = [\"M\"]"))
        .unwrap_err()
        .to_string();
    assert!(line.contains("model.cfg"), "{line}");
    let line = parse(&env_text("prune", "")).unwrap_err().to_string();
    assert!(line.contains("unknown variant `prune`"), "{line}");
}

#[test]
fn an_unknown_criterion_is_a_parse_error_naming_the_choices() {
    let text = format!("{}[prune]\ngranularity = \"unstructured\"\ncriterion = \"size\"\ntarget = {{ metric = \"params\", keep = 0.5 }}\nkeep_bounds = [0.01, 1.0]\n", env_text("mlp", ""));
    let line = parse(&text).unwrap_err().to_string();
    assert!(
        line.contains("key `prune.criterion`") && line.contains("magnitude"),
        "{line}"
    );
}

#[test]
fn latency_budgets_need_channel_pruning_and_take_default_settings() {
    let prune = |granularity: &str| {
        format!("[prune]\ngranularity = \"{granularity}\"\ncriterion = \"l1\"\ntarget = {{ metric = \"latency\", keep = 0.5 }}\nkeep_bounds = [0.1, 1.0]\n")
    };
    let text = format!("{}{}", env_text("mlp", ""), prune("unstructured"));
    let line = parse(&text).unwrap_err().to_string();
    assert!(
        line.contains("key `prune.target.metric`") && line.contains("channel"),
        "{line}"
    );
    let spec = parse(&format!("{}{}", env_text("mlp", ""), prune("channel"))).unwrap();
    assert_eq!(spec.latency_settings(), Some(LatencySpec::default()));
    let text = format!(
        "{}{}[latency]\ngrid = 1\n",
        env_text("mlp", ""),
        prune("channel")
    );
    let line = parse(&text).unwrap_err().to_string();
    assert!(line.contains("key `latency.grid`"), "{line}");
    let text = format!("{}[latency]\nbatch = 100000\n", env_text("mlp", ""));
    let line = parse(&text).unwrap_err().to_string();
    assert!(line.contains("key `latency.batch`"), "{line}");
    assert_eq!(
        parse(&env_text("mlp", "")).unwrap().latency_settings(),
        None
    );
}
