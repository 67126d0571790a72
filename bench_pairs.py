"""
Pair generation against the raw model: the same seed-transcript prompts at batch n_prompts, greedy, the same
max_new_tokens, once through generate_pairs' path (sorted, left-padded, the shared prompt start cached, rows leaving
the batch as they close their turn) and once through the raw model (one plain transformers forward of the left-padded
batch with use_cache=True, then one greedy token per step from its KV cache, every row for max_new_tokens steps),
measured in one run, alternating for `rounds` rounds (the best of each counts: timings on a shared machine are noisy).

    python bench_pairs.py                     # exits 1 if ours misses min_ratio x raw's decode or end-to-end rate
    python bench_pairs.py --max_new_tokens=32 --rounds=2
    python bench_pairs.py --instructions="What can you hear from the audio?" --max_new_tokens=64   # the paper's question

Prompt tok/s counts every row's real prompt tokens over the time to the first picked token; decode tok/s the tokens
generated over the rest; end to end, the generated tokens over the whole time (tokenizing included). Raw decodes
max_new_tokens for every row, ours stops a row at its end of turn: raw's tok/s is the rate the hardware gives a
batch of that size, ours the rate pair generation gets. It also counts how often the replies name the gender their
seed transcript gives: what the targets would teach.
"""
import os
import random
import re
import sys
import time

import torch

import generate_pairs as gp
from common import configure, die
from model import end_of_turn_id, render_prompt

# -----------------------------------------------------------------------------
llm = 'weights/qwen2.5-coder-0.5b-instruct'
n_prompts = 32  # prompts generated in one batch
max_new_tokens = 96  # demo.sh's
rounds = 1  # raw, ours, raw, ours, ...: the best time of each counts
llm_dtype = 'auto'  # generate_pairs' default: bf16 on CPUs with bf16 instructions, else fp32
device = 'cpu'
min_ratio = 0.75  # ours / raw, of the decode rate and end to end
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


def timed_ours(items, model, tokenizer):
    """(seconds to the first picked token, total seconds, replies, tokens generated, decode steps) of generate_pairs'
    path. The prompt time ends with the last decoder call that reads more than one position (the shared start, the
    prompts); the steps are the longest reply's tokens."""
    prompt_done = []

    def after(module, args, output):
        if output.last_hidden_state.shape[1] > 1:
            prompt_done.append(time.time())

    hook = model.get_decoder().register_forward_hook(after)
    t0, replies, reply_lengths = time.time(), {}, []
    cfg = dict(batch_size=len(items), max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
    for results in gp.local_replies(items, cfg, model, tokenizer):
        for item, reply, n in results:
            replies[item['audio_id']] = reply
            reply_lengths.append(n)
    hook.remove()
    return prompt_done[-1] - t0, time.time() - t0, replies, sum(reply_lengths), max(reply_lengths)


@torch.no_grad()
def timed_raw(items, model, tokenizer):
    """The same for the raw model: a plain causal-LM forward, then greedy steps on its KV cache, all rows to the end."""
    t0 = time.time()
    batch = tokenizer([item['input'] for item in items], padding=True, padding_side='left', add_special_tokens=False,
                      return_tensors='pt').to(model.device)
    out = model(**batch, use_cache=True, logits_to_keep=1)  # logits for the last position only, as generate asks
    t_prompt, mask, tokens = time.time() - t0, batch.attention_mask, []
    while True:
        tokens.append(out.logits[:, -1].argmax(dim=-1))
        if len(tokens) == max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(len(items), 1)], dim=1)
        out = model(input_ids=tokens[-1][:, None], attention_mask=mask, cache=out.cache, use_cache=True)
    tokens, t = torch.stack(tokens, dim=1).tolist(), time.time() - t0
    stops = {end_of_turn_id(tokenizer), tokenizer.eos_token_id} - {None}
    cut = [row[:next((i for i, token in enumerate(row) if token in stops), len(row))] for row in tokens]
    replies = {item['audio_id']: tokenizer.decode(row, skip_special_tokens=True).strip() for item, row in zip(items, cut)}
    return t_prompt, t, replies, len(items) * max_new_tokens, max_new_tokens


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
prompt_lengths = [len(tokenizer(item['input'], add_special_tokens=False).input_ids) for item in items]
print(f"{llm} ({model.dtype}, {device}, {torch.get_num_threads()} threads): {n_prompts} prompts of {min(prompt_lengths)}-"
      f"{max(prompt_lengths)} tokens, greedy, max_new_tokens={max_new_tokens}, best of {rounds}")

timed_raw(items[:2], model, tokenizer)  # warm-up
timed_ours(items[:2], model, tokenizer)
runs = dict(raw=[], ours=[])
for _ in range(rounds):
    for name, run in (('raw', timed_raw), ('ours', timed_ours)):
        runs[name].append(run(items, model, tokenizer))
rates = {}
for name, results in runs.items():
    t_prompt, t, replies, n_tokens, _ = min(results, key=lambda r: r[1])
    rates[name] = (n_tokens / (t - t_prompt), n_tokens / t)
    print(f"{name:4s}: prompt {sum(prompt_lengths) / t_prompt:6.1f} tok/s ({t_prompt:5.1f} s), decode {rates[name][0]:6.1f} tok/s "
          f"({n_tokens} tokens in {t - t_prompt:5.1f} s), end to end {rates[name][1]:6.1f} tok/s ({t:5.1f} s)")
ratios = [ours / raw for ours, raw in zip(rates['ours'], rates['raw'])]
print(f"ours / raw: decode {ratios[0]:.2f}x, end to end {ratios[1]:.2f}x (target {min_ratio}x)")
_, _, replies, n_tokens, n_steps = runs['ours'][0]
print(f"identical greedy replies, ours and raw: {sum(replies[k] == runs['raw'][0][2][k] for k in replies)}/{n_prompts}")
# rows leave ours' batch as they close their turn: where a step costs the same whatever the batch size (decoding bound
# by reading the weights: GPUs, CPUs with AMX), ours' decode rate is at most this share of raw's
print(f"ours: {n_tokens / n_steps:.1f} rows per step on average ({n_tokens / n_steps / n_prompts:.0%} of the batch)")
# what the targets would teach: how often a reply names the gender its seed transcript gives
with_gender = [item for item in items if 'Gender: ' in item['seed_transcript']]
said = {item['audio_id']: set(re.findall(r'\b(male|female)\b', replies[item['audio_id']].lower())) for item in with_gender}
right = sum(item['seed_transcript'].split('Gender: ')[1].split(',')[0].lower() in said[item['audio_id']] for item in with_gender)
print(f"replies naming the seed's gender: right {right}/{len(with_gender)}, "
      f"wrong-only {sum(bool(said[i['audio_id']]) for i in with_gender) - right}/{len(with_gender)}; "
      f"{n_tokens / n_prompts:.0f} tokens per reply")
sys.exit(0 if min(ratios) >= min_ratio else 1)
