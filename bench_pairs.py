"""
How much batching speeds up pair generation: the same seed-transcript prompts, greedy, the same max_new_tokens,
generated one at a time and in one batch (generate_pairs' sorted, left-padded path), measured in one run.

    python bench_pairs.py                     # exits 1 if the batched path is not min_speedup x faster, or on an error
    python bench_pairs.py --n_single=4 --max_new_tokens=32
    python bench_pairs.py --instructions="What can you hear from the audio?" --max_new_tokens=64   # the paper's question

It also counts how often the replies name the gender their seed transcript gives: what the targets would teach.
Batching speeds up decoding (memory-bound: one read of the weights serves every row) but not reading the prompt
(compute-bound on a CPU), so the speedup grows with the length of the replies.

Batch 1 runs on n_single of the prompts, spread over the length range, to keep the bench short. Greedy replies are
the same either way up to rounding (in bf16 the batch shape changes the rounding; the script prints how many match),
so the speedup is the ratio of generated tokens per second, which equals the ratio of rows per second on the same
replies.
"""
import os
import random
import re
import sys
import time

import torch

import generate_pairs as gp
from common import configure, die
from model import render_prompt

# -----------------------------------------------------------------------------
llm = 'weights/qwen2.5-coder-0.5b-instruct'
n_prompts = 32  # prompts generated in one batch
n_single = 8  # of them, generated one at a time
max_new_tokens = 96  # demo.sh's
llm_dtype = 'auto'  # generate_pairs' default: bf16 on CPUs with bf16 instructions, else fp32
device = 'cpu'
min_speedup = 6.0
instructions = '@' + os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', 'voice_instructions.txt')  # demo.sh's
seed = 1337
configure(globals())
# -----------------------------------------------------------------------------

SENTENCES = ["At the top level, the salaries are far too high.", "Please call Stella and ask her to bring these things.",
             "The weather will be cold and windy tomorrow morning.", "I never said she stole my money.",
             "Could you tell me the way to the nearest train station?", "We had a wonderful time at the seaside last summer.",
             "Turn off the lights before you leave the office.", "The results of the experiment were surprising."]


def seed_transcripts(n, rng):
    """Seed transcripts in prepare.py's layout (the values are illustrative), with a varied number of attributes so
    the prompts differ in length."""
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
    die(f"{llm} not found: run `python get_weights.py` first (or pass --llm=...)", code=1)
torch.manual_seed(seed)
from transformers import AutoTokenizer  # noqa: E402

tokenizer = AutoTokenizer.from_pretrained(llm)
model = gp.load_llm(llm, device, llm_dtype)
choices = [i for group in gp.parse_instructions(instructions) for i in group]  # one prompt per item, from every group
items = []
for k, text in enumerate(seed_transcripts(n_prompts, random.Random(seed))):
    instruction = gp.pick_instruction(f"bench{k:02d}", choices)
    items.append({'audio_id': f"bench{k:02d}", 'seed_transcript': text, 'instruction': instruction,
                  'input': render_prompt(tokenizer, text, instruction)})
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
# what the targets would teach: how often a reply names the gender its seed transcript gives
with_gender = [item for item in items if 'Gender: ' in item['seed_transcript']]
said = {item['audio_id']: set(re.findall(r'\b(male|female)\b', repliesb[item['audio_id']].lower())) for item in with_gender}
right = sum(item['seed_transcript'].split('Gender: ')[1].split(',')[0].lower() in said[item['audio_id']] for item in with_gender)
print(f"replies naming the seed's gender: right {right}/{len(with_gender)}, "
      f"wrong-only {sum(bool(said[i['audio_id']]) for i in with_gender) - right}/{len(with_gender)}; "
      f"{tokensb / n_prompts:.0f} tokens per reply")
sys.exit(0 if speedup >= min_speedup else 1)
