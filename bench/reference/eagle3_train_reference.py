#!/usr/bin/python3
"""PyTorch eager float32 EAGLE-3 training, the reference for draftforge's
training throughput and for its accuracy on a full training recipe.

An independent restatement of the training math (fc over three auxiliary
layers, first decoder layer on [embeddings || hidden], TTT steps with
document-causal attention plus the diagonal blocks of earlier steps, KL loss
over the draft vocabulary, AdamW with gradient clipping), written the way an
ML engineer writes it in eager PyTorch: per-document padded attention, no dense
[L, (k+1)L] mask. It reads the hidden-states files draftforge
generates (token ids included).

Two modes (Debian's python3-torch):
  Throughput: times --steps training steps and prints tokens per second.
    /usr/bin/python3 eagle3_train_reference.py --model DIR \
        --hidden-states DATA/hidden_states --steps 20 --threads 2
  Recipe: trains --epochs epochs on the 90/10 row split of a prepared directory
  (d2t.npy and hidden_states/ as draftforge writes them) with the defaults of
  `draftforge train` (linear schedule with 1 % warm-up, noise 0.05, bfloat16
  rounding of the hidden states, on-policy tokens, 8192-token rows) and prints
  the validation metrics of each epoch. Every token trains: the loss mask of
  the dataset is not read.
    /usr/bin/python3 eagle3_train_reference.py --model DIR --data DATA \
        --epochs 10 --lr 1e-3 --seed 42
"""
import argparse
import json
import math
import os
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
        metrics = {}
        for k in range(steps):
            emb = self.embed[ids]
            cos, sin = self.rope(pos + k)
            hidden = self.layer(emb, hidden, cos, sin, cache, doc_index, doc_mask)
            logits = rms_norm(hidden, self.norm, self.eps) @ self.lm_head.t()
            n = length - k
            z, t, m = logits[:n].float(), targets[k:].float(), mask[k:].float()
            p = torch.softmax(t, -1)
            kl = (p * (torch.log_softmax(t, -1) - torch.log_softmax(z, -1))).sum(-1)
            step_loss = (kl * m).sum() / (m.sum() + 1e-5)
            loss = loss + step_loss
            with torch.no_grad():
                correct = z.argmax(-1) == t.argmax(-1)
                chains_before = prev[:n].sum().item()
                prev[:n] &= correct
                correct_chains = (m * prev[:n]).sum().item()
                accs.append(correct_chains / (m.sum().item() + 1e-5))
                metrics[f"loss_{k}"] = step_loss.item()
                metrics[f"full_acc_{k}"] = accs[-1]
                metrics[f"cond_acc_{k}"] = correct_chains / (chains_before + 1e-5)
                ids = self.draft_to_target[logits.argmax(-1)]
        metrics["loss"] = loss.item()
        self.last_metrics = metrics
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


def linear_schedule(step, warmup, total):
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def epoch_rows(lengths, total_len, epoch):
    """Pack the samples of `epoch` into rows as multipack does for one rank.

    The order is NumPy's default_rng(epoch) permutation (sampler seed 0). Each row
    takes the longest prefix of the remaining samples whose lengths fit, and lists
    them longest first."""
    order = np.random.default_rng(epoch).permutation(len(lengths))
    rows, current, used = [], [], 0
    for position, index in enumerate(order):
        n = min(lengths[index], total_len)
        if used + n > total_len:
            rows.append(current)
            current, used = [], 0
        current.append((position, int(index)))
        used += n
    if current:
        rows.append(current)
    # Sort by descending length. Among equal lengths, the later position in the shuffled order comes first.
    return [[index for position, index in sorted(row, key=lambda item: (-lengths[item[1]], -item[0]))]
            for row in rows]


def prepare_row(samples, row, noise_std, generator):
    """Apply the training data path to one row's hidden states: uniform noise in
    [-std, std) on the three auxiliary layers, then rounding to bfloat16."""
    prepared = []
    for index in row:
        ids, states = samples[index]
        states = states.clone()
        if noise_std > 0:
            noise = torch.rand(states[:, :3].shape, generator=generator) * 2 - 1
            states[:, :3] += noise * noise_std
        prepared.append((ids, states.bfloat16().float()))
    return prepared


