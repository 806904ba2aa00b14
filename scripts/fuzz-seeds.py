#!/usr/bin/env python3
"""Writes the seed corpus of the torch-file fuzz target (fuzz/seeds/torchfile/):
small files in the shapes torch.save writes (zip + protocol-2 pickle with the
memo use of the real pickler, legacy format), raw pickles, and the hostile
files of issue #18. Standard library only: torch's globals are stood in for by
module stubs, so the pickler writes the same opcodes torch's does.

usage: scripts/fuzz-seeds.py   (from anywhere; rewrites the folder's files)
"""
import collections
import io
import pathlib
import pickle
import shutil
import struct
import sys
import types
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds" / "torchfile"


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


def torch_zip(name, pickle_bytes, storages, archive="archive"):
    with zipfile.ZipFile(OUT / name, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", pickle_bytes)
        z.writestr(f"{archive}/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"{archive}/data/{key}", data)
        z.writestr(f"{archive}/version", b"3\n")


def floats(n):
    return struct.pack(f"<{n}f", *range(n))


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
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
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:8d} {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
