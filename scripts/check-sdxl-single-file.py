#!/usr/bin/env python3
"""Checks an SDXL single-file checkpoint against the diffusers folder it was
written from, with the reference stack (diffusers' own single-file loader).

    python3 scripts/check-sdxl-single-file.py FILE.safetensors MODEL_DIR

FILE is loaded with `StableDiffusionXLPipeline.from_single_file(FILE,
config=MODEL_DIR)`, MODEL_DIR with `from_pretrained`. Every UNet, VAE and
text-encoder tensor must be bit-identical (same names, shapes, dtypes, bytes),
and so must the prompt encodings and a short sampling run. Prints a summary;
exits non-zero on any mismatch. Needs torch, diffusers, transformers,
safetensors (and accelerate); runs offline on the CPU.

Write the tiny fixture's file first with
`cargo run --release --example sdxl_to_single_file -- tests/fixtures/tiny-sdxl/model /tmp/tiny-sdxl.safetensors`.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import StableDiffusionXLPipeline  # noqa: E402

COMPONENTS = ["unet", "vae", "text_encoder", "text_encoder_2"]


def raw(t):
    """The tensor's bytes, so -0.0 vs 0.0 and NaN payloads count as differences."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(raw(a), raw(b))


def compare_weights(ref, single):
    failures = 0
    for name in COMPONENTS:
        a = getattr(ref, name).state_dict()
        b = getattr(single, name).state_dict()
        missing = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        differ = sorted(k for k in set(a) & set(b) if not same(a[k], b[k]))
        equal = len(set(a) & set(b)) - len(differ)
        ok = not (missing or extra or differ)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {equal}/{len(a)} tensors bit-identical", end="")
        print(f", {len(missing)} missing, {len(extra)} extra, {len(differ)} differ")
        for label, keys in (("missing", missing), ("extra", extra), ("differ", differ)):
            for k in keys[:5]:
                print(f"       {label}: {k}")
    return failures


def compare_outputs(ref, single):
    failures = 0
    prompt, negative = "a photo of a cat", "blurry"
    with torch.no_grad():
        ea = ref.encode_prompt(prompt, negative_prompt=negative, do_classifier_free_guidance=True)
        eb = single.encode_prompt(prompt, negative_prompt=negative, do_classifier_free_guidance=True)
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled", "negative_pooled"]
    for n, a, b in zip(names, ea, eb):
        ok = same(a, b)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} encode_prompt {n} {tuple(a.shape)}")
    size = ref.unet.config.sample_size * ref.vae_scale_factor
    outs = []
    for pipe in (ref, single):
        g = torch.Generator().manual_seed(0)
        outs.append(
            pipe(
                prompt,
                negative_prompt=negative,
                num_inference_steps=3,
                guidance_scale=5.0,
                height=size,
                width=size,
                generator=g,
                output_type="latent",
            ).images
        )
    ok = same(outs[0], outs[1])
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} 3-step sampling, latents {tuple(outs[0].shape)}")
    return failures


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    file, model_dir = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    ref = StableDiffusionXLPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    single = StableDiffusionXLPipeline.from_single_file(
        file, config=model_dir, torch_dtype=torch.float32, local_files_only=True
    )
    ref.set_progress_bar_config(disable=True)
    single.set_progress_bar_config(disable=True)
    failures = compare_weights(ref, single) + compare_outputs(ref, single)
    print(f"{file}: {'all bit-identical' if failures == 0 else f'{failures} mismatch(es)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
