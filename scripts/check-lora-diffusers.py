#!/usr/bin/env python3
"""Checks that a LoRA file written by dreamartist loads in diffusers the
documented way (`pipe.load_lora_weights`) with every layer of the file taken,
and that the UNet with it gives dreamartist's output.

usage: check-lora-diffusers.py MODEL_DIR LORA.safetensors CASE.safetensors

CASE.safetensors holds the UNet inputs and dreamartist's output with the
adapter on every row at strength 1: `latents`, `timesteps` (i64), `context`,
for SDXL also `text_embeds` and `time_ids`, and `ours`. `tests/lora_diffusers.rs`
writes both files and runs this when a Python with torch, diffusers, peft and
safetensors is found (`DREAMARTIST_PYTHON`, else `python3`). Exit status 1 on
any mismatch.
"""
import pathlib
import sys

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file


def main() -> int:
    model, lora, case = (pathlib.Path(a) for a in sys.argv[1:4])
    sdxl = (model / "text_encoder_2").exists()
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    kwargs = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(model, torch_dtype=torch.float32, **kwargs)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="ours")
    state = load_file(lora)
    in_file = sum(1 for k in state if k.endswith(".lora_down.weight"))
    nets = [pipe.unet, pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl else [])
    loaded = sum(1 for n in nets for _, m in n.named_modules() if isinstance(m, LoraLayer))
    print(f"load_lora_weights: {loaded} adapted layers for {in_file} in the file")
    if loaded != in_file:
        print("FAIL: diffusers did not take every layer of the file")
        return 1
    c = load_file(case)
    added = None
    if sdxl:
        added = {"text_embeds": c["text_embeds"], "time_ids": c["time_ids"]}
    with torch.no_grad():
        theirs = pipe.unet(c["latents"], c["timesteps"], encoder_hidden_states=c["context"],
                           added_cond_kwargs=added).sample
    ours = c["ours"]
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"UNet with the LoRA, diffusers vs dreamartist: max_rel {rel:.3e}")
    if rel > 1e-5:
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
