//! Writes a diffusers SDXL folder as an original single-file checkpoint
//! (`conditioner.embedders.*`, `model.diffusion_model.*`, `first_stage_model.*`),
//! the layout A1111 / ComfyUI / Civitai files use. The tests build the tiny
//! fixture's file with the same code; this is for checking it elsewhere
//! (`scripts/check-sdxl-single-file.py` loads it with diffusers).
//!
//! `cargo run --release --example sdxl_to_single_file -- tests/fixtures/tiny-sdxl/model /tmp/tiny-sdxl.safetensors`

#[path = "../tests/common/ldm_sdxl.rs"]
mod ldm_sdxl;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, out] = args.as_slice() else {
        eprintln!("usage: sdxl_to_single_file MODEL_DIR OUT.safetensors");
        return ExitCode::from(2);
    };
    match ldm_sdxl::convert(&PathBuf::from(model), &PathBuf::from(out)) {
        Ok(n) => {
            println!("{out}: {n} tensors");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
