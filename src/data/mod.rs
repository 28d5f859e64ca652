//! Data sets: readers for the files users have (IDX for MNIST / Fashion-MNIST, CIFAR-10
//! binary batches), a synthetic set for fast tests, deterministic train/val/test splits, and
//! batching on the device.
//!
//! Must not know about models.

mod cifar;
mod idx;
mod text;

pub use cifar::read_cifar_batch;
pub use idx::{decode_maybe_gz, parse_idx, read_idx, IdxArray};
pub use text::VOCAB;

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The data sets the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    FashionMnist,
    Mnist,
    Cifar10,
    Synthetic,
    /// A byte-level text corpus (`train.txt`, `val.txt`, `test.txt`), for language models.
    Text,
}

impl DatasetKind {
    /// Shape of one sample: an image's `[C, H, W]`, or the `[context]` bytes of a text
    /// window.
    pub fn input_shape(self, context: usize) -> Vec<usize> {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist => vec![1, 28, 28],
            DatasetKind::Cifar10 => vec![3, 32, 32],
            DatasetKind::Synthetic => SYNTHETIC_SHAPE.to_vec(),
            DatasetKind::Text => vec![context],
        }
    }

    /// Classes, or a language model's vocabulary (bytes).
    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Synthetic => SYNTHETIC_CLASSES,
            DatasetKind::Text => VOCAB,
            _ => 10,
        }
    }

    /// Whether samples are token sequences (a language model's) rather than images.
    pub fn is_text(self) -> bool {
        self == DatasetKind::Text
    }

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Text => "text",
        }
    }
}

/// Which split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitName {
    Train,
    Val,
    Test,
}

/// One split on the device: normalised images `[N, C, H, W]` (float) and labels `[N]` (int64).
#[derive(Debug)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mini-batches in order, or shuffled by `rng`.
    pub fn batches(&self, batch_size: usize, rng: Option<&mut StdRng>) -> Batches<'_> {
        let mut order: Vec<i64> = (0..self.len() as i64).collect();
        if let Some(rng) = rng {
            order.shuffle(rng);
        }
        Batches {
            split: self,
            order,
            batch_size: batch_size.max(1),
            next: 0,
        }
    }

    /// The first `n` samples (a view, no copy).
    pub fn head(&self, n: usize) -> Split {
        self.window(0, n)
    }

    /// `n` samples from `start` on, cut to what the split holds (a view, no copy).
    pub fn window(&self, start: usize, n: usize) -> Split {
        let start = start.min(self.len());
        let n = n.min(self.len() - start) as i64;
        Split {
            images: self.images.narrow(0, start as i64, n),
            labels: self.labels.narrow(0, start as i64, n),
        }
    }
}

