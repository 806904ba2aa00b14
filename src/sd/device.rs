//! Run device and dtype from their names in `workspace.toml` and on the
//! command line, with errors that name the fix (a CPU-only build, a missing
//! GPU, missing CUDA libraries).

use candle_core::{DType, Device};

/// Why a device or dtype name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown dtype `{0}` (use f32, f16 or bf16)")]
    UnknownDtype(String),
    #[error("unknown device `{0}` (use cpu, cuda or cuda:N)")]
    UnknownDevice(String),
    #[error("cannot open CUDA device {ordinal}: {message}; {fix}")]
    Cuda {
        ordinal: usize,
        message: String,
        fix: &'static str,
    },
}

/// Waits until the device has finished the work this thread queued on it.
///
/// Candle's CUDA device issues each host thread's work on that thread's own
/// stream (`CU_STREAM_PER_THREAD`), and those streams are not ordered with
/// each other (cudarc orders streams only for the ones it creates). So the
/// thread that loads and casts the weights settles before another thread's
/// job reads them, and a job settles before its thread hands results or the
/// device on. On the CPU it returns at once.
pub fn settle(device: &Device) -> candle_core::Result<()> {
    device.synchronize()
}

/// f16 or bf16: the dtypes `upcast_attention` raises to f32.
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// Parses `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType, DeviceError> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(DeviceError::UnknownDtype(other.to_string())),
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` and opens the device.
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => open_cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => open_cuda(n),
            _ => Err(DeviceError::UnknownDevice(other.to_string())),
        },
    }
}

/// Opens a CUDA device, with the fix in the error: a CPU-only build needs
/// rebuilding, a CUDA build needs a visible GPU and its driver.
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    let device = Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
        ordinal,
        message: e.to_string(),
        fix: if cfg!(feature = "cuda") {
            "check that the GPU is visible (`nvidia-smi`) and its driver loaded, or use `--device cpu`"
        } else {
            "this binary was built without CUDA: build with `cargo build --release --features cuda` \
             (or `scripts/build-cuda.sh`), or use `--device cpu`"
        },
    })?;
    // cuBLAS initialises lazily: a missing or mismatched libcublas would
    // otherwise surface as a bare status code in the middle of a model load.
    let cublas = |e: candle_core::Error| {
        DeviceError::Cuda {
        ordinal,
        message: format!("the device opened but cuBLAS failed: {e}"),
        fix: "the CUDA 13 libraries (libcublas.so.13, libcublasLt.so.13) must be on \
              LD_LIBRARY_PATH and the driver new enough for them (`nvidia-smi`), or use `--device cpu`",
    }
    };
    let one = candle_core::Tensor::ones((1, 1), DType::F32, &device).map_err(cublas)?;
    one.matmul(&one).map_err(cublas)?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_say_what_is_known() {
        assert_eq!(parse_dtype("f16").unwrap(), DType::F16);
        assert!(parse_dtype("f8")
            .unwrap_err()
            .to_string()
            .contains("f32, f16 or bf16"));
        assert!(parse_device("cpu").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
    }
}
