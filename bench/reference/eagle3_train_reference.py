#!/usr/bin/python3
"""PyTorch eager float32 EAGLE-3 training step, the reference for draftforge's
training-throughput benchmark.

An independent restatement of the training math (fc over three auxiliary
layers, first decoder layer on [embeddings || hidden], TTT steps with
document-causal attention plus the diagonal blocks of earlier steps, KL loss
over the draft vocabulary, AdamW with gradient clipping), written the way an
ML engineer writes it in eager PyTorch: per-document padded attention, no dense
[L, (k+1)L] mask. It reads the hidden-states files draftforge
generates (token ids included) and prints tokens per second.

Usage (Debian's python3-torch):
  /usr/bin/python3 eagle3_train_reference.py --model DIR \
      --hidden-states DATA/hidden_states --steps 20 --threads 2
"""
import argparse
import json
import math
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[base + begin:base + end], dtype=DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(array.copy()).reshape(info["shape"])
    return out


def rms_norm(x, weight, eps):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Draft(torch.nn.Module):
    def __init__(self, cfg, vocab_ids, verifier):
        super().__init__()
        h, nh, nkv, d, inter = (cfg["hidden_size"], cfg["num_attention_heads"],
                                cfg["num_key_value_heads"], cfg["head_dim"],
                                cfg["intermediate_size"])
        self.h, self.nh, self.nkv, self.d, self.eps = h, nh, nkv, d, cfg["rms_norm_eps"]

        def linear(out_f, in_f):
            return torch.nn.Parameter(torch.randn(out_f, in_f) * 0.02)

        self.fc = linear(h, 3 * h)
        self.q = linear(nh * d, 2 * h)
        self.k = linear(nkv * d, 2 * h)
        self.v = linear(nkv * d, 2 * h)
        self.o = linear(h, nh * d)
        self.gate = linear(inter, h)
        self.up = linear(inter, h)
        self.down = linear(h, inter)
        self.input_norm = torch.nn.Parameter(torch.ones(h))
        self.hidden_norm = torch.nn.Parameter(torch.ones(h))
        self.post_norm = torch.nn.Parameter(torch.ones(h))
        self.norm = torch.nn.Parameter(torch.ones(h))
        embed = verifier["model.embed_tokens.weight"].float()
        head = verifier.get("lm_head.weight", embed).float()
        self.lm_head = torch.nn.Parameter(head[vocab_ids].clone())
        self.register_buffer("embed", embed)
        self.register_buffer("verifier_head", head[vocab_ids].clone())
        self.register_buffer("verifier_norm", verifier["model.norm.weight"].float())
        self.register_buffer("draft_to_target", vocab_ids)
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, d, 2).float() / d))
        self.register_buffer("inv_freq", inv)

    def rope(self, pos):
        angles = pos.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([angles, angles], dim=-1)
        return emb.cos()[:, None, :], emb.sin()[:, None, :]

    def attention(self, x, cos, sin, cache, doc_index, doc_mask):
        length = x.shape[0]
        q = (x @ self.q.t()).view(length, self.nh, self.d)  # [L, heads, d]
        k = (x @ self.k.t()).view(length, self.nkv, self.d)
        v = (x @ self.v.t()).view(length, self.nkv, self.d)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.nh // self.nkv
        k = k.repeat_interleave(group, dim=1)  # [L, heads, d]
        v = v.repeat_interleave(group, dim=1)
        cache.append((k, v))
        scale = 1.0 / math.sqrt(self.d)
        valid = doc_index >= 0  # [D, n]
        gather = doc_index.clamp(min=0)
        # Block 0: document-causal attention over padded documents.
        k0, v0 = cache[0]
        qd, kd, vd = q[gather], k0[gather], v0[gather]  # [D, n, heads, d]
        scores = torch.einsum("bihd,bjhd->bihj", qd, kd) * scale  # [D, n, heads, n]
        scores = scores.masked_fill(~doc_mask[:, :, None, :], float("-inf"))
        # Blocks 1..k: one diagonal score per query, q_i . K^(b)_i.
        diagonal = [((q * kb).sum(-1) * scale)[gather][..., None] for kb, _ in cache[1:]]
        probs = torch.softmax(torch.cat([scores] + diagonal, dim=-1), dim=-1)
        n = scores.shape[-1]
        out = torch.einsum("bihj,bjhd->bihd", probs[..., :n], vd)  # [D, n, heads, d]
        for b, (_, vb) in enumerate(cache[1:]):
            out = out + probs[..., n + b, None] * vb[gather]
        rows = torch.zeros(length, self.nh, self.d)
        rows = rows.index_put((doc_index[valid],), out[valid])
        return rows.reshape(length, self.nh * self.d) @ self.o.t()

    def layer(self, emb, hidden, cos, sin, cache, doc_index, doc_mask):
        e = rms_norm(emb, self.input_norm, self.eps)
        g = rms_norm(hidden, self.hidden_norm, self.eps)
        u = g + self.attention(torch.cat([e, g], -1), cos, sin, cache, doc_index, doc_mask)
        m = rms_norm(u, self.post_norm, self.eps)
        return u + (F.silu(m @ self.gate.t()) * (m @ self.up.t())) @ self.down.t()

    def forward(self, aux, ids, pos, mask, target_hidden, doc_index, doc_mask, steps):
        hidden = aux @ self.fc.t()
        with torch.no_grad():
            targets = rms_norm(target_hidden, self.verifier_norm, self.eps) @ self.verifier_head.t()
        cache = []
        prev = mask.bool()
        length = ids.shape[0]
        loss = torch.zeros(())
        accs = []
        for k in range(steps):
            emb = self.embed[ids]
            cos, sin = self.rope(pos + k)
            hidden = self.layer(emb, hidden, cos, sin, cache, doc_index, doc_mask)
            logits = rms_norm(hidden, self.norm, self.eps) @ self.lm_head.t()
            n = length - k
            z, t, m = logits[:n].float(), targets[k:].float(), mask[k:].float()
            p = torch.softmax(t, -1)
            kl = (p * (torch.log_softmax(t, -1) - torch.log_softmax(z, -1))).sum(-1)
            loss = loss + (kl * m).sum() / (m.sum() + 1e-5)
            with torch.no_grad():
                correct = z.argmax(-1) == t.argmax(-1)
                prev[:n] &= correct
                accs.append(((m * prev[:n]).sum() / (m.sum() + 1e-5)).item())
                ids = self.draft_to_target[logits.argmax(-1)]
        return loss, accs


