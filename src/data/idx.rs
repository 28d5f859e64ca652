//! IDX files (the format MNIST and Fashion-MNIST are distributed in), plain or gzipped.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// An IDX array of unsigned bytes: its dimensions and its values in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub values: Vec<u8>,
}

/// Reads a whole file, un-gzipping it when it starts with the gzip magic bytes.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_maybe_gz(raw, path)
}

/// A file's bytes, un-gzipped when they start with the gzip magic bytes; `path` is named in
/// errors.
pub fn decode_maybe_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file of unsigned bytes (type code 0x08), e.g. `train-images-idx3-ubyte.gz`.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(&read_maybe_gz(path)?).map_err(|message| Error::data(path, message))
}

/// Parses IDX bytes; the error says what is wrong with them.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (the first two bytes must be zero)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(format!(
            "IDX header declares {rank} dimensions but the file ends early"
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("IDX dimensions overflow")?;
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(format!(
            "IDX header declares dimensions {dims:?} ({expected} values) but the file holds {} (truncated or wrong file)",
            body.len()
        ));
    }
    Ok(IdxArray {
        dims,
        values: body.to_vec(),
    })
}
