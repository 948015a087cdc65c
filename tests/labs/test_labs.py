"""Lab self-tests, run for every otter master in solutions/.

(a) labs/ is what tools/build_labs.py generates, byte for byte, and the build is
    deterministic;
(b) nothing leaks into the student notebook: no hidden test, no solution line;
(c) grading through llmbook.grading: the solution scores full marks, the untouched
    notebook zero, typical wrong answers partial credit, and a broken submission
    becomes an "error" row without costing the others theirs; the autograder zip
    carries the reference values and a Gradescope environment that installs;
(d) the student notebook alone, in a kernel whose working directory holds nothing
    else (as on Colab), makes grader.check work.

Each lab is assigned once per test session (conftest's `lab_builds`, which the grading
attack suite shares).
"""

from __future__ import annotations

import ast
import copy
import csv
import functools
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llmbook import grading
from llmbook.grading import bundle as grading_bundle
from llmbook.grading import sandbox
from llmbook.grading.grade import GradeOptions

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import build_labs  # noqa: E402
import notebook_setup  # noqa: E402

MASTERS = build_labs.masters()


def sandbox_works() -> bool:
    try:
        sandbox.check_sandbox()
    except sandbox.SandboxUnavailable:
        return False
    return True


# The lab self-tests check the labs, not the sandbox (tests/unit/grading/test_grading_attacks.py
# does): without bubblewrap they grade unsandboxed, which is fine for our own notebooks.
UNSAFE = not sandbox_works()
SOLUTION_MARKERS = ("# BEGIN SOLUTION", "# END SOLUTION")