def pack_rows(samples, total_len):
    rows, current, used = [], [], 0
    for sample in samples:
        n = min(len(sample[0]) - 1, total_len)
        if used + n > total_len and current:
            rows.append(current)
            current, used = [], 0
        current.append(sample)
        used += n
    if current:
        rows.append(current)
    return rows


def collate(row, total_len, hidden):
    ids, pos, mask, aux, tgt, lengths = [], [], [], [], [], []
    for input_ids, states in row:
        n = len(input_ids)
        ids.append(torch.tensor(input_ids[1:]))
        pos.append(torch.arange(1, n))
        mask.append(torch.ones(n - 1))
        aux.append(states[:-1, :3].reshape(n - 1, 3 * hidden))
        tgt.append(states[1:, 3])
        lengths.append(n - 1)
    ids, pos, mask = torch.cat(ids), torch.cat(pos), torch.cat(mask)
    aux, tgt = torch.cat(aux), torch.cat(tgt)
    pad = total_len - ids.shape[0]
    ids = F.pad(ids, (0, pad))
    pos = F.pad(pos, (0, pad))
    mask = F.pad(mask, (0, pad))
    aux = F.pad(aux, (0, 0, 0, pad))
    tgt = F.pad(tgt, (0, 0, 0, pad))
    longest = max(lengths)
    doc_index = torch.full((len(lengths), longest), -1, dtype=torch.long)
    start = 0
    for d, n in enumerate(lengths):
        doc_index[d, :n] = torch.arange(start, start + n)
        start += n
    valid = doc_index >= 0
    causal = torch.tril(torch.ones(longest, longest, dtype=torch.bool))
    doc_mask = causal[None] & valid[:, None, :] & valid[:, :, None]
    doc_mask |= torch.eye(longest, dtype=torch.bool)[None]
    return ids, pos, mask, aux, tgt, doc_index, doc_mask, int(ids.shape[0] - pad)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--hidden-states", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--total-seq-len", type=int, default=8192)
    parser.add_argument("--ttt-steps", type=int, default=3)
    parser.add_argument("--draft-vocab-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = json.load(open(f"{args.model}/config.json"))
    verifier = read_safetensors(f"{args.model}/model.safetensors")
    samples = []
    needed_rows = (args.steps + args.warmup_steps + 1) * (args.total_seq_len // 100 + 1)
    for index in range(needed_rows):
        try:
            tensors = read_safetensors(f"{args.hidden_states}/hs_{index}.safetensors")
        except FileNotFoundError:
            break
        samples.append((tensors["token_ids"].tolist(), tensors["hidden_states"].float()))
    counts = np.zeros(cfg["vocab_size"], dtype=np.int64)
    for ids, _ in samples:
        np.add.at(counts, ids, 1)
    vocab_ids = torch.from_numpy(np.sort(np.argsort(-counts, kind="stable")[:args.draft_vocab_size]))

    model = Draft(cfg, vocab_ids, verifier)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rows = pack_rows(samples, args.total_seq_len)
    tokens, start = 0, None
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            tokens, start = 0, time.perf_counter()
        ids, pos, mask, aux, tgt, doc_index, doc_mask, used = collate(
            rows[step % len(rows)], args.total_seq_len, cfg["hidden_size"])
        loss, accs = model(aux, ids, pos, mask, tgt, doc_index, doc_mask, args.ttt_steps)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += used
    elapsed = time.perf_counter() - start
    print(json.dumps({"implementation": "pytorch-eager-fp32", "torch": torch.__version__,
                      "threads": args.threads, "steps": args.steps,
                      "tokens": tokens, "seconds": round(elapsed, 3),
                      "tokens_per_second": round(tokens / elapsed, 1),
                      "last_loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
