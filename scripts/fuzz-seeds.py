#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/), a few
KB each, standard library only:

- torchfile: small files in the shapes torch.save writes (zip + protocol-2
  pickle with the memo use of the real pickler, legacy format), raw pickles,
  and the hostile files of issue #18. torch's globals are stood in for by
  module stubs, so the pickler writes the same opcodes torch's does.
- embedding: every embedding layout the importer knows, as safetensors and
  as torch files (A1111, diffusers, kohya, OneTrainer, SDXL, ours).
- singlefile: the tiny test models' single-file checkpoints (SD 1.x, SD 2.x
  v, and SDXL when given) cut down to what layout detection and the shape
  inference read: one tensor per numbered block, every dimension nobody
  reads set to 0, one byte per element, so a checkpoint is a few KB of header.
- toml: the demo workspace's workspace.toml, concept.toml and prompt files.
- prompt: prompts with every piece of the syntax.
- png: PNG files with tEXt / zTXt / iTXt chunks, and text records for the
  writer round trip (`key U+001F value`, records separated by U+001E).

Files named `regression-*` are inputs that once crashed a target; they are
kept (this script never removes them).

usage: scripts/fuzz-seeds.py [--sdxl SDXL_SINGLE_FILE.safetensors]
  (from anywhere; rewrites the seeds it makes). The SDXL checkpoint comes
  from `cargo run --example sdxl_to_single_file -- tests/fixtures/tiny-sdxl/model
  OUT.safetensors`; without it the committed sdxl seed is left as it is.
"""
import argparse
import collections
import io
import json
import pathlib
import pickle
import re
import shutil
import struct
import sys
import types
import zipfile
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
OUT = SEEDS / "torchfile"


def stub(module, name, obj):
    parts = module.split(".")
    for i in range(1, len(parts)):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    mod = sys.modules.setdefault(module, types.ModuleType(module))
    obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
    setattr(mod, name, obj)
    return obj


def _rebuild_tensor_v2(*args):
    raise AssertionError


def _rebuild_parameter(*args):
    raise AssertionError


rebuild_v2 = stub("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
rebuild_param = stub("torch._utils", "_rebuild_parameter", _rebuild_parameter)
FloatStorage = stub("torch", "FloatStorage", type("FloatStorage", (), {}))
HalfStorage = stub("torch", "HalfStorage", type("HalfStorage", (), {}))
Callback = stub("pytorch_lightning.callbacks", "ModelCheckpoint", type("ModelCheckpoint", (), {}))


class Storage:
    def __init__(self, key, numel, cls=FloatStorage):
        self.key, self.numel, self.cls = key, numel, cls


class Tensor:
    def __init__(self, storage, shape, stride=None, offset=0):
        self.storage, self.shape, self.offset = storage, tuple(shape), offset
        if stride is None:
            stride, acc = [], 1
            for d in reversed(shape):
                stride.insert(0, acc)
                acc *= d
        self.stride = tuple(stride)

    def __reduce__(self):
        return (
            rebuild_v2,
            (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict()),
        )


class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (rebuild_param, (self.tensor, True, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def dumps(obj):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_zip(name, pickle_bytes, storages, archive="archive", out=None):
    with zipfile.ZipFile((out or OUT) / name, "w", zipfile.ZIP_STORED) as z:
        # A fixed date: the same seeds byte for byte on every run.
        def put(entry, data):
            z.writestr(zipfile.ZipInfo(f"{archive}/{entry}", (1980, 1, 1, 0, 0, 0)), data)

        put("data.pkl", pickle_bytes)
        put("byteorder", b"little")
        for key, data in storages.items():
            put(f"data/{key}", data)
        put("version", b"3\n")


def floats(n):
    return struct.pack(f"<{n}f", *range(n))


def fresh(target):
    """The target's seed folder, emptied of everything but `regression-*` files."""
    out = SEEDS / target
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if not p.name.startswith("regression-"):
            p.unlink()
    return out