# Typical wrong answers, planted into the solution: lab -> name -> (question that must
# lose points, text in the solution, replacement). Every lab needs at least one.
PLANTED = {
    "lab11_retrieval": {
        "dot_product_instead_of_cosine": (
            "q1",
            "unit = docs / d_norm[:, None]",
            "unit = docs",
        ),
        "precision_replaced_by_reciprocal_rank": (
            "q2",
            "precision = torch.where(rel, hits.double() / rank, torch.zeros_like(s))",
            "precision = torch.where(rel, 1 / rank.double(), torch.zeros_like(s))",
        ),
        "ideal_dcg_from_the_retrieved_top_k": (
            "q3",
            "ideal = (g.sort(dim=1, descending=True).values[:, :top] * discount).sum(dim=1)",
            "ideal = (g.gather(1, order).sort(dim=1, descending=True).values * discount)"
            ".sum(dim=1)",
        ),
    },
    "lab12_responsible": {
        "two_sided_from_absolute_values": (
            "q1",
            "two_sided = min(1.0, 2 * min(p_greater, p_less))",
            "two_sided = float(np.mean(np.abs(t) >= abs(observed) - tol))",
        ),
        "ties_counted_as_wins": (
            "q2",
            "return float((above.sum() + 0.5 * tied.sum()) / (len(m) * len(n)))",
            "return float((above.sum() + tied.sum()) / (len(m) * len(n)))",
        ),
        "false_positives_counted_strictly_below": (
            "q3",
            'fpr = np.searchsorted(n, thresholds, side="right") / len(n)',
            'fpr = np.searchsorted(n, thresholds, side="left") / len(n)',
        ),
    },
    "lab10_translation": {
        "scores_scaled_by_d_model": (
            "q1",
            "scores = q @ k.transpose(-2, -1) / math.sqrt(d_head)",
            "scores = q @ k.transpose(-2, -1) / math.sqrt(d_model)",
        ),
        "finished_rows_not_padded": (
            "q2",
            "nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)",
            "nxt = nxt",
        ),
        "padding_scored_too": (
            "q3",
            "return (picked * real).sum(dim=1)",
            "return picked.sum(dim=1)",
        ),
    },
    "lab09_quantization": {
        "scale_from_mean_instead_of_max": (
            "q1",
            "scale = x.abs().max().float() / 127",
            "scale = x.abs().mean().float() / 127",
        ),
        "rounding_before_scaling": (
            "q2",
            "q = torch.clamp(torch.round(w.float() / scales), -127, 127)",
            "q = torch.clamp(torch.round(w.float()) / scales, -127, 127)",
        ),
        "size_from_state_dict_counts_tied_weights_twice": (
            "q4",
            "tensors = list(module.parameters()) + list(module.buffers())\n"
            "    return sum(t.numel() * t.element_size() for t in tensors)",
            "return sum(t.numel() * t.element_size() "
            "for t in module.state_dict().values())",
        ),
    },
    "lab01_tokens_ngrams": {
        "tie_break_to_largest_pair": (
            "q1",
            "return min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))",
            "return max(pair_counts, key=lambda pair: (pair_counts[pair], pair))",
        ),
        "zero_counts_left_in_pair_counts": (
            "q1",
            "    for gone in [p for p, count in pair_counts.items() if count <= 0]:\n"
            "        del pair_counts[gone]\n",
            "",
        ),
        "wordpiece_continuations_without_hashes": (
            "q3",
            'candidate = word[start:end] if start == 0 else "##" + word[start:end]',
            "candidate = word[start:end]",
        ),
        "wordpiece_unknown_piece_instead_of_word": (
            "q3",
            "return [unk_token]  # one unmatched position: the whole word is unknown",
            "piece, end = unk_token, start + 1",
        ),
        "witten_bell_tokens_instead_of_types": (
            "q4",
            "seen, types = sum(followers.values()), len(followers)",
            "seen, types = sum(followers.values()), sum(followers.values())",
        ),
    },
    "lab02_attention": {
        "unscaled_scores": (
            "q1",
            "return q @ k.transpose(-2, -1) / math.sqrt(d_k)",
            "return q @ k.transpose(-2, -1)",
        ),
        "softmax_nan_on_fully_masked_rows": (
            "q2",
            "row_max = torch.where(torch.isneginf(row_max), 0.0, row_max)",
            "pass",
        ),
        "window_one_key_too_wide": (
            "q3",
            "mask = mask & (key_pos > query_pos - window)",
            "mask = mask & (key_pos >= query_pos - window)",
        ),
        "cache_ignored_queries_start_at_zero": (
            "q3",
            "query_pos = torch.arange(n_k - n_q, n_k, device=device)[:, None]",
            "query_pos = torch.arange(n_q, device=device)[:, None]",
        ),
    },
    "lab03_transformer_block": {
        "rmsnorm_subtracts_the_mean": (
            "q1",
            "inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)",
            "x32 = x32 - x32.mean(dim=-1, keepdim=True)\n"
            "        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)",
        ),
        "rmsnorm_in_input_precision": (
            "q1",
            "x32 = x.float()",
            "x32 = x",
        ),
        "swiglu_width_rounded_down": (
            "q2",
            "d_ff = multiple_of * math.ceil(d_ff / multiple_of)",
            "d_ff = multiple_of * (d_ff // multiple_of)",
        ),
        "truncated_normal_without_correction": (
            "q3",
            "sigma = math.sqrt(scale / fan_in) / 0.87962566103423978",
            "sigma = math.sqrt(scale / fan_in)",
        ),
        "post_norm_block": (
            "q4",
            "h = x + self.attn(self.attn_norm(x), causal)  # (batch, seq, d_model)\n"
            "        return h + self.ffn(self.ffn_norm(h))",
            "h = self.attn_norm(x + self.attn(x, causal))  # (batch, seq, d_model)\n"
            "        return self.ffn_norm(h + self.ffn(h))",
        ),
        "gqa_ignored_in_count": (
            "q5",
            "d_kv = n_kv_heads * (d_model // n_heads)",
            "d_kv = d_model",
        ),
    },
    "lab04_training": {
        "amsgrad_without_the_maximum": (
            "q1",
            "torch.maximum(v_max, v, out=v_max)  # over the raw v, before correction",
            "v_max.copy_(v)",
        ),
        "adam_without_bias_correction": (
            "q1",
            "denominator = (v_max / bias2).sqrt() + self.eps\n"
            "            p -= self.lr * (m / bias1) / denominator",
            "denominator = v_max.sqrt() + self.eps\n"
            "            p -= self.lr * m / denominator",
        ),
        "warmup_off_by_one": (
            "q2",
            "return max_lr * step / warmup_steps",
            "return max_lr * (step + 1) / warmup_steps",
        ),
        "cosine_without_min_lr_floor": (
            "q2",
            "return min_lr + (max_lr - min_lr) * cosine",
            "return max_lr * cosine",
        ),
        "accumulation_mean_of_micro_batch_means": (
            "q4",
            "(nll / n_targets).backward()  # every real target weighs 1 / N",
            "(nll / (y != IGNORE).sum() / len(micro_batches)).backward()",
        ),
        "accumulation_without_zero_grad": (
            "q4",
            "    optimizer.zero_grad()\n    total = 0.0",
            "    total = 0.0",
        ),
        "perplexity_mean_of_batch_means": (
            "q5",
            'reduction="sum")\n'
            "            total_nll += nll.item()\n"
            "            n_tokens += y.numel()",
            'reduction="mean")\n'
            "            total_nll += nll.item()\n"
            "            n_tokens += 1",
        ),
    },
    "lab08_moe": {
        "expert_choice_softmax_over_tokens": (
            "q1",
            "probs = torch.softmax(logits.float(), dim=-1)  # (tokens, n_experts), per token",
            "probs = torch.softmax(logits.float(), dim=0)  # (tokens, n_experts), per token",
        ),
        "expert_choice_each_expert_once_per_slot": (
            "q2",
            "out = expert(x[token[e]]) * gates[e, :, None]  # (capacity, d_model)\n"
            "        y = y.index_add(0, token[e], out.to(y.dtype))",
            "for c in range(token.shape[1]):\n"
            "            t = int(token[e, c])\n"
            "            y[t] = y[t] + gates[e, c] * expert(x[t : t + 1])[0]",
        ),
        "dispatch_calls_each_expert_once_per_token": (
            "q3",
            "out = expert(x[token]) * gates[token, slot, None]\n"
            "            y = y.index_add(0, token, out)",
            "for t, s in zip(token.tolist(), slot.tolist()):\n"
            "                y = y.index_add(\n"
            "                    0, torch.tensor([t]), expert(x[t : t + 1]) * gates[t, s]\n"
            "                )",
        ),
    },
    "lab05_decoding": {
        "entropy_nan_on_minus_inf": (
            "q1",
            "entropy = -torch.where(p > 0, p * log_p, 0.0).sum(dim=-1, keepdim=True)",
            "entropy = -(p * log_p).sum(dim=-1, keepdim=True)",
        ),
        "epsilon_zero_returns_the_input_itself": (
            "q1",
            "return logits.clone()",
            "return logits",
        ),
        "half_precision_returned_as_float32": (
            "q1",
            'return logits.masked_fill(drop, float("-inf"))',
            'return x.masked_fill(drop, float("-inf"))',
        ),
        "beam_scores_not_length_normalised": (
            "q2",
            "finished.append((cand_scores[rank].item() / t**length_penalty, seq))",
            "finished.append((cand_scores[rank].item(), seq))",
        ),
    },
    "lab06_lora": {
        "lora_A_zero_instead_of_B": (
            "q1",
            "self.lora_A = nn.Parameter(torch.empty(r, base.in_features).to(w))\n"
            "        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r).to(w))\n"
            "        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
            "self.lora_A = nn.Parameter(torch.zeros(r, base.in_features).to(w))\n"
            "        self.lora_B = nn.Parameter(torch.empty(base.out_features, r).to(w))\n"
            "        nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))",
        ),
        "scaling_r_over_alpha": (
            "q1",
            "self.scaling = alpha / r",
            "self.scaling = r / alpha",
        ),
        "lora_matrices_in_float32_whatever_the_base": (
            "q1",
            "self.lora_A = nn.Parameter(torch.empty(r, base.in_features).to(w))\n"
            "        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r).to(w))",
            "self.lora_A = nn.Parameter(torch.empty(r, base.in_features))\n"
            "        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))",
        ),
        "merge_reuses_the_base_bias": (
            "q2",
            "merged.bias = nn.Parameter(base.bias.detach().clone())",
            "merged.bias = base.bias",
        ),
    },
    "lab07_metrics": {
        "normalised_by_the_whole_sequence": (
            "q1",
            "scores.append(total / len(choice) if normalise else total)",
            "scores.append(total / len(ids[0]) if normalise else total)",
        ),
        "raw_logits_instead_of_log_probabilities": (
            "q1",
            "log_probs = torch.log_softmax(logits.float(), dim=-1)[0]",
            "log_probs = logits.float()[0]",
        ),
        "bootstrap_without_replacement": (
            "q2",
            "idx = torch.randint(n, (n_boot, n), generator=torch.Generator()"
            ".manual_seed(seed))",
            "idx = torch.argsort(torch.rand(n_boot, n, generator=torch.Generator()"
            ".manual_seed(seed)), dim=1)",
        ),
        "contamination_counts_repeated_ngrams": (
            "q3",
            "shares.append(len(grams & seen) / len(grams) if grams else 0.0)",
            "tokens = text.split()\n"
            "        every = [tuple(tokens[i : i + n]) "
            "for i in range(len(tokens) - n + 1)]\n"
            "        shares.append(sum(g in seen for g in every) / len(every) "
            "if every else 0.0)",
        ),
        "contamination_across_text_seams": (
            "q3",
            "    seen = set()\n    for text in train_texts:\n"
            "        seen |= word_ngrams(text)",
            '    seen = word_ngrams(" ".join(train_texts))',
        ),
    },
}