def run_recipe(args, cfg, verifier):
    """Trains for --epochs on the 90/10 split of the hidden-states files and prints
    the validation metrics of every epoch, one JSON line each."""
    d2t = torch.from_numpy(np.load(f"{args.data}/d2t.npy")).long()
    vocab_ids = torch.arange(d2t.shape[0]) + d2t
    samples = []
    index = 0
    while True:
        try:
            tensors = read_safetensors(f"{args.data}/hidden_states/hs_{index}.safetensors")
        except FileNotFoundError:
            break
        samples.append((tensors["token_ids"].tolist(), tensors["hidden_states"].float()))
        index += 1
    train_count = int(len(samples) * 0.9)
    train, val = samples[:train_count], samples[train_count:]
    train_lengths = [len(ids) for ids, _ in train]
    val_lengths = [len(ids) for ids, _ in val]

    torch.manual_seed(args.seed)
    model = Draft(cfg, vocab_ids, verifier)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    batches = len(epoch_rows(train_lengths, args.total_seq_len, 0))
    total = (args.epochs_scheduled or args.epochs) * batches
    warmup = total // 100
    noise = torch.Generator().manual_seed(args.seed)
    step_log = open(args.step_log, "w") if args.step_log else None
    step = 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        tokens = 0
        for row in epoch_rows(train_lengths, args.total_seq_len, epoch):
            for group in optimizer.param_groups:
                group["lr"] = args.lr * linear_schedule(step, warmup, total)
            batch = collate(prepare_row(train, row, args.noise_std, noise), args.total_seq_len,
                            cfg["hidden_size"])
            ids, pos, mask, aux, tgt, doc_index, doc_mask, used = batch
            loss, _ = model(aux, ids, pos, mask, tgt, doc_index, doc_mask, args.ttt_steps)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step_log:
                step_log.write(json.dumps({"step": step, "epoch": epoch, "train/loss": loss.item(),
                                           **{f"train/{name}": value for name, value in model.last_metrics.items()}})
                               + "\n")
            step += 1
            tokens += used
        train_seconds = time.perf_counter() - start

        sums = {}
        val_rows = epoch_rows(val_lengths, args.total_seq_len, epoch)
        with torch.no_grad():
            for row in val_rows:
                batch = collate(prepare_row(val, row, 0.0, None), args.total_seq_len, cfg["hidden_size"])
                ids, pos, mask, aux, tgt, doc_index, doc_mask, _ = batch
                model(aux, ids, pos, mask, tgt, doc_index, doc_mask, args.ttt_steps)
                for name, value in model.last_metrics.items():
                    sums[name] = sums.get(name, 0.0) + value
        record = {"epoch": epoch, "train_tokens_per_second": round(tokens / train_seconds, 1)}
        record.update({f"val/{name}_epoch": round(value / len(val_rows), 6) for name, value in sums.items()})
        print(json.dumps(record), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--hidden-states", help="hidden-states folder (throughput mode)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--total-seq-len", type=int, default=8192)
    parser.add_argument("--ttt-steps", type=int, default=3)
    parser.add_argument("--draft-vocab-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=0,
                        help="train this many epochs on --data (recipe mode) instead of timing steps")
    parser.add_argument("--data", help="prepared directory with d2t.npy and hidden_states/ (recipe mode)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise-std", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--step-log", help="write one JSON line of training metrics per step here (recipe mode)")
    parser.add_argument("--epochs-scheduled", type=int, default=0,
                        help="epochs the learning-rate schedule spans (default --epochs), so that a shortened "
                             "run keeps the schedule of a longer one")
    args = parser.parse_args()
    if args.epochs < 0:
        parser.error(f"--epochs must be >= 0, got {args.epochs}")
    if args.epochs > 0:
        if not args.data:
            parser.error("recipe mode (--epochs N) needs --data, a prepared directory with d2t.npy and hidden_states/")
        for needed in ("d2t.npy", "hidden_states/hs_0.safetensors"):
            if not os.path.exists(os.path.join(args.data, needed)):
                parser.error(f"{os.path.join(args.data, needed)} not found; run `draftforge train` once on "
                             f"{args.data} (it writes d2t.npy) and `draftforge generate` (it writes hidden_states/)")
        if args.hidden_states:
            parser.error("--hidden-states belongs to the throughput mode; recipe mode reads DATA/hidden_states")
    else:
        if not args.hidden_states:
            parser.error("throughput mode needs --hidden-states DIR (or pass --epochs N and --data for recipe mode)")
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = json.load(open(f"{args.model}/config.json"))
    verifier = read_safetensors(f"{args.model}/model.safetensors")
    if args.epochs > 0:
        run_recipe(args, cfg, verifier)
        return
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
