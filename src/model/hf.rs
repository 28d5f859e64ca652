//! Hugging Face GPT-2 directories (`config.json` and `model.safetensors`, as
//! `GPT2LMHeadModel.save_pretrained` writes them): read into a GPT graph with its weights,
//! and written back from a pruned model.
//!
//! GPT-2 stores its projections as `Conv1D` weights, `[in, out]` (transposed against a linear
//! layer's `[out, in]`), and fuses queries, keys and values into one `c_attn` of `3 · heads ·
//! head_dim` columns; the LM head is tied to `wte`. Heads removed with `prune_heads` are named
//! in the config's `pruned_heads` (per layer, by their original index), and the remaining ones
//! keep their order; transformers 4.x rebuilds the smaller layers from it. MLP neurons cannot
//! be removed that way (`n_inner` is one number for every layer), so pruned neurons, and
//! unstructured sparsity, are written as zeros.

use super::transformer::{gpt_layout, GptLayout};
use super::GraphNet;
use crate::error::{Error, Result};
use crate::graph::{Activation, ModelGraph};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The `config.json` keys autoprune reads; the others are carried through unchanged.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    n_positions: usize,
    vocab_size: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    activation_function: String,
    #[serde(default)]
    pruned_heads: BTreeMap<String, Vec<usize>>,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    add_cross_attention: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

fn yes() -> bool {
    true
}

/// A GPT-2 directory as autoprune understands it.
#[derive(Debug, Clone)]
pub struct HfGpt2 {
    /// `config.json` as read, written back with the new `pruned_heads`.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub layout: GptLayout,
    /// Per layer, the original index of each head present, in order.
    pub head_ids: Vec<Vec<usize>>,
}

fn bad(dir: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        path: dir.join("config.json"),
        key: key.into(),
        message: message.into(),
    }
}

/// Reads `dir/config.json` for a model reading `context` tokens of a `vocab`-id data set.
pub fn read(dir: &Path, context: usize, vocab: usize) -> Result<HfGpt2> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let raw: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("not a JSON object: {e}")))?;
    let config: Config = serde_json::from_value(raw.clone().into())
        .map_err(|e| Error::data(&path, format!("not a GPT-2 config: {e}")))?;
    let act = match config.activation_function.as_str() {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "silu" | "swish" => Activation::Silu,
        other => {
            return Err(bad(
                dir,
                "activation_function",
                format!("{other} is not supported; use gelu_new, gelu or silu"),
            ))
        }
    };
    let unsupported = [
        (
            !config.tie_word_embeddings,
            "tie_word_embeddings",
            "the LM head must be tied to wte",
        ),
        (
            !config.scale_attn_weights,
            "scale_attn_weights",
            "unscaled attention is not supported",
        ),
        (
            config.scale_attn_by_inverse_layer_idx,
            "scale_attn_by_inverse_layer_idx",
            "per-layer attention scaling is not supported",
        ),
        (
            config.add_cross_attention,
            "add_cross_attention",
            "cross-attention is not supported",
        ),
    ];
    if let Some((_, key, message)) = unsupported.iter().find(|(bad, ..)| *bad) {
        return Err(bad(dir, key, *message));
    }
    if config.n_head == 0 || !config.n_embd.is_multiple_of(config.n_head) {
        return Err(bad(
            dir,
            "n_head",
            format!(
                "{} heads do not divide n_embd {}",
                config.n_head, config.n_embd
            ),
        ));
    }
    if config.vocab_size != vocab {
        return Err(bad(
            dir,
            "vocab_size",
            format!("{} ids, but the data set's are {vocab} (bytes); the model must read the data's tokens", config.vocab_size),
        ));
    }
    if config.n_positions < context {
        return Err(bad(
            dir,
            "n_positions",
            format!(
                "{} positions, fewer than the data's context {context}; lower [data] context",
                config.n_positions
            ),
        ));
    }
    let mut head_ids = Vec::with_capacity(config.n_layer);
    for l in 0..config.n_layer {
        let pruned: BTreeSet<usize> = config
            .pruned_heads
            .get(&l.to_string())
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        if pruned.iter().any(|&h| h >= config.n_head) {
            return Err(bad(
                dir,
                "pruned_heads",
                format!("layer {l} names a head beyond n_head {}", config.n_head),
            ));
        }
        head_ids.push(
            (0..config.n_head)
                .filter(|h| !pruned.contains(h))
                .collect::<Vec<_>>(),
        );
    }
    let layout = GptLayout {
        vocab,
        context,
        positions: config.n_positions,
        width: config.n_embd,
        heads: head_ids.iter().map(Vec::len).collect(),
        head_dim: config.n_embd / config.n_head,
        hidden: config.n_inner.unwrap_or(4 * config.n_embd),
        act,
        eps: config.layer_norm_epsilon,
    };
    Ok(HfGpt2 {
        config: raw,
        layout,
        head_ids,
    })
}

