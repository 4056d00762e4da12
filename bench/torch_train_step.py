#!/usr/bin/python3
"""Full training steps of a plain PyTorch (CPU) Llama: the reference side of bench/train-vs-torch.ts.

An independent implementation (no transformers, no propipe code): RMSNorm, RoPE (rotate-half), GQA
attention with an additive causal mask, SwiGLU, untied LM head and the HF-shifted causal cross-entropy
(sum over targets times 1/targets, as propipe's loss_scale does). A step is forward, backward,
torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW.step, with zero_grad(set_to_none=True) before it.

Modes:
  full      every parameter trainable
  llamapro  the same 8-block stack read as LLaMA Pro expanded (originals + interleaved copies whose
            o_proj/down_proj are zero); only the new blocks have requires_grad, so autograd starts at
            the lowest new block (the frozen prefix runs forward without recording) and the frozen
            blocks above it get input gradients but no weight gradients.

Run with Debian's torch:  /usr/bin/python3 bench/torch_train_step.py [--threads 2 --warmup 2 --reps 5 ...]
Prints exactly one JSON line on stdout; progress goes to stderr.
"""
import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def log(msg):
    print(f"[torch] {msg}", file=sys.stderr, flush=True)


def expansion_new_layers(original, new_blocks, groups=None):
    """Expanded indices of the new blocks, as propipe's planExpansion lays them out."""
    groups = groups or new_blocks
    per_group, copies = original // groups, new_blocks // groups
    out, i = [], 0
    for layer in range(original):
        i += 1
        if (layer + 1) % per_group == 0:
            for _ in range(copies):
                out.append(i)
                i += 1
    return out


# ---------------------------------------------------------------- the model


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, nh, nkv, d, m = c["hidden"], c["heads"], c["kv_heads"], c["head_dim"], c["intermediate"]
        self.nh, self.nkv, self.d = nh, nkv, d
        self.input_layernorm = RMSNorm(h, c["eps"])
        self.q_proj = nn.Linear(h, nh * d, bias=False)
        self.k_proj = nn.Linear(h, nkv * d, bias=False)
        self.v_proj = nn.Linear(h, nkv * d, bias=False)
        self.o_proj = nn.Linear(nh * d, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h, c["eps"])
        self.gate_proj = nn.Linear(h, m, bias=False)
        self.up_proj = nn.Linear(h, m, bias=False)
        self.down_proj = nn.Linear(m, h, bias=False)

    def attention(self, x, cos, sin, mask):
        b, t, _ = x.shape
        nh, nkv, d = self.nh, self.nkv, self.d
        group = nh // nkv
        q = self.q_proj(x).view(b, t, nh, d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, nkv, d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, nkv, d).transpose(1, 2)
        q = (q * cos + rotate_half(q) * sin) * (1.0 / math.sqrt(d))
        k = k * cos + rotate_half(k) * sin
        # Query head i uses kv head i // group: group the query heads per kv head so K and V are shared,
        # not repeated ([b, kv, group*t, d] @ [b, kv, d, t]).
        q = q.reshape(b, nkv, group * t, d)
        scores = (q @ k.transpose(-1, -2)).view(b, nkv, group, t, t) + mask
        probs = torch.softmax(scores, dim=-1).view(b, nkv, group * t, t)
        ctx = (probs @ v).view(b, nh, t, d).transpose(1, 2).reshape(b, t, nh * d)
        return self.o_proj(ctx)

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"], c["eps"])
        self.lm_head = nn.Linear(c["hidden"], c["vocab"], bias=False)

    def rope(self, t):
        d = self.c["head_dim"]
        inv = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, ids, labels, cos, sin, mask, loss_scale):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.lm_head(self.norm(x))
        v = logits.shape[-1]
        loss_sum = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
        return loss_sum * loss_scale, loss_sum


def init_weights(model, std, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)


# ---------------------------------------------------------------- BLAS check


