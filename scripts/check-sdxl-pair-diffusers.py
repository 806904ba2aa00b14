#!/usr/bin/env python3
"""Checks that a DreamArtist SDXL pair written by dreamartist loads in diffusers
the documented way and conditions the pipeline exactly as dreamartist does.

usage: check-sdxl-pair-diffusers.py MODEL_DIR POS.safetensors NEG.safetensors OURS.safetensors PROMPT NEGATIVE

OURS.safetensors comes from
  cargo run --release --example encode_with_words -- MODEL_DIR OURS.safetensors PROMPT NEGATIVE POS NEG
The words are named after the files (`<stem>`), as in dreamartist. Needs torch,
diffusers, transformers, safetensors. Exit status 1 on any mismatch.
"""
import pathlib
import sys

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file


def main() -> int:
    model, pos, neg, ours, prompt, negative = sys.argv[1:7]
    pipe = StableDiffusionXLPipeline.from_pretrained(model, torch_dtype=torch.float32)
    # The README's commands: one load per text encoder, the file's clip_l / clip_g.
    for f in (pos, neg):
        token = f"<{pathlib.Path(f).stem}>"
        state_dict = load_file(f)
        pipe.load_textual_inversion(state_dict["clip_g"], token=token,
                                    text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
        pipe.load_textual_inversion(state_dict["clip_l"], token=token,
                                    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    with torch.no_grad():
        cond, uncond, cond_pooled, uncond_pooled = pipe.encode_prompt(
            prompt, negative_prompt=negative, do_classifier_free_guidance=True, device="cpu")
    theirs = {"cond": cond, "uncond": uncond, "cond_pooled": cond_pooled, "uncond_pooled": uncond_pooled}
    mine = load_file(ours)
    worst = 0.0
    for key, t in theirs.items():
        m = mine[key].to(torch.float32)
        if m.shape != t.shape:
            print(f"FAIL {key}: shape {tuple(m.shape)} vs diffusers {tuple(t.shape)}")
            return 1
        rel = ((m - t).abs().max() / t.abs().max().clamp_min(1e-12)).item()
        worst = max(worst, rel)
        print(f"{key}: shape {tuple(t.shape)} max_rel {rel:.3e}")
    ok = worst <= 1e-4
    print(("PASS" if ok else "FAIL") + f": worst max_rel {worst:.3e} (bound 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