impl HfGpt2 {
    pub fn graph(&self) -> Result<ModelGraph> {
        gpt_layout(&self.layout)
    }

    /// The model with the directory's weights, on `device`.
    pub fn load(&self, dir: &Path, device: Device) -> Result<GraphNet> {
        let path = dir.join("model.safetensors");
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
            .map_err(|e| Error::data(&path, format!("cannot read the weights: {e}")))?
            .into_iter()
            .map(|(name, t)| {
                (
                    name.strip_prefix("transformer.")
                        .unwrap_or(&name)
                        .to_string(),
                    t,
                )
            })
            .collect();
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .map(|t| t.to_kind(Kind::Float))
                .ok_or_else(|| Error::Checkpoint {
                    path: path.clone(),
                    tensor: name.into(),
                    message: "is missing".into(),
                })
        };
        let net = GraphNet::new(self.graph()?, device);
        let vars = net.var_store().variables();
        let mut values: Vec<(String, Tensor)> = Vec::new();
        for name in ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] {
            values.push((name.into(), get(name)?));
        }
        for (l, heads) in self.layout.heads.iter().enumerate() {
            let p = format!("h.{l}");
            let inner = (heads * self.layout.head_dim) as i64;
            for part in ["ln_1", "ln_2"] {
                for t in ["weight", "bias"] {
                    values.push((format!("{p}.{part}.{t}"), get(&format!("{p}.{part}.{t}"))?));
                }
            }
            let (w, b) = (
                get(&format!("{p}.attn.c_attn.weight"))?,
                get(&format!("{p}.attn.c_attn.bias"))?,
            );
            for (i, x) in ["q", "k", "v"].iter().enumerate() {
                let start = i as i64 * inner;
                values.push((
                    format!("{p}.attn.{x}.weight"),
                    w.narrow(1, start, inner).t_copy(),
                ));
                values.push((format!("{p}.attn.{x}.bias"), b.narrow(0, start, inner)));
            }
            for conv in ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"] {
                values.push((
                    format!("{p}.{conv}.weight"),
                    get(&format!("{p}.{conv}.weight"))?.t_copy(),
                ));
                values.push((
                    format!("{p}.{conv}.bias"),
                    get(&format!("{p}.{conv}.bias"))?,
                ));
            }
        }
        let _guard = tch::no_grad_guard();
        for (name, value) in values {
            let target = &vars[&name];
            if target.size() != value.size() {
                return Err(Error::Checkpoint {
                    path: path.clone(),
                    tensor: name,
                    message: format!(
                        "has shape {:?}, config.json implies {:?}",
                        value.size(),
                        target.size()
                    ),
                });
            }
            target.shallow_clone().copy_(&value.to_device(device));
        }
        Ok(net)
    }
}