def torchfile():
    fresh("torchfile")
    # An A1111 embedding: {"string_to_param": {"*": tensor}, "name": ..., "step": ...}.
    s0 = Storage("0", 8)
    a1111 = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": Parameter(Tensor(s0, (2, 4)))},
        "name": "astro",
        "step": 1500,
        "sd_checkpoint": "a9263745",
    }
    torch_zip("a1111.pt", dumps(a1111), {"0": floats(8)})
    (OUT / "a1111.pkl").write_bytes(dumps(a1111))
    # A diffusers .bin: {"<token>": tensor}, a strided view.
    torch_zip("diffusers.bin", dumps({"<cat-toy>": Tensor(Storage("0", 12), (3, 2), (1, 3), 2)}),
              {"0": floats(12)})
    # A Lightning checkpoint: trainer state (a foreign class) + shared storages.
    s1, s2 = Storage("1", 6), Storage("2", 4, HalfStorage)
    sd = collections.OrderedDict(
        [
            ("model.diffusion_model.w", Tensor(s1, (2, 3))),
            ("model.diffusion_model.w_t", Tensor(s1, (3, 2), (1, 3))),
            ("model.diffusion_model.b", Tensor(s2, (4,))),
            ("cond_stage_model.x", Tensor(s1, (2,), (1,), 4)),
        ]
    )
    ckpt = {"epoch": 6, "global_step": 12, "callbacks": Callback(), "state_dict": sd}
    torch_zip("lightning.ckpt", dumps(ckpt), {"1": floats(6), "2": b"\x00\x3c" * 4}, "checkpoint")
    # The hostile files of issue #18.
    torch_zip("dup-bomb.pt", b"\x80\x02]" + b"2\x86" * 32 + b".", {})
    torch_zip("memo-bomb.pt", b"\x80\x02]q\x00" + b"h\x00h\x00\x86q\x000" * 32 + b"h\x00.", {})
    torch_zip("stride0.pt", dumps({"string_to_param": {"*": Tensor(Storage("0", 128), (100000000, 64), (0, 0))}}),
              {"0": bytes(512)})
    torch_zip("huge-shape.pt", dumps({"t": Tensor(Storage("0", 4), (1 << 32, 1 << 32))}), {"0": bytes(16)})
    # The committed legacy and truncated fixtures (real torch output).
    fixtures = ROOT / "tests" / "fixtures" / "embeddings"
    for name in ["legacy.pt", "truncated.pt"]:
        shutil.copy(fixtures / name, OUT / name)
    # A raw pickle with most opcodes the reader knows (protocols 0 and 4).
    (OUT / "mixed-p0.pkl").write_bytes(pickle.dumps({"a": [1, -2, 300, 70000, 2**70], "b": (True, None, 1.5), "c": b"xy"}, protocol=0))
    (OUT / "mixed-p4.pkl").write_bytes(pickle.dumps({"a": [1, -2, 300, 70000, 2**70], "b": (True, None, 1.5), "c": b"xy", "d": "é" * 3}, protocol=4))


# --- safetensors ---------------------------------------------------------

DTYPE_SIZE = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "U8": 1, "BOOL": 1}


