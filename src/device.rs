//! Choosing the tch device from its name (`auto`, `cpu`, `cuda`, `cuda:N`), the number of
//! CPU threads, and seeding libtorch.
//!
//! Must not know about models.

use crate::error::{Error, Result};
use tch::Device;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` picks CUDA when it is available.
pub fn parse_device(text: &str) -> Result<Device> {
    let unavailable = |message: String| Error::Device {
        device: text.to_string(),
        message,
    };
    match text {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match text.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| unavailable("use auto, cpu, cuda or cuda:N".into()))?,
                None => return Err(unavailable("use auto, cpu, cuda or cuda:N".into())),
            };
            let count = tch::Cuda::device_count() as usize;
            if count == 0 {
                Err(unavailable(
                    "no CUDA device is available here; use --device cpu or auto".into(),
                ))
            } else if ordinal >= count {
                Err(unavailable(format!(
                    "only {count} CUDA device(s) are available (cuda:0 to cuda:{})",
                    count - 1
                )))
            } else {
                Ok(Device::Cuda(ordinal))
            }
        }
    }
}

/// Human name of a device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

/// Sets libtorch's CPU threads (`--threads`): 1 to [`crate::check::MAX_THREADS`].
pub fn set_threads(threads: i64) -> Result<()> {
    let max = crate::check::MAX_THREADS;
    if !(1..=max as i64).contains(&threads) {
        return Err(Error::Device {
            device: format!("--threads {threads}"),
            message: format!("out of range; use 1 to {max} threads"),
        });
    }
    tch::set_num_threads(threads as i32);
    Ok(())
}

/// Seeds libtorch's generators (Rust-side randomness takes the seed explicitly).
pub fn seed_torch(seed: u64) {
    tch::manual_seed(seed as i64);
}