# Answers that differ from the master's but that the handout allows (other shapes,
# dtypes or values it leaves open): lab -> name -> (text in the solution, replacement).
# Each must get full marks from llmbook-grade and pass every grader.check.
VARIANTS = {
    "lab10_translation": {
        "additive_mask_and_softmax_in_float64": (
            '    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))\n'
            "    mixed = scores.softmax(dim=-1) @ v  # (batch, h, tgt, d_head)\n",
            "    bias = torch.zeros(keep.shape, dtype=torch.float64, device=x.device)\n"
            '    bias = bias.masked_fill(~keep, float("-inf"))[:, None, None, :]  # M\n'
            "    weights = (scores.double() + bias).softmax(dim=-1).to(v.dtype)\n"
            "    mixed = weights @ v  # (batch, h, tgt, d_head)\n",
        ),
        "output_preallocated_with_pads": (
            "    out = torch.full((batch, 1), start_id, dtype=torch.long, device=src.device)\n"
            "    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)\n"
            "    for _ in range(max_new_tokens):\n"
            "        nxt = decode(out, memory, src_mask)[:, -1].argmax(dim=-1)  # (batch,)\n"
            "        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)\n"
            "        out = torch.cat([out, nxt[:, None]], dim=1)\n"
            "        finished = finished | (nxt == eos_id)\n"
            "        if bool(finished.all()):\n"
            "            break\n"
            "    return out",
            "    shape = (batch, 1 + max_new_tokens)\n"
            "    out = torch.full(shape, pad_id, dtype=torch.long, device=src.device)\n"
            "    out[:, 0] = start_id\n"
            "    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)\n"
            "    length = 1\n"
            "    while length <= max_new_tokens and not finished.all():\n"
            "        logits = decode(out[:, :length], memory, src_mask)\n"
            "        out[:, length] = logits[:, -1].argmax(dim=-1).masked_fill(finished, pad_id)\n"
            "        finished |= out[:, length] == eos_id\n"
            "        length += 1\n"
            "    return out[:, :length]",
        ),
        "scores_in_float64_pads_zeroed_by_where": (
            "    logp = logits.log_softmax(dim=-1)\n"
            "    target = tgt[:, 1:]\n"
            "    picked = logp.gather(-1, target[..., None]).squeeze(-1)  # (batch, T)\n"
            "    real = target != pad_id\n"
            "    return (picked * real).sum(dim=1)",
            "    logp = logits.double().log_softmax(dim=-1)\n"
            "    target = tgt[:, 1:]\n"
            "    picked = logp.gather(-1, target.unsqueeze(-1))[..., 0]  # (batch, T)\n"
            "    picked = torch.where(target != pad_id, picked, 0.0)\n"
            "    return picked.sum(dim=1).to(logits.dtype)",
        ),
    },
    "lab11_retrieval": {
        "redundancy_recomputed_from_the_picked_list": (
            "        score = lam * relevance - (1 - lam) * redundancy if step else relevance.clone()\n",
            "        redundancy = (\n"
            "            between[:, picked].amax(dim=1) if picked else torch.zeros_like(relevance)\n"
            "        )  # max over an empty set: 0\n"
            "        score = lam * relevance - (1 - lam) * redundancy\n",
        ),
        "ranks_by_pairwise_comparison": (
            "    n = s.shape[1]\n"
            "    # rank of a doc = number of docs scoring >= it: count from the sorted scores\n"
            '    rank = n - torch.searchsorted(s.sort(dim=1).values, s, side="left")\n'
            "    only_relevant = torch.where(rel, s, torch.full_like(s, -math.inf))\n"
            '    hits = n - torch.searchsorted(only_relevant.sort(dim=1).values, s, side="left")\n',
            "    rank, hits = torch.zeros_like(s), torch.zeros_like(s)\n"
            "    for q, (row, r) in enumerate(zip(s, rel)):\n"
            "        at_least = row[None, :] >= row[:, None]  # [i, j]: doc j scores >= doc i\n"
            "        rank[q] = at_least.sum(dim=1)\n"
            "        hits[q] = (at_least & r[None, :]).sum(dim=1)\n",
        ),
        "ndcg_by_stable_sort_and_topk": (
            "    order = scores.argsort(dim=1, descending=True)[:, :top]\n"
            "    dcg = (g.gather(1, order) * discount).sum(dim=1)\n"
            "    ideal = (g.sort(dim=1, descending=True).values[:, :top] * discount).sum(dim=1)\n"
            "    return torch.where(ideal > 0, dcg / ideal.clamp_min(1e-300), torch.zeros_like(dcg))",
            "    order = scores.sort(dim=1, descending=True, stable=True).indices[:, :top]\n"
            "    dcg = (g.gather(1, order) * discount).sum(dim=1)\n"
            "    ideal = (g.topk(top, dim=1).values * discount).sum(dim=1)\n"
            "    return (dcg / ideal).nan_to_num(nan=0.0)  # 0 / 0 for all-zero gains",
        ),
    },
    "lab12_responsible": {
        "p_values_as_counts_over_math_comb": (
            "    p_greater = float(np.mean(t >= observed - tol))\n"
            "    p_less = float(np.mean(t <= observed + tol))\n",
            "    p_greater = int(np.count_nonzero(t >= observed - tol)) / n_splits\n"
            "    p_less = int(np.count_nonzero(t <= observed + tol)) / n_splits\n",
        ),
        "auc_from_all_pairs": (
            "    ordered = np.sort(n)\n"
            '    above = len(n) - np.searchsorted(ordered, m, side="right")  # non-members with more loss\n'
            '    tied = np.searchsorted(ordered, m, side="right") - np.searchsorted(ordered, m, side="left")\n'
            "    return float((above.sum() + 0.5 * tied.sum()) / (len(m) * len(n)))",
            "    lower = np.count_nonzero(m[:, None] < n[None, :])\n"
            "    tied = np.count_nonzero(m[:, None] == n[None, :])\n"
            "    return float(lower + 0.5 * tied) / (m.size * n.size)",
        ),
        "thresholds_at_member_losses_only": (
            "    thresholds = np.concatenate([m, n])  # TPR and FPR only change at a loss\n"
            '    fpr = np.searchsorted(n, thresholds, side="right") / len(n)\n'
            '    tpr = np.searchsorted(m, thresholds, side="right") / len(m)\n'
            "    allowed = tpr[fpr <= max_fpr]\n"
            "    return float(allowed.max()) if len(allowed) else 0.0",
            "    best = 0.0  # the threshold below every loss\n"
            "    for i, tau in enumerate(m):  # TPR only rises at a member's loss\n"
            '        if np.searchsorted(n, tau, side="right") / len(n) <= max_fpr:\n'
            "            best = max(best, (i + 1) / len(m))\n"
            "    return best",
        ),
    },
    "lab01_tokens_ngrams": {
        "best_pair_by_a_full_sort": (
            "return min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))",
            "ranked = sorted(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))\n"
            "    return ranked[0][0]",
        ),
        "zero_counts_dropped_by_counter_arithmetic": (
            "    for gone in [p for p, count in pair_counts.items() if count <= 0]:\n"
            "        del pair_counts[gone]\n",
            "    pair_counts -= Counter()  # in place: keeps only positive counts\n",
        ),
        "encode_with_merge_word_directly": (
            "    word_freqs = Counter({tuple(word): 1})\n"
            "    pair_counts = full_pair_count(word_freqs)\n"
            "    for pair in merges:\n"
            "        if pair in pair_counts:\n"
            "            word_freqs = merge_and_update(word_freqs, pair_counts, pair)\n"
            "    [symbols] = word_freqs\n"
            "    return list(symbols)",
            "    symbols = tuple(word)\n"
            "    for pair in merges:\n"
            "        symbols = merge_word(symbols, pair)\n"
            "    return list(symbols)",
        ),
        "wordpiece_with_a_for_else": (
            "        end, piece = len(word), None\n"
            "        while end > start:\n"
            '            candidate = word[start:end] if start == 0 else "##" + word[start:end]\n'
            "            if candidate in vocab:\n"
            "                piece = candidate\n"
            "                break\n"
            "            end -= 1\n"
            "        if piece is None:\n",
            "        piece = None\n"
            "        for end in range(len(word), start, -1):\n"
            '            candidate = ("##" if start else "") + word[start:end]\n'
            "            if candidate in vocab:\n"
            "                piece = candidate\n"
            "                break\n"
            "        if piece is None:\n",
        ),
        "witten_bell_by_a_loop_from_the_empty_context": (
            "    context = tuple(context)\n"
            "    followers = counts.get(context, Counter())\n"
            "    seen, types = sum(followers.values()), len(followers)\n"
            "    lower = 1 / vocab_size  # below the empty context: uniform\n"
            "    if context:\n"
            "        lower = witten_bell_prob(word, context[1:], counts, vocab_size)\n"
            "    if seen == 0:\n"
            "        return lower  # an unseen context: back off completely\n"
            "    return (followers[word] + types * lower) / (seen + types)",
            "    context = list(context)\n"
            "    prob = 1.0 / vocab_size\n"
            "    for start in range(len(context), -1, -1):  # (), then longer contexts\n"
            "        followers = counts.get(tuple(context[start:]), {})\n"
            "        seen, types = sum(followers.values()), len(followers)\n"
            "        if seen:\n"
            "            prob = (followers.get(word, 0) + types * prob) / (seen + types)\n"
            "    return prob",
        ),
    },
    "lab02_attention": {
        "scores_with_the_queries_scaled_first": (
            "return q @ k.transpose(-2, -1) / math.sqrt(d_k)",
            "return torch.matmul(q * d_k**-0.5, k.transpose(-2, -1))",
        ),
        "mask_applied_with_masked_fill": (
            'scores = torch.where(mask, scores, float("-inf"))',
            'scores = scores.masked_fill(~mask, float("-inf"))',
        ),
        "sliding_window_from_tril": (
            "    query_pos = torch.arange(n_k - n_q, n_k, device=device)[:, None]  # (n_q, 1)\n"
            "    key_pos = torch.arange(n_k, device=device)[None, :]  # (1, n_k)\n"
            "    mask = key_pos <= query_pos  # causal\n"
            "    if window is not None:\n"
            "        mask = mask & (key_pos > query_pos - window)\n",
            "    ones = torch.ones(n_q, n_k, dtype=torch.bool, device=device)\n"
            "    mask = ones.tril(n_k - n_q)  # key j <= query position\n"
            "    if window is not None:\n"
            "        mask &= ~ones.tril(n_k - n_q - window)\n",
        ),
        "padding_mask_from_three_d_lengths": (
            "return (positions < lengths[:, None])[:, None, :]  # (batch, 1, n)",
            "return lengths[:, None, None] > positions  # (batch, 1, n)",
        ),
        "weighted_values_by_einsum": (
            "return weights @ v, weights",
            'return torch.einsum("...qk,...kd->...qd", weights, v), weights',
        ),
        "heads_split_with_unflatten": (
            "        q = self.q_proj(x).view(heads).transpose(1, 2)  # (batch, n_heads, seq, d_head)\n"
            "        k = self.k_proj(x).view(heads).transpose(1, 2)\n"
            "        v = self.v_proj(x).view(heads).transpose(1, 2)\n",
            "        split = (-1, (self.n_heads, self.d_head))\n"
            "        q, k, v = (\n"
            "            proj(x).unflatten(*split).transpose(1, 2)\n"
            "            for proj in (self.q_proj, self.k_proj, self.v_proj)\n"
            "        )\n",
        ),
    },
    "lab03_transformer_block": {
        "rms_by_sqrt_and_division": (
            "        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)\n"
            "        return self.weight * (x32 * inv_rms).to(x.dtype)  # (..., d_model)",
            "        rms = torch.sqrt(x32.square().mean(dim=-1, keepdim=True) + self.eps)\n"
            "        return self.weight * (x32 / rms).to(x.dtype)",
        ),
        "silu_written_out": (
            "hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (..., d_ff)",
            "gate = self.gate_proj(x)\n"
            "        hidden = gate * torch.sigmoid(gate) * self.up_proj(x)",
        ),
        "truncated_normal_drawn_in_float64": (
            "    with torch.no_grad():\n"
            "        weight.uniform_(2 * low - 1, 2 * high - 1)  # 2u - 1\n"
            "        weight.erfinv_().mul_(math.sqrt(2) * sigma)\n"
            "        weight.clamp_(-2 * sigma, 2 * sigma)  # rounding at the very edge\n",
            "    u = torch.empty(weight.shape, dtype=torch.float64).uniform_(low, high)\n"
            "    z = math.sqrt(2) * torch.erfinv(2 * u - 1)\n"
            "    with torch.no_grad():\n"
            "        weight.copy_((sigma * z).clamp(-2 * sigma, 2 * sigma))\n",
        ),
        # the tests load fixed weights by name: the order layers are made in is free
        "swiglu_layers_made_in_another_order": (
            "        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)\n"
            "        self.up_proj = nn.Linear(d_model, d_ff, bias=False)\n"
            "        self.down_proj = nn.Linear(d_ff, d_model, bias=False)\n",
            "        self.down_proj = nn.Linear(d_ff, d_model, bias=False)\n"
            "        self.up_proj = nn.Linear(d_model, d_ff, bias=False)\n"
            "        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)\n",
        ),
        "block_parts_made_in_another_order": (
            "        self.attn_norm = RMSNorm(d_model, eps)\n"
            "        self.attn = MultiHeadSelfAttention(d_model, n_heads, bias=False)\n"
            "        self.ffn_norm = RMSNorm(d_model, eps)\n"
            "        self.ffn = SwiGLU(d_model, d_ff, multiple_of)\n",
            "        self.ffn = SwiGLU(d_model, d_ff, multiple_of)\n"
            "        self.ffn_norm = RMSNorm(d_model, eps)\n"
            "        self.attn = MultiHeadSelfAttention(d_model, n_heads, bias=False)\n"
            "        self.attn_norm = RMSNorm(d_model, eps)\n",
        ),
        "causal_mask_by_comparing_positions": (
            "causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()",
            "pos = torch.arange(n, device=x.device)\n"
            "        causal = pos[None, :] <= pos[:, None]",
        ),
        "count_by_listing_the_matrices": (
            "    attention = 2 * d_model * d_model + 2 * d_model * d_kv  # W_Q, W_O; W_K, W_V\n"
            "    per_layer = attention + 3 * d_model * d_ff + 2 * d_model  # + SwiGLU + 2 norms\n",
            "    shapes = [(d_model, d_model)] * 2 + [(d_kv, d_model)] * 2  # Q, O; K, V\n"
            "    shapes += [(d_ff, d_model)] * 3 + [(d_model, 1)] * 2  # SwiGLU; 2 norms\n"
            "    per_layer = sum(math.prod(shape) for shape in shapes)\n",
        ),
    },
    "lab04_training": {
        "moments_stored_back_in_the_lists": (
            "        for p, m, v, v_max in zip(self.params, self.m, self.v, self.v_max, strict=True):\n"
            "            if p.grad is None:\n"
            "                continue\n"
            "            g = p.grad\n"
            "            m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)\n"
            "            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)\n"
            "            torch.maximum(v_max, v, out=v_max)  # over the raw v, before correction\n"
            "            denominator = (v_max / bias2).sqrt() + self.eps\n"
            "            p -= self.lr * (m / bias1) / denominator",
            "        for i, p in enumerate(self.params):\n"
            "            if p.grad is None:\n"
            "                continue\n"
            "            g = p.grad\n"
            "            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * g\n"
            "            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g\n"
            "            self.v_max[i] = torch.maximum(self.v_max[i], self.v[i])\n"
            "            m_hat = self.m[i] / bias1\n"
            "            p.sub_(self.lr * m_hat / (torch.sqrt(self.v_max[i] / bias2) + self.eps))",
        ),
        "global_norm_from_the_per_tensor_norms": (
            "total_norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)).item()",
            "norms = torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads])\n"
            "    total_norm = float(torch.linalg.vector_norm(norms))",
        ),
        # rounding differs from the solution's; 30 Adam steps keep the losses close
        "loss_scaled_by_the_reciprocal_count": (
            "(nll / n_targets).backward()  # every real target weighs 1 / N",
            "(nll * (1.0 / n_targets)).backward()",
        ),
        "summed_loss_from_per_token_losses": (
            'nll = F.cross_entropy(*flat, ignore_index=IGNORE, reduction="sum")',
            'nll = F.cross_entropy(*flat, ignore_index=IGNORE, reduction="none").sum()',
        ),
        "batches_by_torch_split_summed_in_float64": (
            "    total_nll, n_tokens = 0.0, 0\n"
            "    with torch.no_grad():\n"
            "        for start in range(0, len(blocks), batch_size):\n"
            "            batch = blocks[start : start + batch_size]\n",
            "    total_nll, n_tokens = torch.zeros((), dtype=torch.float64), 0\n"
            "    with torch.no_grad():\n"
            "        for batch in torch.split(blocks, batch_size):\n",
        ),
    },
    "lab07_metrics": {
        "quantiles_with_numpy": (
            "low, high = torch.quantile(means, q).tolist()",
            "import numpy as np\n\n"
            "    low, high = (float(v) for v in np.quantile(means.numpy(), q.numpy()))",
        ),
        "choices_scored_in_float64": (
            "return torch.stack(scores).float()",
            "return torch.stack(scores).double().float()",
        ),
        "scores_as_a_float32_tensor_first": (
            "x = torch.as_tensor(scores, dtype=torch.float64).flatten()",
            "x = torch.as_tensor(scores).double().flatten()",
        ),
    },
    "lab08_moe": {
        "expert_choice_by_a_full_sort": (
            "gates, token = torch.topk(probs.T, capacity, dim=-1)  # (n_experts, capacity)",
            "gates, token = torch.sort(probs.T, dim=-1, descending=True)\n"
            "    gates, token = gates[:, :capacity], token[:, :capacity]",
        ),
        "combine_in_place_with_index_add_": (
            "y = y.index_add(0, token[e], out.to(y.dtype))",
            "y.index_add_(0, token[e], out)",
        ),
    },
    "lab05_decoding": {
        "entropy_in_float64": (
            "x = logits.float() if half else logits",
            "x = logits.double()",
        ),
        "entropy_from_torch_special_xlogy": (
            "entropy = -torch.where(p > 0, p * log_p, 0.0).sum(dim=-1, keepdim=True)",
            "entropy = -torch.special.xlogy(p, p).sum(dim=-1, keepdim=True)",
        ),
        "ties_broken_by_torch_sort": (
            "cand_scores, cand = torch.topk(total, 2 * num_beams)",
            "cand_scores, cand = torch.sort(total, descending=True, stable=True)\n"
            "        cand_scores, cand = cand_scores[: 2 * num_beams], "
            "cand[: 2 * num_beams]",
        ),
    },
    "lab06_lora": {
        "update_through_the_product_matrix": (
            "low = x @ self.lora_A.T  # (..., r)\n"
            "        return self.base(x) + self.scaling * (low @ self.lora_B.T)",
            "delta = self.lora_B @ self.lora_A  # (d_out, d_in)\n"
            "        return self.base(x) + self.scaling * (x @ delta.T)",
        ),
        "merge_by_copying_into_a_fresh_layer": (
            "merged.weight = nn.Parameter((w + delta).detach().clone())\n"
            "    if base.bias is not None:\n"
            "        merged.bias = nn.Parameter(base.bias.detach().clone())",
            "with torch.no_grad():\n"
            "        merged.weight.copy_(w + delta)\n"
            "        if base.bias is not None:\n"
            "            merged.bias.copy_(base.bias)",
        ),
    },
    "lab09_quantization": {
        "scale_of_shape_1": (
            "scale = x.abs().max().float() / 127",
            "scale = x.abs().max().float().reshape(1) / 127",
        ),
        "scale_of_shape_1_for_zeros_too": (
            "scale = torch.ones((), dtype=torch.float32)  # an all-zero tensor",
            "scale = torch.ones(1, dtype=torch.float32)  # an all-zero tensor",
        ),
        "tiny_positive_scale_for_zeros": (
            "scale = torch.ones((), dtype=torch.float32)  # an all-zero tensor",
            "scale = torch.tensor(1e-8)  # an all-zero tensor",
        ),
        "tiny_positive_scale_for_zero_rows": (
            "scales = torch.where(scales == 0, torch.ones_like(scales), scales)",
            "scales = torch.where(scales == 0, torch.full_like(scales, 1e-8), scales)",
        ),
    },
}


