#!/usr/bin/env python3
"""PyTorch + transformers side of bench-distill-step: one OneBit distillation step written the
straightforward way (no torch.compile, no fusing), on the models and batch the C++ side saved.

usage: distill_step.py --dir DIR [--threads N] [--dtype fp32|bf16] [--device cpu|cuda] [--lr LR]
DIR holds teacher/ (a LLaMA in the HF layout), student/ (the same model converted by onebit's
to_onebit: latent W, g, h of every decoder linear) and ids.bin (int64 [B,T], shape in ids.json).

Step (method.md §3, §5): teacher forward (eval, no_grad, output_hidden_states) → student forward
→ loss = kd_loss_scale · KL(softmax(t) ‖ softmax(s)) batchmean + alpha · Σ_{i<L} mean_tokens
‖normalize(t_i) − normalize(s_i)‖² → backward → clip_grad_norm_(1.0) → AdamW step → zero_grad.

It serves commands, one per line on stdin, so that bench-distill-step can interleave its own steps
with these (load from other jobs then hits both sides alike); each answer is one JSON line:
  step     one step: {"loss", "kl", "hidden", "wall_ms", "cpu_ms"} (cpu: process CPU time)
  phases   one step timed per phase: {"phases": {name: [wall_ms, cpu_ms]}}
  memory   peak memory of one step above the memory in use before it, then per phase of a second
           step the peak inside it and what is live at its end (bytes above the memory before):
           {"peak_step_bytes", "resident_bytes", "phases": {name: [peak, live]}}. On CPU: RSS, and
           run with MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=131072 (bench/memory.h).
By hand:  printf 'step\nstep\nphases\nmemory\n' | python distill_step.py --dir build/bench_distill_step
"""
import argparse
import copy
import ctypes
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


# ---- the 1-bit layer (method.md §1) ----
class SignSTE(torch.autograd.Function):
    """sign(W) with sign(0) = +1; backward: grad · (1.001 − tanh(W)²) (onebit's default ste=tanh)."""

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (1.001 - torch.tanh(w) ** 2)


class OneBitLinear(torch.nn.Module):
    """y = LayerNorm_noaffine(((x ⊙ g) · sign(W)ᵀ) ⊙ h), eps 1e-5, no bias (LLaMA)."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        self.g = torch.nn.Parameter(torch.ones(in_features))
        self.h = torch.nn.Parameter(torch.ones(out_features))

    def forward(self, x):
        y = F.linear(x * self.g, SignSTE.apply(self.weight)) * self.h
        return F.layer_norm(y, (y.shape[-1],), eps=1e-5)


def make_student(teacher, student_dir):
    student = copy.deepcopy(teacher)
    for layer in student.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(parent, name, OneBitLinear(child.in_features, child.out_features))
    state = load_file(str(Path(student_dir) / "model.safetensors"))
    if "lm_head.weight" not in state and student.config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    student.load_state_dict(state, strict=True)
    for p in student.parameters():
        p.requires_grad_(False)  # embeddings, lm_head, norms: frozen
    for m in student.modules():
        if isinstance(m, OneBitLinear):
            for p in (m.weight, m.g, m.h):
                p.requires_grad_(True)
    return student.train()


# ---- the loss (method.md §3; onebit/distill/kd_loss.cpp) ----
def kd_loss(t_out, s_out, kd_loss_scale=0.01, alpha=1.0):
    B = s_out.logits.shape[0]
    log_q = F.log_softmax(s_out.logits.float(), dim=-1)
    log_p = F.log_softmax(t_out.logits.float(), dim=-1)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # Σ p(log p − log q) / B
    L = len(t_out.hidden_states) - 1  # index L (after the final norm) is not used
    hidden = 0.0
    for i in range(L):
        t = F.normalize(t_out.hidden_states[i].flatten(0, 1).float(), dim=-1)
        s = F.normalize(s_out.hidden_states[i].flatten(0, 1).float(), dim=-1)
        hidden = hidden + (t - s).pow(2).sum(-1).mean()
    return kd_loss_scale * kl + alpha * hidden, kl, hidden


# ---- timing phases and memory ----
PHASES = ["teacher_fwd", "student_fwd", "kd_loss", "backward", "clip", "adamw"]
LIBC = ctypes.CDLL("libc.so.6")


def status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lr", type=float, default=4e-4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    d = Path(a.dir)

    teacher_dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    teacher = AutoModelForCausalLM.from_pretrained(d / "teacher", dtype=torch.float32).eval()
    student = make_student(teacher, d / "student").to(dev)
    teacher = teacher.to(dev, teacher_dtype)
    for p in teacher.parameters():
        p.requires_grad_(False)
    shape = json.loads((d / "ids.json").read_text())["shape"]
    ids = torch.frombuffer(bytearray((d / "ids.bin").read_bytes()), dtype=torch.int64).view(shape).to(dev)

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    # bf16: autocast over fp32 master weights, the usual PyTorch mixed precision.
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def clocks():
        sync()
        return time.perf_counter(), time.process_time()

    def step(mark=lambda: None):
        with torch.no_grad(), autocast:
            t_out = teacher(ids, output_hidden_states=True)
        mark()
        with autocast:
            s_out = student(ids, output_hidden_states=True)
        mark()
        loss, kl, hidden = kd_loss(t_out, s_out)
        mark()
        loss.backward()
        mark()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        mark()
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark()
        return {"loss": loss.item(), "kl": kl.item(), "hidden": hidden.item()}

    def timed_step():
        (w0, c0) = clocks()
        r = step()
        (w1, c1) = clocks()
        return {**r, "wall_ms": (w1 - w0) * 1e3, "cpu_ms": (c1 - c0) * 1e3}

    def phases_step():
        marks = [clocks()]
        step(lambda: marks.append(clocks()))
        return {"phases": {n: [(t1[0] - t0[0]) * 1e3, (t1[1] - t0[1]) * 1e3]
                           for n, t0, t1 in zip(PHASES, marks, marks[1:])}}

    def mem_current():
        sync()
        if cuda:
            return torch.cuda.memory_allocated(dev)
        LIBC.malloc_trim(0)
        return status_kb("VmRSS") * 1024

    def mem_peak():  # since mem_reset()
        sync()
        return torch.cuda.max_memory_allocated(dev) if cuda else status_kb("VmHWM") * 1024

    def mem_reset():
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM = current RSS

    def memory_step():
        before = mem_current()
        mem_reset()
        step()
        out = {"peak_step_bytes": mem_peak() - before, "resident_bytes": before}
        before = mem_current()
        mem_reset()
        phases = {}

        def mark():
            phases[PHASES[len(phases)]] = [mem_peak() - before, mem_current() - before]
            mem_reset()

        step(mark)
        return {**out, "phases": phases}

    commands = {"step": timed_step, "phases": phases_step, "memory": memory_step}
    print(json.dumps({"ready": True, "trainable": sum(p.numel() for p in params)}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if not cmd:
            continue
        if cmd not in commands:
            raise SystemExit(f"distill_step.py: unknown command '{cmd}' (expected step, phases or memory)")
        print(json.dumps(commands[cmd]()), flush=True)


if __name__ == "__main__":
    main()
