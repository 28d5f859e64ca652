//! Transformer builders of the zoo: a GPT-2-style language model and a Vision Transformer. Node names follow
//! Hugging Face's GPT-2 (`h.0.attn.c_proj`), with the fused query-key-value projection
//! split into `q`, `k` and `v`.

use crate::error::{Error, Result};
use crate::graph::{Activation, GraphBuilder, ModelGraph, Op, Shape};
use petgraph::graph::NodeIndex;

/// GPT-2's LayerNorm epsilon.
const LN_EPS: f64 = 1e-5;

/// The size of a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptShape {
    /// Token ids (256 for bytes).
    pub vocab: usize,
    /// Positions per sequence.
    pub context: usize,
    pub layers: usize,
    pub heads: usize,
    /// Residual width, a multiple of `heads`.
    pub width: usize,
    /// MLP hidden neurons per residual channel (4 in GPT-2).
    pub mlp_ratio: usize,
}

/// A GPT-2-style decoder: token and position embeddings; `layers` pre-LayerNorm blocks, each
/// causal multi-head attention (`q`, `k`, `v`, attention, `c_proj`) and a GELU MLP (`c_fc`,
/// `c_proj`) added into the residual stream; a final LayerNorm; the LM head tied to the
/// token embedding. Input: `[context]` token ids; output: `[vocab, context]` logits.
pub fn gpt(shape: &GptShape) -> Result<ModelGraph> {
    let GptShape {
        vocab,
        context,
        layers,
        heads,
        width,
        mlp_ratio,
    } = *shape;
    let mut b = GraphBuilder::new();
    let input = b.add(
        "input",
        Op::Input {
            shape: vec![context],
        },
        &[],
    );
    let tokens = b.add("wte", Op::Embedding { vocab, width }, &[input]);
    let x = b.add(
        "wpe",
        Op::PosEmbedding {
            tokens: context,
            width,
        },
        &[tokens],
    );
    let x = blocks(
        &mut b,
        x,
        &Blocks {
            layers,
            heads,
            width,
            mlp_ratio,
            causal: true,
        },
    );
    let x = norm(&mut b, "ln_f", x, width);
    let head = Op::LmHead {
        vocab,
        width,
        embedding: "wte".into(),
    };
    let logits = b.add("lm_head", head, &[x]);
    b.add("output", Op::Output, &[logits]);
    b.build()
}

/// The repeated part of a transformer.
struct Blocks {
    layers: usize,
    heads: usize,
    width: usize,
    mlp_ratio: usize,
    causal: bool,
}

fn linear(b: &mut GraphBuilder, name: String, x: NodeIndex, i: usize, o: usize) -> NodeIndex {
    let op = Op::Linear {
        in_features: i,
        out_features: o,
        bias: true,
    };
    b.add(name, op, &[x])
}

fn norm(b: &mut GraphBuilder, name: impl Into<String>, x: NodeIndex, width: usize) -> NodeIndex {
    let op = Op::LayerNorm {
        features: width,
        eps: LN_EPS,
    };
    b.add(name, op, &[x])
}

/// Pre-LayerNorm blocks `h.0 ..`: multi-head attention (`q`, `k`, `v`, attention, `c_proj`)
/// and a GELU MLP (`c_fc`, `c_proj`), each added into the residual stream `x`.
fn blocks(b: &mut GraphBuilder, mut x: NodeIndex, shape: &Blocks) -> NodeIndex {
    let Blocks {
        layers,
        heads,
        width,
        mlp_ratio,
        causal,
    } = *shape;
    for l in 0..layers {
        let p = format!("h.{l}");
        let h = norm(b, format!("{p}.ln_1"), x, width);
        let q = linear(b, format!("{p}.attn.q"), h, width, width);
        let k = linear(b, format!("{p}.attn.k"), h, width, width);
        let v = linear(b, format!("{p}.attn.v"), h, width, width);
        let attention = Op::Attention {
            heads,
            head_dim: width / heads,
            causal,
        };
        let a = b.add(format!("{p}.attn.attention"), attention, &[q, k, v]);
        let a = linear(b, format!("{p}.attn.c_proj"), a, width, width);
        x = b.add(format!("{p}.add_1"), Op::Add, &[x, a]);
        let h = norm(b, format!("{p}.ln_2"), x, width);
        let hidden = width * mlp_ratio;
        let h = linear(b, format!("{p}.mlp.c_fc"), h, width, hidden);
        let act = Op::Act {
            act: Activation::GeluTanh,
        };
        let h = b.add(format!("{p}.mlp.gelu"), act, &[h]);
        let h = linear(b, format!("{p}.mlp.c_proj"), h, hidden, width);
        x = b.add(format!("{p}.add_2"), Op::Add, &[x, h]);
    }
    x
}

/// The size of a ViT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitShape {
    /// Side of a square patch; it must divide the image's height and width.
    pub patch: usize,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    pub mlp_ratio: usize,
}

/// A Vision Transformer: the patch embedding (a conv with kernel and stride `patch`), the
/// patches as tokens after a learned class token, learned positions, `layers` non-causal
/// pre-LayerNorm blocks, a final LayerNorm, and the classifier on the class token.
pub fn vit(input: &Shape, classes: usize, shape: &VitShape) -> Result<ModelGraph> {
    let VitShape {
        patch,
        layers,
        heads,
        width,
        mlp_ratio,
    } = *shape;
    let [channels, h, w] = input[..] else {
        return Err(Error::graph(
            "input",
            format!("a ViT reads [C, H, W] images, not {input:?}"),
        ));
    };
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(Error::graph(
            "patch_embed",
            format!("patch size {patch} must divide the {h}x{w} image"),
        ));
    }
    let mut b = GraphBuilder::new();
    let x = b.add(
        "input",
        Op::Input {
            shape: input.clone(),
        },
        &[],
    );
    let conv = Op::Conv2d {
        in_channels: channels,
        out_channels: width,
        kernel: patch.into(),
        stride: patch.into(),
        padding: 0.into(),
        dilation: 1.into(),
        groups: 1,
        bias: true,
    };
    let x = b.add("patch_embed", conv, &[x]);
    let x = b.add("tokens", Op::ToTokens, &[x]);
    let x = b.add("cls_token", Op::ClassToken { width }, &[x]);
    let tokens = (h / patch) * (w / patch) + 1;
    let x = b.add("pos_embed", Op::PosEmbedding { tokens, width }, &[x]);
    let x = blocks(
        &mut b,
        x,
        &Blocks {
            layers,
            heads,
            width,
            mlp_ratio,
            causal: false,
        },
    );
    let x = norm(&mut b, "norm", x, width);
    let x = b.add("cls", Op::TakeToken { index: 0 }, &[x]);
    let logits = linear(&mut b, "head".into(), x, width, classes);
    b.add("output", Op::Output, &[logits]);
    b.build()
}