@dataclass
class Lab:
    master: Path
    build: build_labs.LabBuild
    student: nbformat.NotebookNode
    questions: dict[str, float]

    @property
    def name(self) -> str:
        return self.master.stem


def raw_block(nb, begin: str, end: str) -> list:
    """Cells between the raw marker cells `begin` and `end` (all such blocks)."""
    cells, inside = [], False
    for cell in nb.cells:
        text = cell.source.strip()
        if cell.cell_type == "raw" and text.startswith(begin):
            inside = True
        elif cell.cell_type == "raw" and text.startswith(end):
            inside = False
        elif inside:
            cells.append(cell)
    return cells


def solution_sources(master_path: Path) -> list[str]:
    """The master's answer cells, marker lines removed (what a good student writes)."""
    master = nbformat.read(master_path, as_version=4)
    cells = raw_block(master, "# BEGIN SOLUTION", "# END SOLUTION")
    return [
        "\n".join(
            line
            for line in cell.source.splitlines()
            if line.strip() not in SOLUTION_MARKERS
        )
        for cell in cells
        if cell.cell_type == "code"
    ]


def solution_only_lines(master_path: Path) -> set[str]:
    """Stripped code lines inside `# BEGIN SOLUTION` ... `# END SOLUTION` comments."""
    master = nbformat.read(master_path, as_version=4)
    found, inside = set(), False
    for cell in raw_block(master, "# BEGIN SOLUTION", "# END SOLUTION"):
        for line in cell.source.splitlines():
            text = line.strip()
            if text.startswith(SOLUTION_MARKERS[0]):
                inside = True
            elif text.startswith(SOLUTION_MARKERS[1]):
                inside = False
            elif inside and text and not text.startswith("#") and text != "...":
                found.add(text)
    return found


