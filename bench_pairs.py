"""
Pair generation against the raw model: the same seed-transcript prompts, greedy, the same max_new_tokens, batch_size
rows at a time, once through generate_pairs' path (sorted, left-padded, the shared prompt start cached, a row leaving
the batch as it closes its turn and the next prompt taking its place) and once through the raw model (batches of
batch_size prompts in turn: one plain transformers forward of the left-padded batch with use_cache=True, then one greedy
token per step from its KV cache, every row for max_new_tokens steps), measured in one run, alternating for `rounds`
rounds (the best of each counts: timings on a shared machine are noisy). A third way, no_refill, is ours with queues
of one batch: rows leave and nothing takes their places, what continuous batching is measured against.

    python bench_pairs.py                     # exits 1 if ours misses min_ratio x raw's decode or end-to-end rate
    python bench_pairs.py --n_prompts=32 --rounds=2
    python bench_pairs.py --instructions="What can you hear from the audio?" --max_new_tokens=64   # the paper's question

Prompt tok/s counts every row's real prompt tokens over the time spent reading prompts (ours: decoder calls that read
more than one position; raw: each batch's first forward, its first token picked); decode tok/s the tokens generated
over the rest; end to end, the generated tokens over the whole time (tokenizing included). Raw decodes max_new_tokens
for every row, ours stops a row at its end of turn: raw's tok/s is the rate the hardware gives a batch of that size,
ours the rate pair generation gets. It also counts how often the replies name the gender their seed transcript gives:
what the targets would teach.
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
n_prompts = 128
batch_size = 32  # rows decoded at once, both ways
queue_size = gp.config['queue_size']  # ours: prompts per queue (generate_pairs.py's)
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


class DecoderClock:
    """Seconds spent in the LLM's decoder calls that read more than one position (prompts, the shared start), and the
    number of one-position calls (decode steps), from hooks on the decoder."""
    def __init__(self, model):
        self.prompt_seconds, self.steps, self.t0 = 0.0, 0, 0.0
        decoder = model.get_decoder()
        self.hooks = [decoder.register_forward_pre_hook(self.before), decoder.register_forward_hook(self.after)]

    def before(self, module, args):
        self.t0 = time.time()

    def after(self, module, args, output):
        if output.last_hidden_state.shape[1] > 1:
            self.prompt_seconds += time.time() - self.t0
        else:
            self.steps += 1

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def timed_ours(items, model, tokenizer, refill=True):
    """(prompt seconds, total seconds, replies, tokens generated, decode steps) of generate_pairs' path. refill=False:
    queues of one batch, so finished rows leave and nothing takes their places (the path before continuous batching)."""
    clock, t0, replies, n_tokens = DecoderClock(model), time.time(), {}, 0
    cfg = dict(batch_size=batch_size, queue_size=queue_size if refill else batch_size, max_new_tokens=max_new_tokens,
               temperature=0.0, top_p=1.0)
    for results in gp.local_replies(items, cfg, model, tokenizer):
        for item, reply, n in results:
            replies[item['audio_id']] = reply
            n_tokens += n
    clock.remove()
    return clock.prompt_seconds, time.time() - t0, replies, n_tokens, clock.steps


@torch.no_grad()
def timed_raw(items, model, tokenizer):
    """The same for the raw model: a plain causal-LM forward, then greedy steps on its KV cache, all rows to the end."""
    t0, t_prompt, n_steps, replies = time.time(), 0.0, 0, {}
    stops = {end_of_turn_id(tokenizer), tokenizer.eos_token_id} - {None}
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        t1 = time.time()
        batch = tokenizer([item['input'] for item in chunk], padding=True, padding_side='left', add_special_tokens=False,
                          return_tensors='pt').to(model.device)
        # logits for the last position only, as generate asks; on a CPU in bf16 the causal-LM head is slow on that
        # strided view (model.llm_head), and its time counts here, in the prompt's pass
        out = model(**batch, use_cache=True, logits_to_keep=1)
        mask, tokens = batch.attention_mask, [out.logits[:, -1].argmax(dim=-1)]
        t_prompt += time.time() - t1
        while len(tokens) < max_new_tokens:
            mask = torch.cat([mask, mask.new_ones(len(chunk), 1)], dim=1)
            out = model(input_ids=tokens[-1][:, None], attention_mask=mask, cache=out.cache, use_cache=True)
            tokens.append(out.logits[:, -1].argmax(dim=-1))
            n_steps += 1
        for item, row in zip(chunk, torch.stack(tokens, dim=1).tolist()):
            row = row[:next((i for i, token in enumerate(row) if token in stops), len(row))]
            replies[item['audio_id']] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return t_prompt, time.time() - t0, replies, len(items) * max_new_tokens, n_steps


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
      f"{max(prompt_lengths)} tokens, batch {batch_size}, greedy, max_new_tokens={max_new_tokens}, best of {rounds}")

timed_raw(items[:2], model, tokenizer)  # warm-up
timed_ours(items[:2], model, tokenizer)
ways = dict(raw=timed_raw, ours=timed_ours, no_refill=lambda *args: timed_ours(*args, refill=False))
runs = {name: [] for name in ways}
for _ in range(rounds):
    for name, run in ways.items():
        runs[name].append(run(items, model, tokenizer))
rates, best = {}, {}
for name, results in runs.items():
    t_prompt, t, replies, n_tokens, n_steps = best[name] = min(results, key=lambda r: r[1])
    rates[name] = (n_tokens / (t - t_prompt), n_tokens / t)
    print(f"{name:9s}: prompt {sum(prompt_lengths) / t_prompt:6.1f} tok/s ({t_prompt:5.1f} s), decode {rates[name][0]:6.1f} tok/s "
          f"({n_tokens} tokens in {t - t_prompt:5.1f} s), end to end {rates[name][1]:6.1f} tok/s ({t:5.1f} s)")
ratios = [ours / raw for ours, raw in zip(rates['ours'], rates['raw'])]
print(f"ours / raw: decode {ratios[0]:.2f}x, end to end {ratios[1]:.2f}x (target {min_ratio}x)")
print(f"no_refill / raw: decode {rates['no_refill'][0] / rates['raw'][0]:.2f}x, "
      f"end to end {rates['no_refill'][1] / rates['raw'][1]:.2f}x")
_, _, replies, n_tokens, _ = best['ours']
print(f"identical greedy replies, ours and raw: {sum(replies[k] == best['raw'][2][k] for k in replies)}/{n_prompts}")
# where a step costs the same whatever the batch size (decoding bound by reading the weights: GPUs, CPUs with AMX or
# AVX512-BF16), a decode rate is at most this share of raw's; each row's first token comes from its prompt's pass
for name in ('ours', 'no_refill'):
    rows_per_step = (best[name][3] - n_prompts) / max(best[name][4], 1)
    print(f"{name}: {rows_per_step:.1f} rows per step on average ({rows_per_step / batch_size:.0%} of the batch)")
# what the targets would teach: how often a reply names the gender its seed transcript gives
with_gender = [item for item in items if 'Gender: ' in item['seed_transcript']]
said = {item['audio_id']: set(re.findall(r'\b(male|female)\b', replies[item['audio_id']].lower())) for item in with_gender}
right = sum(item['seed_transcript'].split('Gender: ')[1].split(',')[0].lower() in said[item['audio_id']] for item in with_gender)
print(f"replies naming the seed's gender: right {right}/{len(with_gender)}, "
      f"wrong-only {sum(bool(said[i['audio_id']]) for i in with_gender) - right}/{len(with_gender)}; "
      f"{n_tokens / n_prompts:.0f} tokens per reply")
sys.exit(0 if min(ratios) >= min_ratio else 1)