/// Writes `net` (a GPT graph with the zoo's node names, pruned by masks, full size) as a
/// GPT-2 directory that transformers 4.x loads: heads not in `kept[l]` (indices among layer
/// `l`'s heads) are removed through `pruned_heads`; everything else keeps its shape, zeros
/// included. `source`: the directory the model came from, whose config is carried over.
pub fn save(
    net: &GraphNet,
    kept: &[Vec<usize>],
    source: Option<&HfGpt2>,
    dir: &Path,
) -> Result<()> {
    let graph = net.graph();
    let vars = net.var_store().variables();
    let shape = |name: &str| graph.find(name).map(|i| graph.node(i).op.clone());
    let layers = kept.len();
    let (
        Some(crate::graph::Op::Embedding { vocab, width }),
        Some(crate::graph::Op::PosEmbedding { tokens, .. }),
    ) = (shape("wte"), shape("wpe"))
    else {
        return Err(Error::graph(
            "wte",
            "a GPT-2 directory needs the zoo's GPT layout (wte, wpe, h.N, ln_f)",
        ));
    };
    let mut named: Vec<(String, Tensor)> = Vec::new();
    let var = |name: &str| -> Result<Tensor> {
        vars.get(name)
            .map(|t| t.detach().to_device(Device::Cpu))
            .ok_or_else(|| {
                Error::graph(
                    name,
                    "a GPT-2 directory needs this tensor; the model is not the zoo's GPT layout",
                )
            })
    };
    for name in ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"] {
        named.push((format!("transformer.{name}"), var(name)?));
    }
    let mut pruned_heads = serde_json::Map::new();
    let (mut n_head, mut head_dim, mut hidden, mut eps, mut act) = (0, 0, 0, 1e-5, "gelu_new");
    for (l, keep) in kept.iter().enumerate() {
        let p = format!("h.{l}");
        let Some(crate::graph::Op::Attention {
            heads, head_dim: d, ..
        }) = shape(&format!("{p}.attn.attention"))
        else {
            return Err(Error::graph(
                format!("{p}.attn.attention"),
                "a GPT-2 directory needs the zoo's GPT layout",
            ));
        };
        head_dim = d;
        let ids: Vec<usize> = source
            .map(|s| s.head_ids[l].clone())
            .unwrap_or_else(|| (0..heads).collect());
        n_head = source
            .map(|s| s.config["n_head"].as_u64().unwrap_or(0) as usize)
            .unwrap_or(heads);
        let mut gone: Vec<usize> = (0..n_head).filter(|h| !ids.contains(h)).collect();
        gone.extend((0..heads).filter(|h| !keep.contains(h)).map(|h| ids[h]));
        gone.sort_unstable();
        if !gone.is_empty() {
            pruned_heads.insert(l.to_string(), serde_json::json!(gone));
        }
        let rows: Vec<i64> = keep
            .iter()
            .flat_map(|&h| (h * d..(h + 1) * d).map(|c| c as i64))
            .collect();
        let rows = Tensor::from_slice(&rows);
        let pick =
            |name: &str, dim: i64| -> Result<Tensor> { Ok(var(name)?.index_select(dim, &rows)) };
        let weights = ["q", "k", "v"].map(|x| pick(&format!("{p}.attn.{x}.weight"), 0));
        let biases = ["q", "k", "v"].map(|x| pick(&format!("{p}.attn.{x}.bias"), 0));
        let [wq, wk, wv] = weights;
        let [bq, bk, bv] = biases;
        named.push((
            format!("transformer.{p}.attn.c_attn.weight"),
            Tensor::cat(&[wq?, wk?, wv?], 0).t_copy(),
        ));
        named.push((
            format!("transformer.{p}.attn.c_attn.bias"),
            Tensor::cat(&[bq?, bk?, bv?], 0),
        ));
        named.push((
            format!("transformer.{p}.attn.c_proj.weight"),
            pick(&format!("{p}.attn.c_proj.weight"), 1)?.t_copy(),
        ));
        named.push((
            format!("transformer.{p}.attn.c_proj.bias"),
            var(&format!("{p}.attn.c_proj.bias"))?,
        ));
        for conv in ["mlp.c_fc", "mlp.c_proj"] {
            named.push((
                format!("transformer.{p}.{conv}.weight"),
                var(&format!("{p}.{conv}.weight"))?.t_copy(),
            ));
            named.push((
                format!("transformer.{p}.{conv}.bias"),
                var(&format!("{p}.{conv}.bias"))?,
            ));
        }
        for part in ["ln_1", "ln_2"] {
            for t in ["weight", "bias"] {
                named.push((
                    format!("transformer.{p}.{part}.{t}"),
                    var(&format!("{p}.{part}.{t}"))?,
                ));
            }
        }
        if let Some(crate::graph::Op::Linear { out_features, .. }) = shape(&format!("{p}.mlp.c_fc"))
        {
            hidden = out_features;
        }
        if let Some(crate::graph::Op::LayerNorm { eps: e, .. }) = shape(&format!("{p}.ln_1")) {
            eps = e;
        }
        if let Some(crate::graph::Op::Act { act: a }) = shape(&format!("{p}.mlp.gelu")) {
            act = match a {
                Activation::Gelu => "gelu",
                Activation::Silu => "silu",
                _ => "gelu_new",
            };
        }
    }
    let mut config = source.map(|s| s.config.clone()).unwrap_or_default();
    let values = [
        ("model_type", serde_json::json!("gpt2")),
        ("architectures", serde_json::json!(["GPT2LMHeadModel"])),
        ("n_layer", serde_json::json!(layers)),
        ("n_head", serde_json::json!(n_head)),
        ("n_embd", serde_json::json!(width)),
        ("n_positions", serde_json::json!(tokens)),
        ("vocab_size", serde_json::json!(vocab)),
        ("n_inner", serde_json::json!(hidden)),
        ("layer_norm_epsilon", serde_json::json!(eps)),
        ("activation_function", serde_json::json!(act)),
        ("tie_word_embeddings", serde_json::json!(true)),
        ("pruned_heads", serde_json::Value::Object(pruned_heads)),
    ];
    for (key, value) in values {
        config.insert(key.into(), value);
    }
    debug_assert!(head_dim > 0);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::data(dir, format!("cannot encode config.json: {e}")))?;
    crate::fsio::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Float).contiguous()))
        .collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    super::checkpoint::save_tensors_with(&named, &dir.join("model.safetensors"), &metadata)
}
