//! Reading a node's attributes: kernel windows, strides, pads, and the ones a supported op
//! must not set.

use super::*;

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

/// A window attribute with the same value on both axes (`strides`), or `default`.
pub(super) fn window_attr(
    attrs: &Attributes,
    name: &str,
    default: usize,
) -> std::result::Result<usize, String> {
    match attrs.ints(name).as_deref() {
        None | Some([]) => Ok(default),
        Some(&[a, b]) if a == b && a >= 1 && (a as usize) <= MAX_WINDOW => Ok(a as usize),
        Some(other) => Err(format!(
            "{name} {other:?} is not supported; only equal values on H and W"
        )),
    }
}

/// The square kernel: from `kernel_shape`, or from the weight's dims.
pub(super) fn square(
    attrs: &Attributes,
    name: &str,
    weight: Option<[i64; 2]>,
) -> std::result::Result<usize, String> {
    let dims = attrs.ints(name).or(weight.map(|w| w.to_vec()));
    match dims.as_deref() {
        Some(&[a, b]) if a == b && a >= 1 && (a as usize) <= MAX_WINDOW => Ok(a as usize),
        Some(other) => Err(format!(
            "{name} {other:?} is not supported; only square 2-D windows"
        )),
        None => Err(format!("{name} is missing")),
    }
}

/// A conv's or pool's (kernel, stride, padding): square, symmetric, no dilation, explicit
/// padding.
pub(super) fn window(
    attrs: &Attributes,
    weight: Option<[i64; 2]>,
) -> std::result::Result<(usize, usize, usize), String> {
    let kernel = square(attrs, "kernel_shape", weight)?;
    let stride = window_attr(attrs, "strides", 1)?;
    let padding = pads(attrs)?;
    ones(attrs, "dilations")?;
    no_auto_pad(attrs)?;
    Ok((kernel, stride, padding))
}

/// Symmetric padding, the same on every side.
pub(super) fn pads(attrs: &Attributes) -> std::result::Result<usize, String> {
    match attrs.ints("pads").as_deref() {
        None | Some([]) => Ok(0),
        Some(&[a, b, c, d])
            if a == b && b == c && c == d && a >= 0 && (a as usize) <= MAX_WINDOW =>
        {
            Ok(a as usize)
        }
        Some(other) => Err(format!(
            "pads {other:?} are not supported; only the same padding on every side"
        )),
    }
}

pub(super) fn ones(attrs: &Attributes, name: &str) -> std::result::Result<(), String> {
    match attrs.ints(name) {
        Some(v) if v.iter().any(|&d| d != 1) => {
            Err(format!("{name} {v:?} are not supported; only 1"))
        }
        _ => Ok(()),
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
