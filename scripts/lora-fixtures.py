#!/usr/bin/env python3
"""Writes the LoRA / DreamArtist++ parity fixture of a tiny model with the
reference stack (diffusers + peft), and checks that kohya-named LoRA files
load in diffusers.

usage: lora-fixtures.py FIXTURE_DIR       (tests/fixtures/tiny-sd1, tests/fixtures/tiny-sdxl)

Takes the inputs of the `cpt_static` case of FIXTURE_DIR/goldens.safetensors
(latents, noise, timestep, the `<da>` / `<da-neg>` vectors; cfg 3, epsilon)
and adds two LoRA networks with random weights, as DreamArtist++ trains them:
a negative one (rank 2) and a positive one (rank 4), alpha 2, on the UNet's
attention projections and feed-forward and on the text encoders' attention and
MLP. peft's mixed-batch forward applies the negative network to the first half
of every batch ([negative prompt; positive prompt] in the text encoders, [z_t,
z_t] with contexts [C_neg, C_pos] in the UNet) and the positive one to the
second half. Writes FIXTURE_DIR/lora_goldens.safetensors:

- `neg.safetensors` / `pos.safetensors` content under `neg/` and `pos/`:
  kohya names (`lora_unet_<path>`, `lora_te_` / `lora_te1_` / `lora_te2_`),
  `.lora_down.weight`, `.lora_up.weight`, `.alpha`;
- `unet_out` [2, 4, 8, 8]: the UNet output on [z_t, z_t] (halves split);
- `loss` [1]: the guided loss; `grad_pos`, `grad_neg` (+ `_2` on SDXL): the
  words' gradients; `grad/neg/<kohya key>`, `grad/pos/<kohya key>`: the
  adapters' gradients;
- `plain_loss` [1]: the same loss without adapters (equals the case's golden:
  checks that this script builds the loss as the goldens do).

It also writes the positive network as a kohya file and loads it into a fresh
pipeline with `load_lora_weights` (no missing or unexpected keys allowed), and
checks that the UNet output equals the peft model's with the positive
adapters on every row. Needs torch, diffusers, transformers, peft, safetensors.
"""
import pathlib
import sys
import tempfile

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

UNET_TARGETS = (
    r".*transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)"
    r"|.*transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)"
)
TE_TARGETS = r".*encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
BRANCHES = {"neg": 2, "pos": 4}  # rank
ALPHA = 2.0
CFG = 3.0
CASE = "cpt_static"


def networks(pipe, sdxl):
    """(kohya prefix, module) of every network that takes adapters."""
    nets = [("lora_unet_", pipe.unet)]
    if sdxl:
        nets += [("lora_te1_", pipe.text_encoder), ("lora_te2_", pipe.text_encoder_2)]
    else:
        nets += [("lora_te_", pipe.text_encoder)]
    return nets


def lora_layers(module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer)]


