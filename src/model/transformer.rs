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
    gpt_layout(&GptLayout {
        vocab: shape.vocab,
        context: shape.context,
        positions: shape.context,
        width: shape.width,
        heads: vec![shape.heads; shape.layers],
        head_dim: shape.width / shape.heads.max(1),
        hidden: shape.width * shape.mlp_ratio,
        act: Activation::GeluTanh,
        eps: LN_EPS,
    })
}

/// A GPT in full detail: what a Hugging Face GPT-2 directory describes (heads may differ
/// per layer once some were pruned).
#[derive(Debug, Clone, PartialEq)]
pub struct GptLayout {
    pub vocab: usize,
    /// Positions the model reads (the input's length).
    pub context: usize,
    /// Rows of the position embedding (at least `context`).
    pub positions: usize,
    pub width: usize,
    /// Heads of each layer.
    pub heads: Vec<usize>,
    pub head_dim: usize,
    /// MLP hidden neurons.
    pub hidden: usize,
    pub act: Activation,
    /// LayerNorm epsilon.
    pub eps: f64,
}

/// The graph of a [`GptLayout`] (node names as [`gpt`]'s).
pub fn gpt_layout(layout: &GptLayout) -> Result<ModelGraph> {
    let mut b = GraphBuilder::new();
    let input = b.add(
        "input",
        Op::Input {
            shape: vec![layout.context],
        },
        &[],
    );
    let (vocab, width) = (layout.vocab, layout.width);
    let tokens = b.add("wte", Op::Embedding { vocab, width }, &[input]);
    let position = Op::PosEmbedding {
        tokens: layout.positions,
        width,
    };
    let x = b.add("wpe", position, &[tokens]);
    let x = blocks(
        &mut b,
        x,
        &Blocks {
            heads: layout.heads.clone(),
            head_dim: layout.head_dim,
            width,
            hidden: layout.hidden,
            act: layout.act,
            eps: layout.eps,
            causal: true,
        },
    );
    let x = norm(&mut b, "ln_f", x, width, layout.eps);
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
    /// Heads of each layer (one entry per layer).
    heads: Vec<usize>,
    head_dim: usize,
    width: usize,
    hidden: usize,
    act: Activation,
    eps: f64,
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

fn norm(
    b: &mut GraphBuilder,
    name: impl Into<String>,
    x: NodeIndex,
    width: usize,
    eps: f64,
) -> NodeIndex {
    let op = Op::LayerNorm {
        features: width,
        eps,
    };
    b.add(name, op, &[x])
}

/// Pre-LayerNorm blocks `h.0 ..`: multi-head attention (`q`, `k`, `v`, attention, `c_proj`)
/// and an MLP (`c_fc`, activation, `c_proj`), each added into the residual stream `x`.
fn blocks(b: &mut GraphBuilder, mut x: NodeIndex, shape: &Blocks) -> NodeIndex {
    let (width, d, eps) = (shape.width, shape.head_dim, shape.eps);
    for (l, &heads) in shape.heads.iter().enumerate() {
        let p = format!("h.{l}");
        let h = norm(b, format!("{p}.ln_1"), x, width, eps);
        let inner = heads * d;
        let q = linear(b, format!("{p}.attn.q"), h, width, inner);
        let k = linear(b, format!("{p}.attn.k"), h, width, inner);
        let v = linear(b, format!("{p}.attn.v"), h, width, inner);
        let attention = Op::Attention {
            heads,
            head_dim: d,
            causal: shape.causal,
        };
        let a = b.add(format!("{p}.attn.attention"), attention, &[q, k, v]);
        let a = linear(b, format!("{p}.attn.c_proj"), a, inner, width);
        x = b.add(format!("{p}.add_1"), Op::Add, &[x, a]);
        let h = norm(b, format!("{p}.ln_2"), x, width, eps);
        let h = linear(b, format!("{p}.mlp.c_fc"), h, width, shape.hidden);
        let h = b.add(format!("{p}.mlp.gelu"), Op::Act { act: shape.act }, &[h]);
        let h = linear(b, format!("{p}.mlp.c_proj"), h, shape.hidden, width);
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
    let vit_blocks = Blocks {
        heads: vec![heads; layers],
        head_dim: width / heads.max(1),
        width,
        hidden: width * mlp_ratio,
        act: Activation::GeluTanh,
        eps: LN_EPS,
        causal: false,
    };
    let x = blocks(&mut b, x, &vit_blocks);
    let x = norm(&mut b, "norm", x, width, LN_EPS);
    let x = b.add("cls", Op::TakeToken { index: 0 }, &[x]);
    let logits = linear(&mut b, "head".into(), x, width, classes);
    b.add("output", Op::Output, &[logits]);
    b.build()
}