def hidden_tests(master_path: Path) -> list[str]:
    """Source of every hidden test function in the master."""
    master = nbformat.read(master_path, as_version=4)
    tests = raw_block(master, "# BEGIN TESTS", "# END TESTS")
    hidden = [c.source for c in tests if "hidden" in c.source.splitlines()[0].lower()]
    return [ast.unparse(ast.parse(src).body[0]) for src in hidden]


def answer_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if build_labs.ANSWER_TAG in c.metadata.get("tags", [])]


def spans_of(master: Path, old: str) -> list[tuple[int, int, int]]:
    """(answer cell, start, end) of every occurrence of `old` in the master's answers;
    all of them in one cell (a replacement changes one answer)."""
    found = []
    for i, source in enumerate(solution_sources(master)):
        start = source.find(old)
        while start >= 0:
            found.append((i, start, start + len(old)))
            start = source.find(old, start + 1)
    assert found and len({i for i, _, _ in found}) == 1, (
        f"{old!r} is not in exactly one answer cell"
    )
    return found


def answered(lab: Lab, *replacements: tuple[str, str]) -> nbformat.NotebookNode:
    """The student notebook with the master's answers pasted in, changed by text
    replacements (`old` -> `new`, every occurrence in its one answer cell), which
    must not overlap."""
    nb = copy.deepcopy(lab.student)
    answers = answer_cells(nb)
    sources = solution_sources(lab.master)
    assert len(answers) == len(sources), "answer cells and solution cells differ"
    edits = sorted(
        (span, new) for old, new in replacements for span in spans_of(lab.master, old)
    )
    for a, b in zip(edits, edits[1:]):
        assert a[0][0] != b[0][0] or a[0][2] <= b[0][1], "replacements overlap"
    for (i, start, end), new in reversed(edits):  # from the end: offsets stay valid
        sources[i] = sources[i][:start] + new + sources[i][end:]
    for cell, source in zip(answers, sources, strict=True):
        cell.source = source
    return nb


