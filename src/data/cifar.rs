//! CIFAR-10 binary batches: records of one label byte and 3,072 pixel bytes (3×32×32, RGB
//! planes), as in `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`.

use crate::error::{Error, Result};
use std::path::Path;

pub const RECORD: usize = 1 + 3 * 32 * 32;

/// Reads one batch file: (pixels, labels).
pub fn read_cifar_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::data(
            path,
            format!(
                "{} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each); the file is truncated or not a CIFAR-10 binary batch",
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(count * (RECORD - 1));
    let mut labels = Vec::with_capacity(count);
    for record in bytes.chunks_exact(RECORD) {
        if record[0] > 9 {
            return Err(Error::data(
                path,
                format!("label {} is out of range 0-9", record[0]),
            ));
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}
