//! Byte-level text corpora: `train.txt`, `val.txt` and `test.txt` in one folder (setup
//! writes the Shakespeare corpus split by play into `data/shakespeare`), cut into windows of
//! `context` bytes. A sample is a window's bytes; its labels are the same window shifted by
//! one byte (the next byte at every position).
//!
//! Training windows start every `context / 2` bytes and are shuffled each epoch, so a model
//! sees every byte at two offsets; validation and test windows do not overlap (each byte
//! is predicted once), and validation keeps at most `val_size` of them, in order.

use super::{DataOptions, Dataset, DatasetKind, Split};
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Tensor};

/// Byte-level vocabulary.
pub const VOCAB: usize = 256;

/// Windows of `context` inputs (and the `context` next bytes as labels) starting every
/// `stride` bytes, at most `limit` of them.
fn windows(bytes: &[u8], context: usize, stride: usize, limit: usize, device: Device) -> Split {
    let starts: Vec<usize> = (0..bytes.len().saturating_sub(context))
        .step_by(stride.max(1))
        .take(limit)
        .collect();
    let mut inputs = Vec::with_capacity(starts.len() * context);
    let mut labels = Vec::with_capacity(starts.len() * context);
    for &s in &starts {
        inputs.extend(bytes[s..s + context].iter().map(|&b| i64::from(b)));
        labels.extend(bytes[s + 1..s + context + 1].iter().map(|&b| i64::from(b)));
    }
    let shape = [starts.len() as i64, context as i64];
    Split {
        images: Tensor::from_slice(&inputs).view(shape).to_device(device),
        labels: Tensor::from_slice(&labels).view(shape).to_device(device),
    }
}

fn read(dir: &Path, name: &str, context: usize) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::data(
            &path,
            format!("cannot read the text corpus ({e}); run `make setup` to create data/shakespeare, or point [data] dir at a folder with train.txt, val.txt and test.txt"),
        )
    })?;
    if bytes.len() <= context {
        return Err(Error::data(
            &path,
            format!(
                "holds {} bytes, not enough for one window of context {context} and its next byte",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Loads a text corpus, cut into windows of `options.context` bytes, onto `device`.
pub fn load(options: &DataOptions, device: Device) -> Result<Dataset> {
    let context = options.context;
    let [train, val, test] =
        ["train.txt", "val.txt", "test.txt"].map(|name| read(&options.dir, name, context));
    Ok(Dataset {
        kind: DatasetKind::Text,
        shape: vec![context],
        classes: VOCAB,
        train: windows(&train?, context, context / 2, usize::MAX, device),
        val: windows(&val?, context, context, options.val_size, device),
        test: windows(&test?, context, context, usize::MAX, device),
    })
}