def blas_info():
    """Which OpenBLAS this process loaded (from /proc/self/maps) and what it reports about itself."""
    info = {"torch_config_blas": None, "loaded": [], "openblas": None}
    cfg = torch.__config__.show()
    for part in cfg.replace("\n", ",").split(","):
        if "BLAS_INFO" in part:
            info["torch_config_blas"] = part.strip()
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if any(s in path for s in ("blas", "lapack", "mkl", "gomp", "omp")):
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    info["loaded"] = sorted(libs)
    ob = next((p for p in info["loaded"] if "libopenblas" in p), None)
    if ob:
        try:
            lib = ctypes.CDLL(ob)
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            info["openblas"] = {
                "path": ob,
                "pthread_build": "openblas-pthread" in ob,
                "config": lib.openblas_get_config().decode(),
                "corename": lib.openblas_get_corename().decode(),
                "num_threads": lib.openblas_get_num_threads(),
                "parallel": lib.openblas_get_parallel(),  # 0 sequential, 1 pthreads, 2 OpenMP
            }
        except (OSError, AttributeError) as e:
            info["openblas"] = {"path": ob, "error": str(e)}
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOTO"))}
    return info


# ---------------------------------------------------------------- the benchmark


def run_mode(mode, c, args, new_layers):
    gen = torch.Generator().manual_seed(args.seed)
    model = Llama(c)
    init_weights(model, 0.02, gen)
    if mode == "llamapro":
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            for i in new_layers:
                model.layers[i].o_proj.weight.zero_()
                model.layers[i].down_proj.weight.zero_()
        for i in new_layers:
            for p in model.layers[i].parameters():
                p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)

    b, t = args.batch, args.seq
    ids = torch.randint(0, c["vocab"], (b, t), generator=gen)
    labels = ids.clone()
    cos, sin = model.rope(t)
    mask = torch.triu(torch.full((t, t), -1e9), diagonal=1)
    targets = b * (t - 1)
    loss_scale = 1.0 / targets

    parts = {"forward": [], "backward": [], "clip": [], "optimizer": []}
    steps, cpu, losses = [], [], []
    for i in range(args.warmup + args.reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, loss_sum = model(ids, labels, cos, sin, mask, loss_scale)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        c4 = time.process_time()
        losses.append(loss_sum.item() / targets)
        if i < args.warmup:
            continue
        steps.append((t4 - t0) * 1e3)
        cpu.append((c4 - c0) * 1e3)
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k].append(v * 1e3)
    med = statistics.median(steps)
    return {
        "trainable_params": sum(p.numel() for p in params),
        "trainable_tensors": len(params),
        "ms_per_step": {"median": round(med, 3), "min": round(min(steps), 3), "all": [round(s, 1) for s in steps]},
        "tokens_per_s": round(b * t / (med / 1e3), 1),
        # CPU time of the process (every thread) per step: moves much less with other load than wall time.
        "cpu_ms_per_step": round(statistics.median(cpu), 3),
        "breakdown_ms": {k: round(statistics.median(v), 3) for k, v in parts.items()},
        "loss_first_last": [round(losses[0], 5), round(losses[-1], 5)],
        "grad_norm_last": round(float(norm), 6),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-layers", default=None, help="expanded indices of the LLaMA Pro blocks, e.g. 3,7 (default: 2 new blocks interleaved)")
    ap.add_argument("--modes", default="full,llamapro")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    c = {
        "layers": args.layers, "hidden": args.hidden, "heads": args.heads, "kv_heads": args.kv_heads,
        "head_dim": args.hidden // args.heads, "intermediate": args.intermediate, "vocab": args.vocab,
        "eps": 1e-5, "rope_theta": 10000.0,
    }
    if args.new_layers:
        new_layers = [int(s) for s in args.new_layers.split(",")]
    else:
        new_layers = expansion_new_layers(args.layers - 2, 2)
    started = time.perf_counter()
    modes = {}
    for mode in args.modes.split(","):
        log(f"{mode}: {args.warmup} warm-up + {args.reps} timed steps")
        modes[mode] = run_mode(mode, c, args, new_layers)
        log(f"{mode}: {modes[mode]['ms_per_step']['median']:.1f} ms/step, {modes[mode]['tokens_per_s']:.0f} tokens/s")
    doc = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": {"torch_num_threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads()},
        "blas": blas_info(),
        "mkldnn_enabled": torch.backends.mkldnn.is_available(),
        "optimizer": "torch.optim.AdamW (default implementation: per-tensor loop)",
        "shape": {**c, "seq": args.seq, "batch": args.batch, "tokens_per_step": args.seq * args.batch},
        "new_layers": new_layers,
        "timing": "median over timed steps of zero_grad + forward + backward + clip_grad_norm_ + AdamW.step",
        "modes": modes,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(doc), flush=True)


if __name__ == "__main__":
    main()