@functools.cache
def variant_groups(master: Path) -> dict[str, int]:
    """Which submission each handout variant of the lab `master` is graded in: a
    variant joins the first group whose replacements it does not overlap, so that
    the variants, each a correct answer, share a few submissions (one notebook run
    each) instead of one each."""
    groups: list[list[tuple[int, int, int]]] = []
    where = {}
    for name, (old, _) in VARIANTS.get(master.stem, {}).items():
        spans = spans_of(master, old)
        for k, taken in enumerate(groups):
            if not any(i == j and s < f and t < e for i, s, e in spans
                       for j, t, f in taken):  # fmt: skip
                taken += spans
                where[name] = k
                break
        else:
            groups.append(list(spans))
            where[name] = len(groups) - 1
    return where


def built_lab(master: Path, build: build_labs.LabBuild) -> Lab:
    student = nbformat.reads(build.files[master.name].decode(), as_version=4)
    questions = grading_bundle.load_bundle(build.autograder_zip).questions
    return Lab(master, build, student, questions)


@pytest.fixture(scope="module", params=MASTERS, ids=lambda p: p.stem)
def lab(request, lab_builds) -> Lab:
    return built_lab(request.param, lab_builds(request.param))


@pytest.fixture(scope="module")
def graded(lab, tmp_path_factory) -> tuple[dict[str, dict], Path]:
    """Grade the solution, the untouched notebook, the planted mistakes and a corrupt
    file in one run; return the rows by file stem, and the CSV."""
    subs = tmp_path_factory.mktemp(f"{lab.name}-submissions")
    nbformat.write(answered(lab), subs / "solution.ipynb")
    nbformat.write(lab.student, subs / "untouched.ipynb")
    for name, (_, old, new) in PLANTED.get(lab.name, {}).items():
        nbformat.write(answered(lab, (old, new)), subs / f"planted_{name}.ipynb")
    groups = variant_groups(lab.master)
    for k in sorted(set(groups.values())):
        together = [VARIANTS[lab.name][n] for n, g in groups.items() if g == k]
        nbformat.write(answered(lab, *together), subs / f"variants_{k}.ipynb")
    (subs / "corrupt.ipynb").write_text('{"cells": [', encoding="utf-8")
    out = subs.parent / f"{lab.name}-grades.csv"
    options = GradeOptions(timeout=240, workers=2, unsafe=UNSAFE)
    rows = grading.grade_submissions(lab.build.autograder_zip, subs, out, options)
    return {Path(r["file"]).stem: r for r in rows}, out


# --- (a) labs/ is generated, up to date and deterministic --------------------------


