"""
How much batching speeds up pair generation: the same seed-transcript prompts, greedy, the same max_new_tokens,
generated one at a time and in one batch (generate_pairs' sorted, left-padded path), measured in one run.

    python bench_pairs.py                     # exits 1 if the batched path is not min_speedup x faster
    python bench_pairs.py --n_single=4 --max_new_tokens=32

Batch 1 runs on n_single of the prompts, spread over the length range, to keep the bench short. Greedy replies are
the same either way, so generated tokens are the same work on both sides: the speedup is the ratio of generated
tokens per second, which equals the ratio of rows per second on the same replies.
"""
import os
import random
import sys
import time

import torch

import generate_pairs as gp
from model import DEFAULT_INSTRUCTION, render_prompt

# -----------------------------------------------------------------------------
llm = 'weights/qwen2.5-coder-0.5b-instruct'
n_prompts = 32  # prompts generated in one batch
n_single = 8  # of them, generated one at a time
max_new_tokens = 64
llm_dtype = 'auto'  # generate_pairs' default: bf16 on CPUs with bf16 instructions, else fp32
device = 'cpu'
min_speedup = 6.0
seed = 1337
config_keys = [k for k, v in globals().items() if k.islower() and not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
# -----------------------------------------------------------------------------

SENTENCES = ["At the top level, the salaries are far too high.", "Please call Stella and ask her to bring these things.",
             "The weather will be cold and windy tomorrow morning.", "I never said she stole my money.",
             "Could you tell me the way to the nearest train station?", "We had a wonderful time at the seaside last summer.",
             "Turn off the lights before you leave the office.", "The results of the experiment were surprising."]


def seed_transcripts(n, rng):
    """Seed transcripts in prepare.py's format, with a varied number of attributes so the prompts differ in length."""
    out = []
    for _ in range(n):
        seconds = rng.randint(2, 9)
        attributes = [f"Gender: {rng.choice(['Female', 'Male'])}", f"Accent: {rng.choice(['Scottish', 'American', 'English', 'Irish'])}",
                      f"Pitch: {rng.choice(['Low', 'Normal', 'High'])}", f"Speaking speed: {rng.choice(['Slow', 'Normal', 'Fast'])}",
                      f"Volume: {rng.choice(['Quiet', 'Normal', 'Loud'])}",
                      f"Noise level: {rng.choice(['Low', 'Moderate', 'High'])} (SNR {rng.choice([5, 15, 25])} dB)"]
        attributes = rng.sample(attributes, rng.randint(2, len(attributes))) + [f"Duration: {seconds}s"]
        text = " ".join(rng.sample(SENTENCES, rng.randint(1, 3)))
        out.append(f'[00:00:00 - 00:00:{seconds:02d}]: "{text}" ({", ".join(attributes)})')
    return out


def timed(items, cfg, model, tokenizer):
    """Wall time, replies, generated tokens, and the LLM's time split into prefill (the prompts) and decode."""
    spent = dict(prefill=0.0, decode=0.0)
    start = []

    def before(module, args, kwargs):
        start.append(time.perf_counter())

    def after(module, args, kwargs, output):
        spent['prefill' if kwargs.get('inputs_embeds') is not None else 'decode'] += time.perf_counter() - start.pop()

    decoder = model.get_decoder()  # llm_decode runs the decoder, then the LM head on the last position
    hooks = [decoder.register_forward_pre_hook(before, with_kwargs=True), decoder.register_forward_hook(after, with_kwargs=True)]
    t0, replies, n_tokens = time.time(), {}, 0
    for results in gp.local_replies(items, cfg, model, tokenizer):
        for item, reply, n in results:
            replies[item['audio_id']] = reply
            n_tokens += n
    for hook in hooks:
        hook.remove()
    return time.time() - t0, replies, n_tokens, spent


if not os.path.exists(llm):
    sys.exit(f"error: {llm} not found: run `python get_weights.py` first (or pass --llm=...)")
torch.manual_seed(seed)
from transformers import AutoTokenizer  # noqa: E402

tokenizer = AutoTokenizer.from_pretrained(llm)
model = gp.load_llm(llm, device, llm_dtype)
items = [{'audio_id': f"bench{k:02d}", 'seed_transcript': s, 'instruction': DEFAULT_INSTRUCTION,
          'input': render_prompt(tokenizer, s, DEFAULT_INSTRUCTION)} for k, s in enumerate(seed_transcripts(n_prompts, random.Random(seed)))]
by_length = sorted(items, key=lambda item: len(tokenizer(item['input']).input_ids))
single = [by_length[round(k * (n_prompts - 1) / max(n_single - 1, 1))] for k in range(n_single)]
cfg = dict(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
print(f"{llm} ({model.dtype}, {device}, {torch.get_num_threads()} threads): {n_prompts} prompts of "
      f"{len(tokenizer(by_length[0]['input']).input_ids)}-{len(tokenizer(by_length[-1]['input']).input_ids)} tokens, "
      f"greedy, max_new_tokens={max_new_tokens}")

timed(items[:1], {**cfg, 'batch_size': 1, 'max_new_tokens': 4}, model, tokenizer)  # warm-up
t1, replies1, tokens1, spent1 = timed(single, {**cfg, 'batch_size': 1}, model, tokenizer)
tb, repliesb, tokensb, spentb = timed(items, {**cfg, 'batch_size': n_prompts}, model, tokenizer)

for name, n, t, tokens, spent in ((' 1', n_single, t1, tokens1, spent1), (f"{n_prompts:<2d}", n_prompts, tb, tokensb, spentb)):
    print(f"batch {name}: {n:3d} rows, {tokens:5d} tokens in {t:6.1f} s (prefill {spent['prefill']:5.1f} s, decode "
          f"{spent['decode']:5.1f} s): {n / t:6.3f} rows/s, {tokens / t:6.1f} tok/s, decode alone {tokens / spent['decode']:6.1f} tok/s")
# batch 1's rows/s on the same replies as the batched run: its time per generated token times the batched run's tokens per row
rate1, rateb = tokens1 / t1, tokensb / tb
speedup = rateb / rate1
same = sum(replies1[item['audio_id']] == repliesb[item['audio_id']] for item in single)
print(f"per-row throughput on the same replies: batch 1 {rate1 / (tokensb / n_prompts):.3f} rows/s, "
      f"batch {n_prompts} {n_prompts / tb:.3f} rows/s")
print(f"speedup: {speedup:.2f}x end to end (target {min_speedup}x), {(tokensb / spentb['decode']) / (tokens1 / spent1['decode']):.2f}x "
      f"in decoding alone; prefill is {spentb['prefill'] / tb:.0%} of the batched time")
print(f"identical greedy replies on the shared prompts: {same}/{n_single}")
sys.exit(0 if speedup >= min_speedup else 1)