def split_by_half(module, args, kwargs):
    """peft's mixed batch: the negative adapters on the first half of the
    rows, the positive ones on the second."""
    n = args[0].shape[0]
    kwargs["adapter_names"] = ["neg"] * (n // 2) + ["pos"] * (n // 2)
    return args, kwargs


def load(model_dir):
    sdxl = (model_dir / "text_encoder_2").exists()
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    kwargs = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    pipe = cls.from_pretrained(model_dir, torch_dtype=torch.float32, **kwargs)
    return pipe, sdxl


def add_words(pipe, sdxl, g):
    tokens = {}
    for word, key in (("<da>", "pos_vectors"), ("<da-neg>", "neg_vectors")):
        if sdxl:
            pipe.load_textual_inversion(g[f"{CASE}/{key}_2"], token=word,
                                        text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
            pipe.load_textual_inversion(g[f"{CASE}/{key}"], token=word,
                                        text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        else:
            pipe.load_textual_inversion(g[f"{CASE}/{key}"], token=word)
        n = g[f"{CASE}/{key}"].shape[0]
        names = [word] + [f"{word}_{i}" for i in range(1, n)]
        tokens[key] = names
    return tokens


def guided_loss(pipe, sdxl, g, with_adapters):
    """The case's loss: encode [negative; positive] prompts, one UNet call on
    [z_t, z_t], guidance CFG, MSE to the noise."""
    z0, noise = g[f"{CASE}/z0"], g[f"{CASE}/noise"]
    t = g[f"{CASE}/timesteps"].long()
    b = z0.shape[0]
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    z_t = sched.add_noise(z0, noise, t)
    prompts = ["a photo of <da-neg>", "a photo of <da>"]
    if sdxl:
        ctx, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
    else:
        ctx, _ = pipe.encode_prompt(prompts, "cpu", 1, False)
    ctx = torch.cat([ctx[0:1].repeat(b, 1, 1), ctx[1:2].repeat(b, 1, 1)])
    added = None
    if sdxl:
        h, w = z0.shape[2] * 8, z0.shape[3] * 8
        time_ids = torch.tensor([[h, w, 0, 0, h, w]] * (2 * b), dtype=torch.float32)
        pooled = torch.cat([pooled[0:1].repeat(b, 1), pooled[1:2].repeat(b, 1)])
        added = {"text_embeds": pooled, "time_ids": time_ids}
    out = pipe.unet(torch.cat([z_t, z_t]), torch.cat([t, t]), encoder_hidden_states=ctx,
                    added_cond_kwargs=added).sample
    o_neg, o_pos = out[:b], out[b:]
    guided = o_neg + CFG * (o_pos - o_neg)
    return ((guided - noise) ** 2).mean(), out


def kohya_state(pipe, sdxl, branch, tensor_of=lambda p: p.detach()):
    state = {}
    for prefix, net in networks(pipe, sdxl):
        for name, layer in lora_layers(net):
            # kohya names text encoder layers by their path in the
            # CLIPTextModel of transformers 4 (`text_model.encoder…`);
            # transformers 5 dropped the `text_model` level.
            if prefix != "lora_unet_" and not name.startswith("text_model."):
                name = "text_model." + name
            key = prefix + name.replace(".", "_")
            state[f"{key}.lora_down.weight"] = tensor_of(layer.lora_A[branch].weight)
            state[f"{key}.lora_up.weight"] = tensor_of(layer.lora_B[branch].weight)
            state[f"{key}.alpha"] = torch.tensor(ALPHA)
    return state


def main() -> int:
    fixture = pathlib.Path(sys.argv[1])
    g = load_file(fixture / "goldens.safetensors")
    torch.manual_seed(0)
    pipe, sdxl = load(fixture / "model")
    tokens = add_words(pipe, sdxl, g)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl else [])

    with torch.no_grad():
        plain, _ = guided_loss(pipe, sdxl, g, with_adapters=False)
    golden = g[f"{CASE}/loss"].item()
    print(f"plain loss {plain.item():.7f}, golden {golden:.7f}")
    if abs(plain.item() - golden) > 1e-5 * max(1.0, abs(golden)):
        print("FAIL: this script does not build the case's loss")
        return 1

    for prefix, net in networks(pipe, sdxl):
        targets = UNET_TARGETS if prefix == "lora_unet_" else TE_TARGETS
        for branch, rank in BRANCHES.items():
            # peft directly: transformers' own add_adapter may ask for a newer peft.
            inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=ALPHA, target_modules=targets,
                                               init_lora_weights=False), net, adapter_name=branch)
        for _, layer in lora_layers(net):
            for branch in BRANCHES:
                for lin in (layer.lora_A[branch], layer.lora_B[branch]):
                    fan_in = lin.weight.shape[1]
                    with torch.no_grad():
                        lin.weight.copy_(torch.randn_like(lin.weight) * 0.5 / fan_in ** 0.5)
                    lin.weight.requires_grad_(True)
            layer.register_forward_pre_hook(split_by_half, with_kwargs=True)
        net.eval()
    for enc in encoders:
        enc.get_input_embeddings().weight.requires_grad_(True)

    loss, out = guided_loss(pipe, sdxl, g, with_adapters=True)
    loss.backward()
    print(f"loss with adapters {loss.item():.7f}")

    result = {"loss": loss.detach().reshape(1), "plain_loss": plain.reshape(1),
              "unet_out": out.detach().contiguous()}
    for key in ("z0", "noise", "timesteps", "pos_vectors", "neg_vectors") + (
            ("pos_vectors_2", "neg_vectors_2") if sdxl else ()):
        result[key] = g[f"{CASE}/{key}"].contiguous()
    for i, (enc, tok) in enumerate(zip(encoders, [pipe.tokenizer, pipe.tokenizer_2] if sdxl else [pipe.tokenizer])):
        suffix = "" if i == 0 else "_2"
        grad = enc.get_input_embeddings().weight.grad
        for word_key, grad_key in (("pos_vectors", "grad_pos"), ("neg_vectors", "grad_neg")):
            ids = tok.convert_tokens_to_ids(tokens[word_key])
            result[grad_key + suffix] = grad[ids].contiguous()
    for branch in BRANCHES:
        for k, v in kohya_state(pipe, sdxl, branch).items():
            result[f"{branch}/{k}"] = v.contiguous()
        # A layer whose output the loss never reads (SDXL's first encoder's
        # last layer: the UNet takes the penultimate states) gets zeros.
        grad_of = lambda p: p.grad if p.grad is not None else torch.zeros_like(p)
        for k, v in kohya_state(pipe, sdxl, branch, tensor_of=grad_of).items():
            if not k.endswith(".alpha"):
                result[f"grad/{branch}/{k}"] = v.contiguous()
    out_path = fixture / "lora_goldens.safetensors"
    save_file(result, out_path)
    print(f"wrote {out_path} ({len(result)} tensors)")

    # The positive network as a kohya file, loaded the documented way.
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "pos.safetensors"
        save_file({k: v.contiguous() for k, v in kohya_state(pipe, sdxl, "pos").items()}, path)
        return check_kohya_file(fixture / "model", path, pipe, sdxl, g)