def test_labs_folder_is_up_to_date(lab):
    """labs/ holds exactly what the build makes (one build per lab per run: the `lab`
    fixture's; a build that were not deterministic would fail here too)."""
    assert build_labs.differences([lab.build], ROOT / "labs", all_labs=False) == [], (
        "labs/ is out of date, run `make labs`"
    )


FASTEST = next(m for m in MASTERS if m.stem.startswith("lab09"))


def test_check_command_and_determinism_on_one_lab(tmp_path, lab_builds):
    """`build_labs.py --check` (what `make labs` users run) passes, and two builds of
    a lab are byte-identical: on the fastest lab, as the builder is shared."""
    master = FASTEST
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/build_labs.py"), "--check", str(master)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"labs/ is out of date, run `make labs`:\n{result.stdout}{result.stderr}"
    )
    assert build_labs.build_lab(master, tmp_path).files == lab_builds(master).files


def test_check_names_changed_and_stale_files(lab, tmp_path):
    assert build_labs.differences([lab.build], tmp_path, all_labs=True) == [
        f"labs/{rel} is missing" for rel in lab.build.files
    ]
    for rel, data in lab.build.files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert build_labs.differences([lab.build], tmp_path, all_labs=True) == []
    (tmp_path / lab.master.name).write_bytes(b"{}")
    (tmp_path / "lab99_gone.ipynb").write_bytes(b"{}")
    assert build_labs.differences([lab.build], tmp_path, all_labs=True) == [
        f"labs/{lab.master.name} is out of date",
        "labs/lab99_gone.ipynb has no master in solutions/",
    ]


# --- (b) nothing leaks into the student notebook -----------------------------------


