#!/usr/bin/env python3
"""Files written by PyTorch for our readers, and PyTorch's verdict on the files
our writers produce (issue #23 item 9). Needs torch and safetensors; CI does
not run it: its outputs are committed under tests/fixtures/torch-written/ and
tests/torch_written.rs checks our side against them.

  scripts/torch-fixtures.py write   # torch.save a tiny-sd1 .ckpt (f16) for our reader
  scripts/torch-fixtures.py check   # torch.load what our .pt writer wrote, as A1111 does

`check` reads tests/fixtures/torch-written/ours/*.pt, which tests/torch_written.rs
asserts our writer still produces byte for byte; rerun `check` whenever that
test says the writer changed, then refresh the files as the test says.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "torch-written"


def write():
    sd = load_file(FIX / "tiny-sd1" / "single_file.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    # The shape of an original CompVis / A1111-era checkpoint: a Lightning
    # dict with the weights under state_dict (torch's zip format).
    torch.save({"epoch": 6, "global_step": 840, "state_dict": half}, OUT / "tiny-sd1-fp16.ckpt")
    # The bare state dict, old (pre-1.6) serialization.
    legacy = {k: v for k, v in half.items() if k.startswith("first_stage_model.decoder.conv_out")}
    torch.save(legacy, OUT / "legacy-bare.ckpt", _use_new_zipfile_serialization=False)
    print("wrote", OUT / "tiny-sd1-fp16.ckpt", OUT / "legacy-bare.ckpt")


def check():
    expected = load_file(FIX / "embeddings" / "expected.safetensors")
    ok = True
    for path in sorted((OUT / "ours").glob("*.pt")):
        # A1111 (modules/textual_inversion/textual_inversion.py) loads with
        # torch.load, then reads string_to_param's single parameter.
        data = torch.load(path, map_location="cpu", weights_only=True)
        params = data["string_to_param"]
        assert list(params.keys()) == ["*"], params.keys()
        vec = params["*"]
        want = expected[f"expected/{path.stem}.pt"] if f"expected/{path.stem}.pt" in expected else None
        same = want is not None and torch.equal(vec.float(), want.float())
        print(f"{path.name}: name={data.get('name')!r} step={data.get('step')} "
              f"shape={tuple(vec.shape)} dtype={vec.dtype} "
              f"string_to_token={data.get('string_to_token')} "
              f"checkpoint={data.get('sd_checkpoint_name')!r} equal_to_expected={same}")
        ok &= same and data.get("name") == path.stem and vec.dtype == torch.float32
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1] if len(sys.argv) > 1 else "check"]()
