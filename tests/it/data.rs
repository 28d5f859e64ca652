//! Data readers (IDX plain and gzipped, CIFAR-10 binary), the synthetic set and the splits,
//! on small files the tests write.

use autoprune::data::{self, DataOptions, DatasetKind};
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;
use tch::Device;

fn idx_bytes(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

fn write(path: &Path, bytes: &[u8], gz: bool) {
    if gz {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// Writes an MNIST-shaped IDX pair: `n` 28×28 images whose pixels all equal their label × 20.
fn write_mnist_like(dir: &Path, prefix: &str, n: usize, gz: bool) {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let pixels: Vec<u8> = labels
        .iter()
        .flat_map(|&l| std::iter::repeat_n(l * 20, 784))
        .collect();
    let ext = if gz { ".gz" } else { "" };
    write(
        &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
        &idx_bytes(&[n as u32, 28, 28], &pixels),
        gz,
    );
    write(
        &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        &idx_bytes(&[n as u32], &labels),
        gz,
    );
}

#[test]
fn idx_reads_plain_and_gzipped_alike() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    write(&dir.path().join("a.idx"), &bytes, false);
    write(&dir.path().join("a.idx.gz"), &bytes, true);
    let plain = data::read_idx(&dir.path().join("a.idx")).unwrap();
    let gz = data::read_idx(&dir.path().join("a.idx.gz")).unwrap();
    assert_eq!(plain, gz);
    assert_eq!(plain.dims, vec![2, 3]);
    assert_eq!(plain.values, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn idx_errors_say_what_is_wrong() {
    let truncated = idx_bytes(&[2, 3], &[1, 2, 3]);
    assert!(data::parse_idx(&truncated)
        .unwrap_err()
        .contains("truncated"));
    let mut floats = idx_bytes(&[1], &[0]);
    floats[2] = 0x0d;
    assert!(data::parse_idx(&floats).unwrap_err().contains("0x0d"));
    assert!(data::parse_idx(&[0, 0]).unwrap_err().contains("too short"));
    assert!(data::parse_idx(b"PK\x03\x04zip")
        .unwrap_err()
        .contains("not an IDX file"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gz");
    std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let err = data::read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("bad.gz") && err.contains("gzip"), "{err}");
}

#[test]
fn cifar_batches_read_records_and_refuse_partial_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = vec![7u8];
    record.extend((0..3072).map(|i| (i % 251) as u8));
    let mut two = record.clone();
    two[0] = 3;
    two.extend_from_slice(&record);
    let path = dir.path().join("data_batch_1.bin");
    std::fs::write(&path, &two).unwrap();
    let (pixels, labels) = data::read_cifar_batch(&path).unwrap();
    assert_eq!(labels, vec![3, 7]);
    assert_eq!(pixels.len(), 2 * 3072);
    assert_eq!(pixels[3072 + 10], 10);
    std::fs::write(&path, &two[..5000]).unwrap();
    let err = data::read_cifar_batch(&path).unwrap_err().to_string();
    assert!(
        err.contains("truncated") && err.contains("data_batch_1.bin"),
        "{err}"
    );
}

#[test]
fn cifar_folder_loads_into_splits() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let mut r = vec![(i % 10) as u8];
                r.extend(std::iter::repeat_n((i % 10) as u8 * 25, 3072));
                r
            })
            .collect()
    };
    std::fs::write(dir.path().join("data_batch_1.bin"), batch(40)).unwrap();
    std::fs::write(dir.path().join("data_batch_2.bin"), batch(20)).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), batch(10)).unwrap();
    let options = DataOptions {
        kind: DatasetKind::Cifar10,
        dir: dir.path().to_path_buf(),
        val_size: 10,
        seed: 1,
        context: 0,
    };
    let set = data::load(&options, Device::Cpu).unwrap();
    assert_eq!(
        (set.train.len(), set.val.len(), set.test.len()),
        (50, 10, 10)
    );
    assert_eq!(set.train.images.size(), vec![50, 3, 32, 32]);
    assert_eq!(set.classes, 10);
}

#[test]
fn mnist_folder_loads_normalised_with_a_balanced_val_split() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), "train", 200, true);
    write_mnist_like(dir.path(), "t10k", 50, false);
    let options = DataOptions {
        kind: DatasetKind::Mnist,
        dir: dir.path().to_path_buf(),
        val_size: 40,
        seed: 3,
        context: 0,
    };
    let set = data::load(&options, Device::Cpu).unwrap();
    assert_eq!(
        (set.train.len(), set.val.len(), set.test.len()),
        (160, 40, 50)
    );
    // Normalised with the training set's statistics: mean ~0, std ~1 over train+val.
    let all = tch::Tensor::cat(&[&set.train.images, &set.val.images], 0);
    assert!(f64::try_from(all.mean(tch::Kind::Float)).unwrap().abs() < 1e-4);
    assert!((f64::try_from(all.std(true)).unwrap() - 1.0).abs() < 1e-2);
    // Four of each label in val.
    let counts = set.val.labels.bincount::<tch::Tensor>(None, 10);
    assert_eq!(Vec::<i64>::try_from(counts).unwrap(), vec![4; 10]);
    // A batch carries images with their own labels.
    let (images, labels) = set.test.batches(7, None).next().unwrap();
    assert_eq!(images.size(), vec![7, 1, 28, 28]);
    let first = f64::try_from(images.get(3).mean(tch::Kind::Float)).unwrap();
    let other = f64::try_from(images.get(4).mean(tch::Kind::Float)).unwrap();
    assert_eq!(i64::try_from(labels.get(3)).unwrap(), 3);
    assert!(first < other, "label 3 images are darker than label 4 ones");
}

#[test]
fn missing_data_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let options = DataOptions {
        kind: DatasetKind::FashionMnist,
        dir: dir.path().join("nowhere"),
        val_size: 10,
        seed: 0,
        context: 0,
    };
    let err = data::load(&options, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("make setup"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn val_split_is_deterministic_by_seed_and_stratified() {
    let labels: Vec<u8> = (0..1000)
        .map(|i| if i < 700 { 0 } else { 1 + (i % 3) as u8 })
        .collect();
    let (train_a, val_a) = data::stratified_split(&labels, 100, 42);
    let (train_b, val_b) = data::stratified_split(&labels, 100, 42);
    let (_, val_c) = data::stratified_split(&labels, 100, 43);
    assert_eq!((train_a.clone(), val_a.clone()), (train_b, val_b));
    assert_ne!(val_a, val_c);
    assert_eq!(val_a.len(), 100);
    assert_eq!(train_a.len() + val_a.len(), 1000);
    let zeros = val_a.iter().filter(|&&i| labels[i] == 0).count();
    assert_eq!(
        zeros, 70,
        "class 0 holds 70% of the samples, so 70 of 100 val samples"
    );
    let mut all: Vec<usize> = train_a.iter().chain(&val_a).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..1000).collect::<Vec<_>>(),
        "train and val partition the indices"
    );
}

#[test]
fn synthetic_set_is_reproducible_and_balanced() {
    let a = data::synthetic(100, 5);
    let b = data::synthetic(100, 5);
    let c = data::synthetic(100, 6);
    assert_eq!(a.pixels, b.pixels);
    assert_ne!(a.pixels, c.pixels);
    assert_eq!(a.labels.iter().filter(|&&l| l == 0).count(), 25);
    assert!(a.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
}