def safetensors(tensors, metadata=None):
    """`tensors`: [(name, dtype, shape, bytes or None)]; None = zeros of the right size."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        size = DTYPE_SIZE[dtype]
        for d in shape:
            size *= d
        raw = bytes(size) if raw is None else raw
        assert len(raw) == size, name
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + size]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def f16(*values):
    return struct.pack(f"<{len(values)}e", *values)


# --- embedding -----------------------------------------------------------

def embedding():
    out = fresh("embedding")
    w = f32(0.5, -1.0, 2.0, 0.25, 1.5, -0.5, 0.0, 3.0)  # [2, 4]
    ours = {"format": "dreamartist", "name": "cat", "run": "r1", "step": "400",
            "sd_checkpoint_name": "toy", "sd_checkpoint": "abcd1234",
            "vectors": "2", "pos_vectors": "2", "neg_vectors": "3"}
    files = {
        "kohya.safetensors": safetensors([("emb_params", "F16", [2, 4], f16(1, 2, 3, 4, -1, -2, 0.5, 0))]),
        "ours.safetensors": safetensors([("emb_params", "F32", [2, 4], w)], ours),
        "ours-sdxl.safetensors": safetensors(
            [("clip_l", "F32", [1, 2], f32(1, 2)), ("clip_g", "F32", [1, 3], f32(3, 4, 5))], ours),
        "a1111.safetensors": safetensors(
            [("string_to_param.*", "F32", [2, 4], w)], {"name": "astro", "step": "1500"}),
        "onetrainer.safetensors": safetensors([("emp_params", "BF16", [1, 4], bytes(8))]),
        "onetrainer-output.safetensors": safetensors(
            [("clip_l", "F32", [1, 2], None), ("clip_l_out", "F32", [1, 2], None)]),
        "diffusers.safetensors": safetensors([("<cat-toy>", "F32", [4], f32(1, 2, 3, 4))]),
        "sdxl.safetensors": safetensors(
            [("clip_g", "F16", [2, 3], None), ("clip_l", "F32", [2, 2], f32(1, 2, 3, 4))]),
        "two-keys.safetensors": safetensors([("a", "F32", [1, 2], None), ("b", "F32", [1, 2], None)]),
        "checkpoint.safetensors": safetensors([("model.diffusion_model.x", "F32", [1], None)]),
        "nan.safetensors": safetensors([("emb_params", "F32", [1, 2], f32(float("nan"), float("inf")))]),
        "empty.safetensors": safetensors([], {"format": "dreamartist"}),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    # Torch files: A1111's string_to_param, diffusers' .bin, a bare tensor, SDXL as a pickled dict.
    s0 = Storage("0", 8)
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": Parameter(Tensor(s0, (2, 4)))},
             "name": "astro", "step": 1500, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "toy"}
    torch_zip("a1111.pt", dumps(a1111), {"0": floats(8)}, out=out)
    torch_zip("diffusers.bin", dumps({"<cat-toy>": Tensor(Storage("0", 4), (4,))}), {"0": floats(4)}, out=out)
    torch_zip("bare.pt", dumps(Tensor(Storage("0", 6), (2, 3))), {"0": floats(6)}, out=out)
    torch_zip("sdxl.pt", dumps({"clip_l": Tensor(Storage("0", 2), (1, 2)), "clip_g": Tensor(Storage("1", 3), (1, 3))}),
              {"0": floats(2), "1": floats(3)}, out=out)


# --- singlefile ----------------------------------------------------------

# Tensors whose dimensions layout detection and the shape inference read
# (src/sd/single_file.rs, src/sd/single_file/infer.rs): name pattern → the
# dimensions kept; every other dimension of every tensor becomes 0.
READ = [
    (r"token_embedding\.weight$", "all"),
    (r"(position_embedding\.weight|positional_embedding)$", [0]),
    (r"(mlp\.fc1|mlp\.c_fc)\.weight$", [0]),
    (r"^conditioner\.embedders\.1\.model\.text_projection$", "all"),
    (r"^model\.diffusion_model\.input_blocks\.0\.0\.weight$", [0, 1, 2]),
    (r"^model\.diffusion_model\.input_blocks\.\d+\.0\.in_layers\.2\.weight$", [0]),
    (r"^model\.diffusion_model\.input_blocks\.\d+\.1\.transformer_blocks\.0\.attn2\.to_k\.weight$", [1]),
    (r"^model\.diffusion_model\.time_embed\.0\.weight$", [0]),
    (r"^model\.diffusion_model\.out\.2\.weight$", [0, 2]),
    (r"^model\.diffusion_model\.label_emb\.0\.0\.weight$", "all"),
    (r"^first_stage_model\.encoder\.down\.\d+\.block\.0\.conv1\.weight$", [0]),
    (r"^first_stage_model\.encoder\.conv_in\.weight$", [1]),
    (r"^first_stage_model\.decoder\.conv_out\.weight$", [0]),
    (r"^first_stage_model\.decoder\.conv_in\.weight$", [1]),
]
# Names whose presence is read: downsamplers, attention blocks, the VAE's
# optional parts, SDXL's second text encoder's projection.
PRESENT = (r"(\.0\.op\.weight|\.1\.proj_in\.weight|quant_conv\.weight|mid\.attn_1\.q\.weight"
           r"|text_projection)$")
# Numbered blocks the inference counts: one tensor per number is enough.
NUMBERED = [re.compile(p) for p in [
    r"encoder\.layers\.(\d+)\.",
    r"transformer\.resblocks\.(\d+)\.",
    r"^model\.diffusion_model\.(?:input|output)_blocks\.(\d+)\.",
    r"^model\.diffusion_model\.(?:input_blocks\.\d+|middle_block)\.1\.transformer_blocks\.(\d+)\.",
    r"^first_stage_model\.encoder\.down\.(\d+)\.",
    r"^first_stage_model\.(?:encoder\.down|decoder\.up)\.0\.block\.(\d+)\.",
]]


def cut_down(header):
    """The tensors of a checkpoint that its layout and configs are read from,
    their unread dimensions set to 0: [(name, "U8", shape, None)]."""
    seen, out = set(), []
    for name, info in sorted(header.items()):
        kept = next((dims for pattern, dims in READ if re.search(pattern, name)), None)
        keep = kept is not None or re.search(PRESENT, name)
        for pattern in NUMBERED:
            m = pattern.search(name)
            if m and name[: m.end()] not in seen:
                seen.add(name[: m.end()])
                keep = True
        if not keep:
            continue
        shape = list(info["shape"])
        if kept != "all":
            shape = [d if i in (kept or []) else 0 for i, d in enumerate(shape)]
        if name.endswith("token_embedding.weight"):
            shape[0] = 1  # vocab_size: any will do
        out.append((name, "U8", shape, None))
    return out


def singlefile(sdxl):
    out = SEEDS / "singlefile"
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if not p.name.startswith("regression-") and not (p.name.startswith("sdxl") and sdxl is None):
            p.unlink()
    fixtures = ROOT / "tests" / "fixtures"
    sources = {"sd1": fixtures / "tiny-sd1" / "single_file.safetensors",
               "sd2v": fixtures / "tiny-sd2v" / "single_file.safetensors"}
    if sdxl is not None:
        sources["sdxl"] = pathlib.Path(sdxl)
    for name, path in sources.items():
        tensors = cut_down(read_header(path))
        (out / f"{name}.safetensors").write_bytes(safetensors(tensors))
    # SD 1.x as a Lightning .ckpt (state_dict + trainer state), same tensors.
    # Every tensor a view of one storage (most hold nothing).
    tensors = cut_down(read_header(sources["sd1"]))
    numel = max(prod(shape) for _, _, shape, _ in tensors)
    storage = Storage("0", numel)
    sd = collections.OrderedDict((name, Tensor(storage, shape)) for name, _, shape, _ in tensors)
    torch_zip("sd1.ckpt", dumps({"global_step": 1, "state_dict": sd}), {"0": bytes(4 * numel)},
              "checkpoint", out=out)
    # Not a whole model (no UNet): a VAE file.
    vae = [t for t in tensors if t[0].startswith("first_stage_model.")]
    (out / "vae-only.safetensors").write_bytes(safetensors(vae))


# --- toml, prompt, png ---------------------------------------------------

def toml():
    out = fresh("toml")
    shutil.copy(ROOT / "workspace.toml", out / "workspace.toml")
    for c in sorted((ROOT / "concepts").iterdir()):
        if (c / "concept.toml").is_file():
            shutil.copy(c / "concept.toml", out / f"concept-{c.name}.toml")
    for p in sorted((ROOT / "prompts").glob("*.toml")):
        shutil.copy(p, out / f"prompt-{p.name}")
    (out / "prompt-img2img.toml").write_text(
        'prompt = "a (<cat>:1.2) on a beach BREAK sunset"\nnegative = "blurry"\nseed = 7\ncount = 2\n'
        'steps = 20\ncfg = 5.0\nscheduler = "dpmpp_2m_karras"\nwidth = 64\nheight = 48\n'
        'init_image = "references/x.png"\nstrength = 0.6\nmask = "m.png"\nauto_negative = false\n')
    (out / "workspace-full.toml").write_text(
        'model = "hf:org/name"\ndevice = "cuda:0"\ndtype = "f16"\ntheme = "dark"\nclip = "hf:openai/clip"\n')
    (out / "concept-train-strings.toml").write_text(
        'name = "c"\nreferences = []\npreset = "quality"\npos_vectors = 1\nneg_vectors = 1\ninit_text = "x"\n'
        '[train]\nlr = "0.005:100, 1e-3:1000, 1e-5"\nlr_schedule = "cosine"\nwarmup_steps = 10\nsteps = 1000\n'
        'train_cfg = "1-5:cos2"\nsize = [64, 48]\ntemplate = "style"\n')


PROMPTS = {
    "a1111": "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "words": "a photo of <cat> and <cat-neg>, <dog_2.v1>",
    "break": "a cat BREAK a dog (in BREAK brackets) BREAKfast",
    "escapes": "\\(literal\\] \\\\ (x:abc) (a:b:1.2) ratio 16:9 (a: +1.5 )",
    "long": ", ".join(f"word{i} <w{i % 3}>" for i in range(60)),
    "unicode": "caf\u00e9 \u732b (\u2603:1.1) \U0001f408 <|endoftext|> <|startoftext|>",
    "nested": "(" * 40 + "deep" + ")" * 40 + " [" * 10 + "shallow" + "]" * 10,
}


def prompt():
    out = fresh("prompt")
    for name, text in PROMPTS.items():
        (out / f"{name}.txt").write_text(text)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(chunks):
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(6) for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunks)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png():
    out = fresh("png")
    params = "a <cat> on a beach\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64"
    (out / "text.png").write_bytes(png_file([
        chunk(b"tEXt", b"parameters\x00" + params.encode("latin-1")),
        chunk(b"tEXt", b"Software\x00caf\xe9"),
    ]))
    (out / "ztxt.png").write_bytes(png_file([chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"x" * 64))]))
    (out / "itxt.png").write_bytes(png_file([
        chunk(b"iTXt", b"parameters\x00\x00\x00en\x00parameters\x00" + "\u732b \U0001f408".encode()),
        chunk(b"iTXt", b"Title\x00\x01\x00\x00\x00" + zlib.compress("\u00e9t\u00e9".encode())),
    ]))
    records = {
        "records-plain.txt": "parameters\x1fa photo, Steps: 20\x1esoftware\x1fdreamartist",
        "records-latin1.txt": "Comment\x1fcaf\u00e9 \u00ff",
        "records-utf8.txt": "parameters\x1f\u732b \U0001f408\nNegative prompt: \u00e9",
        "records-empty.txt": "k\x1f\x1e\x1ek2",
    }
    for name, text in records.items():
        (out / name).write_text(text)


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--sdxl", help="an SDXL single-file checkpoint to cut down into the sdxl seed")
    sdxl = args.parse_args().sdxl
    torchfile()
    embedding()
    singlefile(sdxl)
    toml()
    prompt()
    png()
    for p in sorted(SEEDS.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:8d} {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