/// Iterator over `(images, labels)` mini-batches of a [`Split`].
pub struct Batches<'a> {
    split: &'a Split,
    order: Vec<i64>,
    batch_size: usize,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let device = self.split.images.device();
        let index = Tensor::from_slice(&self.order[self.next..end]).to_device(device);
        self.next = end;
        Some((
            self.split.images.index_select(0, &index),
            self.split.labels.index_select(0, &index),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// A data set loaded onto a device, split into train, validation and test.
#[derive(Debug)]
pub struct Dataset {
    pub kind: DatasetKind,
    /// Shape of one image, `[C, H, W]`.
    pub shape: Vec<usize>,
    pub classes: usize,
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

impl Dataset {
    pub fn split(&self, name: SplitName) -> &Split {
        match name {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }
}

/// Images and labels in memory, before normalisation and splitting.
#[derive(Debug, Clone)]
pub struct RawImages {
    pub shape: [usize; 3],
    pub pixels: Vec<f32>,
    pub labels: Vec<u8>,
}

impl RawImages {
    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// How to load a data set.
#[derive(Debug, Clone)]
pub struct DataOptions {
    pub kind: DatasetKind,
    pub dir: PathBuf,
    /// Samples carved from train for validation (class-balanced, chosen by `seed`); for
    /// text, the most validation windows kept.
    pub val_size: usize,
    pub seed: u64,
    /// Bytes per window of a text corpus (0 for images).
    pub context: usize,
}

/// How [`load`] splits and normalises the training images: the indices (into the training
/// file) of the training and validation samples, and the per-channel mean and standard
/// deviation every image is normalised with. A model trained outside autoprune should train on
/// `train` only and normalise its inputs the same way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SplitPlan {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The split and normalisation [`load`] uses for `options` (MNIST, Fashion-MNIST, CIFAR-10).
pub fn split_plan(options: &DataOptions) -> Result<SplitPlan> {
    let train = match options.kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist => read_idx_pair(&options.dir, "train")?,
        DatasetKind::Cifar10 => read_cifar_dir(&options.dir)?.0,
        DatasetKind::Synthetic => synthetic(SYNTHETIC_TRAIN, 7),
        DatasetKind::Text => {
            return Err(Error::data(
                &options.dir,
                "a text corpus is split by file (train.txt, val.txt, test.txt) and not normalised: there is no split plan",
            ))
        }
    };
    check_val_size(options, train.len())?;
    let (mean, std) = channel_stats(&train);
    let (train_index, val_index) = stratified_split(&train.labels, options.val_size, options.seed);
    Ok(SplitPlan {
        train: train_index,
        val: val_index,
        mean,
        std,
    })
}

fn check_val_size(options: &DataOptions, train: usize) -> Result<()> {
    if options.val_size >= train {
        return Err(Error::Invalid {
            path: options.dir.clone(),
            key: "data.val_size".into(),
            message: format!(
                "{} leaves no training data ({train} training samples); use a smaller value",
                options.val_size,
            ),
        });
    }
    Ok(())
}

/// Loads a data set and puts it on `device`.
pub fn load(options: &DataOptions, device: Device) -> Result<Dataset> {
    if options.kind.is_text() {
        return text::load(options, device);
    }
    let (train, test, classes) = match options.kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let train = read_idx_pair(&options.dir, "train")?;
            let test = read_idx_pair(&options.dir, "t10k")?;
            (train, test, 10)
        }
        DatasetKind::Cifar10 => read_cifar_dir(&options.dir)?,
        DatasetKind::Synthetic => (
            synthetic(SYNTHETIC_TRAIN, 7),
            synthetic(500, 8),
            SYNTHETIC_CLASSES,
        ),
        DatasetKind::Text => unreachable!("text corpora load above"),
    };
    if train.shape.to_vec() != options.kind.input_shape(0) || test.shape != train.shape {
        return Err(Error::data(
            &options.dir,
            format!(
                "images are {:?} (train) and {:?} (test), but {} images are {:?}",
                train.shape,
                test.shape,
                options.kind.name(),
                options.kind.input_shape(0)
            ),
        ));
    }
    check_val_size(options, train.len())?;
    let (mean, std) = channel_stats(&train);
    let (train_index, val_index) = stratified_split(&train.labels, options.val_size, options.seed);
    let to_split = |raw: &RawImages, index: Option<&[usize]>| -> Split {
        let [c, h, w] = raw.shape;
        let per = c * h * w;
        let chosen: Vec<usize> = match index {
            Some(index) => index.to_vec(),
            None => (0..raw.len()).collect(),
        };
        let mut pixels = Vec::with_capacity(chosen.len() * per);
        let mut labels = Vec::with_capacity(chosen.len());
        for &i in &chosen {
            for channel in 0..c {
                let plane = &raw.pixels[i * per + channel * h * w..i * per + (channel + 1) * h * w];
                pixels.extend(plane.iter().map(|&v| (v - mean[channel]) / std[channel]));
            }
            labels.push(i64::from(raw.labels[i]));
        }
        Split {
            images: Tensor::from_slice(&pixels)
                .view([chosen.len() as i64, c as i64, h as i64, w as i64])
                .to_device(device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    };
    Ok(Dataset {
        kind: options.kind,
        shape: train.shape.to_vec(),
        classes,
        train: to_split(&train, Some(&train_index)),
        val: to_split(&train, Some(&val_index)),
        test: to_split(&test, None),
    })
}

/// Finds `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` in `dir`.
fn read_idx_pair(dir: &Path, prefix: &str) -> Result<RawImages> {
    let find = |stem: String| -> Result<PathBuf> {
        let plain = dir.join(&stem);
        let gz = dir.join(format!("{stem}.gz"));
        if gz.is_file() {
            Ok(gz)
        } else if plain.is_file() {
            Ok(plain)
        } else {
            Err(Error::data(
                gz,
                "missing data file (neither it nor its un-gzipped form exists); run `make setup` to create the bundled data sets, or point [data] dir at a folder holding the IDX files",
            ))
        }
    };
    let images_path = find(format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    let shape = match images.dims.as_slice() {
        [_, h, w] => [1, *h, *w],
        [_, c, h, w] => [*c, *h, *w],
        dims => {
            return Err(Error::data(
                &images_path,
                format!("image file has dimensions {dims:?}; expected [N, H, W] or [N, C, H, W]"),
            ))
        }
    };
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(Error::data(
            &labels_path,
            format!(
                "label file has dimensions {:?} but the image file holds {} images",
                labels.dims, images.dims[0]
            ),
        ));
    }
    if let Some(bad) = labels.values.iter().find(|&&l| l > 9) {
        return Err(Error::data(
            &labels_path,
            format!("label {bad} is out of range 0-9"),
        ));
    }
    Ok(RawImages {
        shape,
        pixels: images
            .values
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect(),
        labels: labels.values,
    })
}

/// Reads `data_batch_1.bin` … `data_batch_5.bin` (those present, at least one) and
/// `test_batch.bin` from `dir`.
fn read_cifar_dir(dir: &Path) -> Result<(RawImages, RawImages, usize)> {
    let mut train = RawImages {
        shape: [3, 32, 32],
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for i in 1..=5 {
        let path = dir.join(format!("data_batch_{i}.bin"));
        if i > 1 && !path.exists() {
            continue;
        }
        let (pixels, labels) = read_cifar_batch(&path)?;
        train
            .pixels
            .extend(pixels.iter().map(|&v| f32::from(v) / 255.0));
        train.labels.extend(labels);
    }
    let (pixels, labels) = read_cifar_batch(&dir.join("test_batch.bin"))?;
    let test = RawImages {
        shape: [3, 32, 32],
        pixels: pixels.iter().map(|&v| f32::from(v) / 255.0).collect(),
        labels,
    };
    Ok((train, test, 10))
}

/// Classes in the synthetic set.
pub const SYNTHETIC_CLASSES: usize = 4;
/// Training samples of the synthetic set.
pub const SYNTHETIC_TRAIN: usize = 2_000;
/// Shape of a synthetic image.
pub const SYNTHETIC_SHAPE: [usize; 3] = [1, 8, 8];

/// A synthetic set: each class is a fixed random 8×8 pattern (the same for every call), each
/// sample its class's pattern plus Gaussian-like noise drawn from `seed`. Learnable in a few
/// hundred steps by a small MLP, yet not trivially (the noise overlaps the classes a little).
pub fn synthetic(samples: usize, seed: u64) -> RawImages {
    let per: usize = SYNTHETIC_SHAPE.iter().product();
    let mut pattern_rng = StdRng::seed_from_u64(0x5eed);
    let patterns: Vec<Vec<f32>> = (0..SYNTHETIC_CLASSES)
        .map(|_| (0..per).map(|_| pattern_rng.random::<f32>()).collect())
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(samples * per);
    let mut labels = Vec::with_capacity(samples);
    for i in 0..samples {
        let label = i % SYNTHETIC_CLASSES;
        for &p in &patterns[label] {
            // Sum of uniforms: cheap, bounded, roughly normal noise.
            let noise: f32 = (0..3).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 0.6;
            pixels.push((p + noise).clamp(0.0, 1.0));
        }
        labels.push(label as u8);
    }
    RawImages {
        shape: SYNTHETIC_SHAPE,
        pixels,
        labels,
    }
}

/// Per-channel mean and standard deviation of pixel values.
fn channel_stats(raw: &RawImages) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = raw.shape;
    let plane = h * w;
    let mut mean = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for (i, &v) in raw.pixels.iter().enumerate() {
        let channel = (i / plane) % c;
        mean[channel] += f64::from(v);
        sq[channel] += f64::from(v) * f64::from(v);
    }
    let count = (raw.len() * plane).max(1) as f64;
    let mean: Vec<f64> = mean.iter().map(|m| m / count).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / count - m * m).max(1e-12)).sqrt() as f32)
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// Splits sample indices into (train, val) with `val_size` validation samples, each class
/// represented in proportion to its share (largest remainder), chosen at random by `seed`.
/// Both lists come back sorted.
pub fn stratified_split(labels: &[u8], val_size: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let total = labels.len().max(1);
    let exact: Vec<f64> = by_class
        .iter()
        .map(|c| val_size as f64 * c.len() as f64 / total as f64)
        .collect();
    let mut quota: Vec<usize> = exact.iter().map(|q| q.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..classes).collect();
    by_remainder.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let mut missing = val_size.saturating_sub(quota.iter().sum());
    for &class in by_remainder.iter().cycle().take(classes * 2) {
        if missing == 0 {
            break;
        }
        if quota[class] < by_class[class].len() {
            quota[class] += 1;
            missing -= 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (class, mut indices) in by_class.into_iter().enumerate() {
        indices.shuffle(&mut rng);
        val.extend_from_slice(&indices[..quota[class]]);
        train.extend_from_slice(&indices[quota[class]..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