def embedded_tests(student: nbformat.NotebookNode) -> dict[str, str]:
    """The public test files that the student notebook's init cell carries."""
    [init] = [c for c in student.cells if "PUBLIC_TESTS = {" in c.source]
    for node in ast.parse(init.source).body:
        if (
            isinstance(node, ast.Assign)
            and ast.unparse(node.targets[0]) == "PUBLIC_TESTS"
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("the init cell does not assign PUBLIC_TESTS")


def test_no_hidden_tests_in_student_notebook(lab):
    public = embedded_tests(lab.student)
    assert sorted(public) == sorted(f"{q}.py" for q in lab.questions)
    with zipfile.ZipFile(lab.build.autograder_zip) as zf:
        full = "\n".join(zf.read(f"tests/{name}").decode() for name in public)
    text = "\n".join([c.source for c in lab.student.cells] + list(public.values()))
    assert "# HIDDEN" not in text and "hidden=True" not in text
    hidden = hidden_tests(lab.master)
    assert hidden, f"{lab.name} has no hidden tests"
    for source in hidden:
        assert source in full, "hidden test missing from the autograder zip"
        name = source.split("(")[0].removeprefix("def ")
        assert name not in text, f"hidden test {name} leaked into the student notebook"
        body = source.split("\n", 1)[1]
        assert body not in text, f"the body of {name} leaked into the student notebook"


def test_no_solutions_in_student_notebook(lab):
    text = lab.build.files[lab.master.name].decode()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN TESTS", "BEGIN QUESTION"):
        assert marker not in text, f"{marker!r} left in the student notebook"
    secret = solution_only_lines(lab.master)
    assert secret, "no solution lines found in the master"
    student_lines = {
        line.strip() for cell in lab.student.cells for line in cell.source.splitlines()
    }
    leaked = sorted(secret & student_lines)
    assert not leaked, f"solution lines in the student notebook: {leaked}"
    assert all(
        not c.get("outputs") for c in lab.student.cells if c.cell_type == "code"
    ), "the student notebook must not carry outputs"


def test_rubrics_reach_the_instructor_only(lab):
    """Rubric cells (first line `<!-- RUBRIC -->`) leave the student copy and go,
    in order, into the autograder zip's rubric.md; a written question has one."""
    master = nbformat.read(lab.master, as_version=4)
    cells = master.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and cell.source.startswith(
            "## Your turn (written"
        ):
            assert i + 1 < len(cells) and build_labs.is_rubric(cells[i + 1]), (
                f"{lab.name}: the written question in cell {i} has no rubric cell "
                "right after it"
            )
    rubrics = [
        c.source.split("\n", 1)[1].strip() for c in cells if build_labs.is_rubric(c)
    ]
    student_text = "\n".join(c.source for c in lab.student.cells)
    assert build_labs.RUBRIC_MARKER not in student_text
    with zipfile.ZipFile(lab.build.autograder_zip) as zf:
        shipped = zf.read("rubric.md").decode() if "rubric.md" in zf.namelist() else ""
    assert shipped == lab.build.rubric
    if not rubrics:
        assert not shipped, "rubric.md without rubric cells"
        return
    assert shipped.index(rubrics[0]) < shipped.index(rubrics[-1]) or len(rubrics) == 1
    for body in rubrics:
        assert body in shipped, "a rubric is missing from rubric.md"
        for line in body.splitlines():
            if len(line.strip()) > 30:
                assert line.strip() not in student_text, f"rubric leaked: {line!r}"


# --- (c) grading self-test ----------------------------------------------------------


def test_every_lab_has_a_planted_mistake(lab):
    assert PLANTED.get(lab.name), (
        f"add a typical wrong answer for {lab.name} to PLANTED"
    )


def test_solution_scores_full_marks(lab, graded):
    rows, _ = graded
    row = rows["solution"]
    assert row["status"] == "ok", row["error"]
    assert row["total"] == row["possible"] == sum(lab.questions.values()), row


def test_untouched_notebook_scores_zero(graded):
    row = graded[0]["untouched"]
    assert row["status"] == "ok", row["error"]
    assert row["total"] == 0, row


@pytest.mark.parametrize("mistake", [m for p in PLANTED.values() for m in p])
def test_planted_mistake_gets_partial_credit(lab, graded, mistake):
    if mistake not in PLANTED.get(lab.name, {}):
        pytest.skip(f"{mistake} is planted in another lab")
    question = PLANTED[lab.name][mistake][0]
    row = graded[0][f"planted_{mistake}"]
    assert row["status"] == "ok", row["error"]
    assert 0 < row["total"] < row["possible"], row
    assert row[question] < lab.questions[question], f"{question} should lose points"


@pytest.mark.parametrize("variant", [v for p in VARIANTS.values() for v in p])
def test_handout_variant_gets_full_marks(lab, graded, variant):
    """What the handout allows, llmbook-grade accepts (grader.check: see below).
    Graded in one submission with the lab's other variants that change other lines
    (`variant_groups`): a rejected variant fails the tests of all of them, which name
    the group."""
    if variant not in VARIANTS.get(lab.name, {}):
        pytest.skip(f"{variant} is a variant of another lab")
    groups = variant_groups(lab.master)
    row = graded[0][f"variants_{groups[variant]}"]
    with_it = sorted(n for n, g in groups.items() if g == groups[variant])
    assert row["status"] == "ok", (with_it, row["error"])
    assert row["total"] == row["possible"] == sum(lab.questions.values()), (
        with_it,
        row,
    )


def test_corrupt_notebook_is_an_error_row_and_the_others_survive(graded):
    rows, csv_path = graded
    assert rows["corrupt"]["status"] == "error"
    assert "not a readable notebook" in rows["corrupt"]["error"]
    with open(csv_path, newline="", encoding="utf-8") as f:
        on_disk = {Path(r["file"]).stem: r for r in csv.DictReader(f)}
    assert set(on_disk) == set(rows)
    assert on_disk["solution"]["status"] == "ok"


def test_timeout_keeps_the_questions_checked_before_it(tmp_path, lab_builds):
    """The CPU-time limit is the grader's, the same for every lab: checked on the
    fastest one."""
    lab = built_lab(FASTEST, lab_builds(FASTEST))
    nb = answered(lab)
    nb.cells.append(nbformat.v4.new_code_cell("while True:\n    pass"))
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(nb, subs / "forever.ipynb")
    options = GradeOptions(timeout=15, unsafe=UNSAFE)
    [row] = grading.grade_submissions(
        lab.build.autograder_zip, subs, tmp_path / "out.csv", options
    )
    assert row["status"] == "incomplete", row
    assert "used up its 15 s of CPU time" in row["error"], row
    assert row["total"] > 0, "the questions checked before the loop keep their points"


def test_autograder_zip_has_reference_values(lab):
    b = grading_bundle.load_bundle(lab.build.autograder_zip)
    tests = [t for ts in b.tests.values() for t in ts]
    assert sorted(b.reference) == sorted(t.name for t in tests)
    for (
        t
    ) in tests:  # only a test whose asserts all sit in a failure branch records none
        if not all(site.fail for site in b.sites[t.name]):
            assert b.reference[t.name]["asserts"], f"{t.name} recorded no assert"


def pins(text: str) -> dict[str, str]:
    """name -> version of the `name==version` lines (extras dropped)."""
    found = {}
    for line in text.splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            name, version = spec.split("==", 1)
            found[name.split("[", 1)[0].strip().lower()] = version.strip()
    return found


def test_gradescope_environment_installs_the_pinned_cpu_stack(lab):
    with zipfile.ZipFile(lab.build.autograder_zip) as zf:
        files = {n: zf.read(n).decode() for n in zf.namelist() if "/" not in n}
    requirements, setup = files["requirements.txt"], files["setup.sh"]
    ours = pins((ROOT / "requirements.txt").read_text())
    shipped = pins(requirements)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert shipped["torch"] == ours["torch"], "the zip must pin the tested torch"
    for name in ("numpy", "transformers", "safetensors", "otter-grader", "ipykernel"):
        assert shipped[name] == ours[name], name
    assert all(ours.get(n) == v for n, v in shipped.items()), "a pin differs"
    assert "pytest" not in shipped and "jupyter-book" not in shipped
    assert files["constraints.txt"] == (ROOT / "constraints.txt").read_text()
    assert "python=3.11" in setup and "python=3.11" in files["environment.yml"]
    assert "-n otter-env" in setup, "otter's run_autograder activates otter-env"
    assert (
        "-r /autograder/source/requirements.txt -c /autograder/source/constraints.txt"
        in setup
    )
    url, branch = notebook_setup.repository()  # the URL lives only in _config.yml
    assert f"llmbook @ git+{url}@{branch}" in setup
    assert "/root/miniforge3" in setup and "/root/miniforge3" in files["run_autograder"]


def test_cli_reports_missing_autograder_and_empty_folder(lab, tmp_path, capsys):
    args = ["--submissions", str(tmp_path), "--out", str(tmp_path / "g.csv")]
    if UNSAFE:
        args.append("--unsafe-no-sandbox")
    assert grading.main(["--autograder", str(tmp_path / "nope.zip"), *args]) == 2
    assert "autograder zip not found" in capsys.readouterr().err
    assert grading.main(["--autograder", str(lab.build.autograder_zip), *args]) == 2
    assert "no .ipynb files" in capsys.readouterr().err


# --- (d) the student notebook works alone, as on Colab ------------------------------

PRETEND_COLAB = """\
# Test harness: make otter take its Colab code paths (it looks for "google.colab" in
# the IPython shell's name), after the setup cell, which on real Colab installs otter.
from otter.check.utils import IPythonInterpreter

IPythonInterpreter.COLAB.value.running = lambda: True"""

CHECK_ALL = """\
assert grader.interpreter is IPythonInterpreter.COLAB
results = {{q: grader.check(q) for q in {questions!r}}}
failed = {{q: str(r) for q, r in results.items() if not r.passed_all}}
assert not failed, failed
print("all public tests passed")"""


def test_student_notebook_alone_checks_answers_as_on_colab(lab, tmp_path):
    """The solution, then each handout variant in turn, passes every grader.check."""
    nb = answered(lab)
    answers = answer_cells(nb)
    checks_after_variants = []
    for name, (old, new) in VARIANTS.get(lab.name, {}).items():
        [cell] = [c for c in answers if old in c.source]
        variant = nbformat.v4.new_code_cell(cell.source.replace(old, new))
        check = nbformat.v4.new_code_cell(
            f"# variant {name}\n" + CHECK_ALL.format(questions=list(lab.questions))
        )
        checks_after_variants.append(check)
        nb.cells += [variant, check, nbformat.v4.new_code_cell(cell.source)]
    setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    nb.cells.insert(nb.cells.index(setup) + 1, nbformat.v4.new_code_cell(PRETEND_COLAB))
    nb.cells.append(
        nbformat.v4.new_code_cell(CHECK_ALL.format(questions=list(lab.questions)))
    )
    empty = tmp_path / "content"  # the kernel's cwd: no notebook, no tests/ folder
    empty.mkdir()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(empty)}},
    ).execute()  # raises CellExecutionError if any cell fails
    checks = [c for c in nb.cells if c.source.startswith("grader.check(")]
    assert checks, "the student notebook has no grader.check cells"
    for cell in checks:
        shown = "".join(
            o.get("data", {}).get("text/plain", "") + o.get("text", "")
            for o in cell.outputs
        )
        assert "passed" in shown and "failed" not in shown, (cell.source, shown)
    for cell in [nb.cells[-1], *checks_after_variants]:
        # a kernel under load may flush one print as two stream messages
        printed = "".join(o.get("text", "") for o in cell.outputs)
        assert printed == "all public tests passed\n", cell.source
    assert sorted(p.name for p in empty.iterdir()) == [".OTTER_LOG"]