def check_kohya_file(model_dir, path, peft_pipe, sdxl, g) -> int:
    """`load_lora_weights` takes every key of the file, and the loaded UNet
    gives the peft model's output with the positive adapters on all rows."""
    fresh, _ = load(model_dir)
    fresh.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="pos")
    state = load_file(path)
    n_layers = sum(1 for k in state if k.endswith(".lora_down.weight"))
    n_loaded = sum(len(lora_layers(net)) for _, net in networks(fresh, sdxl))
    print(f"load_lora_weights: {n_loaded} adapted layers for {n_layers} in the file")
    if n_loaded != n_layers:
        print("FAIL: diffusers did not take every layer of the file")
        return 1

    z = g[f"{CASE}/z0"]
    t = g[f"{CASE}/timesteps"].long()
    ctx = torch.randn(z.shape[0], 77, peft_pipe.unet.config.cross_attention_dim)
    added = None
    if sdxl:
        proj = peft_pipe.text_encoder_2.config.projection_dim
        added = {"text_embeds": torch.randn(z.shape[0], proj),
                 "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * z.shape[0], dtype=torch.float32)}

    def all_pos(module, args, kwargs):
        kwargs["adapter_names"] = ["pos"] * args[0].shape[0]
        return args, kwargs

    # Hooks run in the order they were added: this one overrides the split.
    hooks = [m.register_forward_pre_hook(all_pos, with_kwargs=True) for _, m in lora_layers(peft_pipe.unet)]
    with torch.no_grad():
        ours = peft_pipe.unet(z, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        theirs = fresh.unet(z, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
        fresh.disable_lora()
        base = fresh.unet(z, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    for h in hooks:
        h.remove()
    effect = ((base - theirs).abs().max() / theirs.abs().max()).item()
    print(f"the adapters move the UNet output by max_rel {effect:.3e}")
    if effect < 1e-3:
        print("FAIL: the loaded adapters do nothing")
        return 1
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"UNet with the loaded file vs peft: max_rel {rel:.3e}")
    if rel > 1e-5:
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
