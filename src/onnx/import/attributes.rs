//! Reading a node's attributes: kernel windows, strides, pads, and the ones a supported op
//! must not set.

use super::*;
use crate::graph::Hw;

pub(super) struct Attributes<'a> {
    pub(super) node: &'a NodeProto,
}

impl<'a> Attributes<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    pub(super) fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }
    pub(super) fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }
    pub(super) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub(super) fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// A conv's or pool's window: kernel, stride and dilation per axis, and padding per side.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) kernel: Hw,
    pub(super) stride: Hw,
    pub(super) dilation: Hw,
    /// Top, left, bottom, right.
    pub(super) pads: [usize; 4],
}

impl Window {
    /// The padding when it is the same on both sides of each axis.
    pub(super) fn symmetric(&self) -> Option<Hw> {
        let [t, l, b, r] = self.pads;
        (t == b && l == r).then_some(Hw { h: t, w: l })
    }
}

/// A 2-D attribute (`strides`, `dilations`, `kernel_shape`), or `default`.
fn pair(attrs: &Attributes, name: &str, default: Option<Hw>) -> std::result::Result<Hw, String> {
    match attrs.ints(name).as_deref() {
        None | Some([]) => default.ok_or_else(|| format!("{name} is missing")),
        Some(&[h, w])
            if h >= 1 && w >= 1 && (h as usize) <= MAX_WINDOW && (w as usize) <= MAX_WINDOW =>
        {
            Ok(Hw {
                h: h as usize,
                w: w as usize,
            })
        }
        Some(other) => Err(format!(
            "{name} {other:?} is not supported; only 2-D windows of sizes 1 to {MAX_WINDOW}"
        )),
    }
}

/// A conv's or pool's window; the kernel from `kernel_shape`, or else the weight's dims.
pub(super) fn window(
    attrs: &Attributes,
    weight: Option<[i64; 2]>,
) -> std::result::Result<Window, String> {
    let from_weight = weight.and_then(|[h, w]| {
        (h >= 1 && w >= 1 && (h as usize) <= MAX_WINDOW && (w as usize) <= MAX_WINDOW).then_some(
            Hw {
                h: h as usize,
                w: w as usize,
            },
        )
    });
    let kernel = pair(attrs, "kernel_shape", from_weight)?;
    if weight.is_some() && Some(kernel) != from_weight {
        return Err(format!(
            "kernel_shape {kernel} does not match the weight's {weight:?}"
        ));
    }
    no_auto_pad(attrs)?;
    Ok(Window {
        kernel,
        stride: pair(attrs, "strides", Some(Hw::square(1)))?,
        dilation: pair(attrs, "dilations", Some(Hw::square(1)))?,
        pads: pads(attrs)?,
    })
}

/// Padding per side, ONNX's `[top, left, bottom, right]`.
pub(super) fn pads(attrs: &Attributes) -> std::result::Result<[usize; 4], String> {
    match attrs.ints("pads").as_deref() {
        None | Some([]) => Ok([0; 4]),
        Some(&[t, l, b, r])
            if [t, l, b, r]
                .iter()
                .all(|&p| p >= 0 && (p as usize) <= MAX_WINDOW) =>
        {
            Ok([t as usize, l as usize, b as usize, r as usize])
        }
        Some(other) => Err(format!(
            "pads {other:?} are not supported; only 4 values (top, left, bottom, right) from 0 to {MAX_WINDOW}"
        )),
    }
}

pub(super) fn no_auto_pad(attrs: &Attributes) -> std::result::Result<(), String> {
    match attrs.string("auto_pad").as_deref() {
        None | Some("") | Some("NOTSET") => Ok(()),
        Some(other) => Err(format!(
            "auto_pad {other} is not supported; export with explicit pads"
        )),
    }
}
