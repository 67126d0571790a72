"""
Self-generated training pairs, the DeSTA2 way: each clip's metadata, written as a seed transcript by prepare.py,
takes the place of [speech vectors + transcript] in the chat prompt the model is trained with; the frozen LLM answers
an instruction about it (the paper's "What can you hear from the audio?", or --instructions), and its own reply
becomes the training target.

    python generate_pairs.py                                   # data/synth/{train,val}.jsonl -> {split}_pairs.jsonl
    python generate_pairs.py --data_dir=data/synth --limit=64 --max_new_tokens=64
    python generate_pairs.py --backend=http --api_base=http://127.0.0.1:8000/v1 --concurrency=16

Sharded over several processes or machines (each writes its own file, {split}_pairs.shard{i}of{n}.jsonl):

    for i in 0 1 2 3; do python generate_pairs.py --shard=$i/4 & done; wait
    python generate_pairs.py --merge_shards=4       # -> {split}_pairs.jsonl in manifest order, checked complete for
                                                    #    the --instructions given (the shards' own)
    # (a plain `cat data/synth/train_pairs.shard*of4.jsonl > data/synth/train_pairs.jsonl` also works: shards are disjoint)

Resumable: output is appended and fsync'd queue by queue (--queue_size prompts); a rerun skips the (audio_id,
instruction) pairs already written and drops a line cut short by a kill, so a run killed at any moment and started
again loses at most the queue in flight. Run one process per output file. Output rows are the manifest rows plus
instruction, input (the rendered prompt), target and pair_model, in the order they were generated (longest prompts
first), not manifest order.
Exit codes: 0 done, 1 the server could not be reached or failed (the pairs made so far are kept: rerun to go on),
2 bad input (an argument, a manifest, shards or an output file that do not fit what is asked).
"""
import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from model import (DEFAULT_INSTRUCTION, cache_for_batch, chat_messages, end_of_turn_id, llm_decode,
                   mask_and_positions, pad_rows, render_prompt, shared_start, start_cache)
from common import DTYPES, ServerError, chat_completion, configure, die, generation_dtype, http_json, read_jsonl, write_atomic

# -----------------------------------------------------------------------------
data_dir = 'data/synth'  # where prepare.py wrote {split}.jsonl
splits = 'train,val'  # comma-separated
llm = 'weights/qwen2.5-coder-0.5b-instruct'  # the frozen LLM (local dir or hub name); its tokenizer renders `input` in both backends
backend = 'local'  # 'local' (transformers on this machine) or 'http' (an OpenAI-compatible server)
api_base = 'http://127.0.0.1:8000/v1'  # http backend: the server's base URL
api_model = ''  # http backend: model name to ask for; '' = the first one the server lists at /models
api_key = ''  # http backend: sent as a bearer token when set
concurrency = 8  # http backend: requests in flight
max_retries = 5  # http backend: retries per request on connection errors and 5xx/429, with exponential backoff
request_timeout = 600.0  # http backend: seconds per request
instructions = DEFAULT_INSTRUCTION  # '|'-separated, or @file with one per line; each row gets one (from each group,
# below) by a hash of its audio_id.
# Groups ('||' between them; an empty line in the file) give each row one pair per group: config/voice_questions.txt
batch_size = 16  # local backend: rows decoded at once; as one finishes, the queue's next prompt takes its place
queue_size = 256  # local backend: prompts decoded as one queue (longest first) and written together once all are done:
# a kill loses at most these; between queues the batch runs down, a row at a time
max_new_tokens = 128
temperature = 0.0  # 0 = greedy
top_p = 1.0
seed = 1337
shard = '0/1'  # i/n: only rows whose manifest line index % n == i
merge_shards = 0  # n > 0: merge {split}_pairs.shard*of{n}.jsonl into {split}_pairs.jsonl and stop
device = 'cpu'
llm_dtype = 'auto'  # auto | float32 | bfloat16 | float16; auto = bf16 on CUDA and on CPUs with bf16 instructions (common.generation_dtype)
limit = 0  # process only the first `limit` rows of each manifest (of this shard); 0 = all
config_keys = [k for k, v in globals().items() if k.islower() and not k.startswith('_') and isinstance(v, (int, float, bool, str))]
configure(globals())
config = {k: globals()[k] for k in config_keys}
# -----------------------------------------------------------------------------


def parse_shard(text):
    try:
        i, n = (int(x) for x in text.split('/'))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        die(f"--shard must look like i/n with 0 <= i < n, got {text!r}")
    return i, n


def parse_instructions(text):
    """A list of groups, each a list of instructions."""
    if text.startswith('@'):
        with open(text[1:]) as f:
            groups = [g.split('\n') for g in re.split(r'\n\s*\n', f.read())]
    else:
        groups = [g.split('|') for g in text.split('||')]
    groups = [[s.strip() for s in g if s.strip()] for g in groups]
    groups = [g for g in groups if g]
    if not groups:
        die(f"no instructions in {text!r}")
    return groups


def pick_instruction(audio_id, choices):
    """The same instruction for a row on every run and machine (Python's hash() is salted per process)."""
    return choices[int(hashlib.sha256(str(audio_id).encode()).hexdigest(), 16) % len(choices)]


def row_instructions(audio_id, groups):
    """A row's instructions, one from each group; the first group's pick does not depend on the others, so adding a
    group to a list keeps the pairs already made with it. Every group is picked with the same hash: groups whose sizes
    share a factor pair their instructions up (4 and 2: the first and third of four always go with the first of two),
    sizes without one (5 and 2) are drawn independently."""
    return list(dict.fromkeys(pick_instruction(audio_id, g) for g in groups))


def output_path(data_dir, split, i, n):
    return os.path.join(data_dir, f"{split}_pairs.jsonl" if n == 1 else f"{split}_pairs.shard{i}of{n}.jsonl")


def read_manifest(path, i=0, n=1):
    """This shard's usable rows; a line with bad JSON, no audio_id, no seed_transcript, or a repeated audio_id is
    reported (file:line) and skipped. Returns (rows, n_bad)."""
    rows, seen, n_bad = [], set(), 0
    for number, row, problem in read_jsonl(path):
        if (number - 1) % n != i:
            continue
        if problem is None:
            if 'audio_id' not in row:
                problem = "no audio_id"
            elif not isinstance(row.get('seed_transcript'), str) or not row['seed_transcript'].strip():
                problem = "no seed_transcript"
            elif row['audio_id'] in seen:
                problem = f"audio_id {row['audio_id']!r} repeated"
            else:
                seen.add(row['audio_id'])
                rows.append(row)
                continue
        print(f"{path}:{number}: {problem}, skipped", file=sys.stderr)
        n_bad += 1
    return rows, n_bad


def read_pairs(path):
    """The complete, distinct (audio_id, instruction) rows of an output file. A line cut short by a kill (or repeated) is
    dropped and the file rewritten without it (atomically), so appending can go on from a clean end."""
    if not os.path.exists(path):
        return []
    with open(path, 'rb') as f:
        data = f.read()
    rows, seen, kept = [], set(), []
    for line in data.splitlines():
        try:
            row = json.loads(line)
            key = (row['audio_id'], row['instruction'])
            if key in seen or 'target' not in row:
                continue
        except (ValueError, KeyError, TypeError):
            continue
        seen.add(key)
        rows.append(row)
        kept.append(line + b'\n')
    clean = b''.join(kept)
    if clean != data:
        print(f"{path}: dropped {len(data.splitlines()) - len(kept)} incomplete or repeated line(s)", file=sys.stderr)
        write_atomic(path, clean)
    return rows


# -----------------------------------------------------------------------------
# local backend: the tokenizer and the LLM alone (no Whisper), batched, left-padded, KV-cached (model.llm_decode)


def load_llm(name, device, dtype_name):
    import torch
    from transformers import AutoModelForCausalLM

    dtype_name = generation_dtype(device) if dtype_name == 'auto' else dtype_name
    model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype_name)).to(device).eval()
    model.requires_grad_(False)
    return model


def left_padded_batch(model, rows, pad_id, n_start=0):
    """Prompts of different lengths, padded on the left so every row's next token is the last column; positions count
    real tokens only (as DeSTA2.assemble does), so a row's reply does not depend on the rest of its batch. n_start:
    the tokens cut from the front of every row because they come from a KV cache (see local_replies)."""
    input_ids = pad_rows(rows, pad_id, pad_left=True).to(model.device)
    attention_mask, position_ids = (t.to(model.device) for t in mask_and_positions(rows, True, n_start))
    return dict(inputs_embeds=model.get_input_embeddings()(input_ids), attention_mask=attention_mask, position_ids=position_ids)


def plan_queues(ids, queue_size):
    """(n_start, queues): the length of the start all prompts share, and lists of prompt indices, longest prompts
    first: sorting by length keeps the padding in each batch small (and puts the biggest batch, memory-wise, first).
    The queues are of equal size, at most queue_size: a small last one would spend most of its steps running down."""
    order = sorted(range(len(ids)), key=lambda k: -len(ids[k]))
    n = -(-len(order) // queue_size)  # queues, rounded up
    return shared_start(ids) if ids else 0, [order[q * len(order) // n:(q + 1) * len(order) // n] for q in range(n)]


def local_replies(items, cfg, model, tokenizer, done=()):
    """Yields lists of (item, reply, n_generated_tokens), one list per queue of plan_queues, decoded batch_size rows at
    a time, a finished row's place going to the queue's next prompt (llm_decode's refill). done: indices of the items an
    earlier run wrote. They are planned with the rest, so a resumed run makes the same queues and caches the same
    prompt start as an uninterrupted one: in bf16 either can flip a greedy reply on a near-tie."""
    eot_id = end_of_turn_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot_id
    ids = [tokenizer(item['input'], add_special_tokens=False).input_ids for item in items]
    # every prompt starts the same way (system turn, user header, the seed transcript's '[00:00:00 - 00:00:'): about
    # 40 of ~115 tokens that the frozen LLM encodes once here, not once per row
    n_start, queues = plan_queues(ids, cfg['queue_size'])
    queues = [queue for queue in ([k for k in q if k not in done] for q in queues) if queue]
    cache = start_cache(model, ids[0][:n_start]) if n_start and queues else None
    for queue in queues:
        waiting = list(queue)

        def next_batch(n):
            chunk = waiting[:n]
            del waiting[:n]
            if not chunk:
                return None
            batch = left_padded_batch(model, [ids[k][n_start:] for k in chunk], pad_id, n_start)
            batch['cache'] = cache_for_batch(cache, len(chunk)) if n_start else None
            return batch

        replies, n_tokens = llm_decode(model, tokenizer, next_batch(cfg['batch_size']), cfg['max_new_tokens'],
                                       cfg['temperature'], cfg['top_p'], eot_id, refill=next_batch)
        yield [(items[k], r, n) for k, r, n in zip(queue, replies, n_tokens)]


# -----------------------------------------------------------------------------
# http backend: any OpenAI-compatible server (vLLM, llama.cpp's llama-server, ...), through common.chat_completion


def server_settings(cfg):
    """http_json's request settings, from the config."""
    return dict(api_key=cfg['api_key'], retries=cfg['max_retries'], timeout=cfg['request_timeout'])


def server_model_name(cfg):
    """Checks that the server answers at all (one clear error naming the URL if not) and picks the model to ask for."""
    try:
        listed = http_json(cfg['api_base'].rstrip('/') + '/models', None, **server_settings(cfg))
        names = [m['id'] for m in listed.get('data', [])]
    except ServerError as e:
        if str(e).startswith('cannot reach'):
            die(f"{e}, or use --backend=local", code=1)
        names = []  # it answers, but lists no models
    if cfg['api_model']:
        return cfg['api_model']
    if not names:
        die(f"the server at {cfg['api_base']} lists no models: name one with --api_model")
    return names[0]


def http_replies(items, cfg, model_name):
    """Yields lists of (item, reply, n_generated_tokens) as requests complete, with `concurrency` requests in flight.
    The server applies ITS OWN chat template to these messages: the layout matches training (render_prompt) only if it
    serves the same model with the same template as --llm."""
    def ask(item):
        body = dict(model=model_name, messages=chat_messages(item['seed_transcript'], item['instruction']),
                    max_tokens=cfg['max_new_tokens'], temperature=cfg['temperature'], top_p=cfg['top_p'], seed=cfg['seed'])
        return (item, *chat_completion(cfg['api_base'], body, **server_settings(cfg)))

    todo, pending = iter(items), set()
    with ThreadPoolExecutor(cfg['concurrency']) as pool:
        try:
            while True:
                for item in todo:
                    pending.add(pool.submit(ask, item))
                    if len(pending) >= 2 * cfg['concurrency']:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield [f.result() for f in done if f.exception() is None]  # keep what succeeded, then fail
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()
        finally:
            for f in pending:
                f.cancel()


# -----------------------------------------------------------------------------


def merge(cfg, split, n, groups):
    manifest, _ = read_manifest(os.path.join(cfg['data_dir'], f"{split}.jsonl"))
    pairs = {}
    for i in range(n):
        path = output_path(cfg['data_dir'], split, i, n)
        if not os.path.exists(path):
            die(f"{path} not found: run shard {i}/{n} first")
        pairs.update(((p['audio_id'], p['instruction']), p) for p in read_pairs(path))
    wanted = [(r['audio_id'], instruction) for r in manifest for instruction in row_instructions(r['audio_id'], groups)]
    unasked = sorted(set(pairs) - set(wanted))
    if unasked:
        die(f"{split}: the shards hold {len(unasked)} pairs that the manifest and --instructions do not ask for (e.g. "
            f"{unasked[0]!r}): merge with the --instructions the shards were made with")
    if cfg['limit'] == 0:
        missing = [key for key in wanted if key not in pairs]
        if missing:
            die(f"{split}: {len(missing)} pairs have not been made yet (e.g. {missing[0]!r}): finish the shards first")
    ordered = [pairs[key] for key in wanted if key in pairs]
    out = output_path(cfg['data_dir'], split, 0, 1)
    write_atomic(out, b''.join(json.dumps(p, ensure_ascii=False).encode() + b'\n' for p in ordered))
    print(f"{split}: merged {len(ordered)} pairs from {n} shards -> {out}", file=sys.stderr)


def check_existing(out_path, existing, pair_model, groups):
    """An output file is resumed only with the pairs this run would add to it: the same LLM, and for every row the
    instructions these --instructions give it."""
    others = {p.get('pair_model') for p in existing} - {pair_model}
    if others:
        die(f"{out_path} holds pairs from {others.pop()!r}, not {pair_model!r}: move it away or use another --data_dir")
    # each row's pick from a group is a hash of its id modulo the group's size: a group with one instruction more
    # or less reassigns most of its rows, and resuming would mix pairs of two lists (a new group moves none)
    moved = [p for p in existing if p['instruction'] not in row_instructions(p['audio_id'], groups)]
    if moved:
        picks = ' and '.join(map(repr, row_instructions(moved[0]['audio_id'], groups)))
        die(f"{out_path} holds {len(moved)} pairs made with other --instructions ({moved[0]['audio_id']} was asked "
            f"{moved[0]['instruction']!r}, these give it {picks}): "
            "move it away, use another --data_dir, or pass the instructions it was made with")


def append_pairs(out_path, replies, n_items, split, pair_model):
    """Appends each list of replies to out_path as it comes, on disk before the next: (new pairs, tokens, seconds)."""
    from tqdm import tqdm

    t0, n_new, n_tokens = time.time(), 0, 0
    with open(out_path, 'a', encoding='utf-8') as f, \
            tqdm(total=n_items, desc=split, unit='row', file=sys.stderr, mininterval=1.0) as bar:
        try:
            for results in replies:
                # one write per list (a queue of local_replies), not per row (the buffer would reach the disk
                # mid-list): a queue lands whole, so a rerun remakes a lost one as the same queue
                f.write(''.join(json.dumps({**item, 'target': reply, 'pair_model': pair_model}, ensure_ascii=False)
                                + '\n' for item, reply, _ in results))
                n_tokens += sum(n for _, _, n in results)
                f.flush()
                os.fsync(f.fileno())  # on disk before the next list: a kill loses at most the one in flight
                n_new += len(results)
                elapsed = max(time.time() - t0, 1e-9)
                bar.update(len(results))
                bar.set_postfix_str(f"{n_new / elapsed:.2f} rows/s, {n_tokens / elapsed:.1f} tok/s")
        except ServerError as e:
            bar.close()
            die(f"{e} ({n_new} new pairs of {split} were saved to {out_path}; rerun to go on)", code=1)
    return n_new, n_tokens, max(time.time() - t0, 1e-9)


def make_pairs(cfg, split, shard, groups, pair_model, model, tokenizer):
    """The pairs of one split (of this shard) that its output file does not hold yet."""
    rows, n_bad = read_manifest(os.path.join(cfg['data_dir'], f"{split}.jsonl"), *shard)
    rows = rows[:cfg['limit']] if cfg['limit'] else rows
    out_path = output_path(cfg['data_dir'], split, *shard)
    existing = read_pairs(out_path)
    check_existing(out_path, existing, pair_model, groups)
    written = {(p['audio_id'], p['instruction']) for p in existing}
    asked = [{**row, 'instruction': i, 'input': render_prompt(tokenizer, row['seed_transcript'], i)}
             for row in rows for i in row_instructions(row['audio_id'], groups)]
    done = {k for k, item in enumerate(asked) if (item['audio_id'], item['instruction']) in written}
    items = [item for k, item in enumerate(asked) if k not in done]
    replies = (http_replies(items, cfg, pair_model) if cfg['backend'] == 'http'
               else local_replies(asked, cfg, model, tokenizer, done))
    n_new, n_tokens, elapsed = append_pairs(out_path, replies, len(items), split, pair_model)
    print(f"{split}: {n_new} new pairs, {len(asked) - len(items)} already done, {n_bad} bad manifest rows skipped "
          f"-> {out_path} ({elapsed:.1f} s, {n_new / elapsed:.2f} rows/s, {n_tokens / elapsed:.1f} tok/s)", file=sys.stderr)


def load_pair_model(cfg):
    """(the name recorded as pair_model, the local LLM or None for the http backend, the LLM's tokenizer)."""
    from transformers import AutoTokenizer

    if cfg['backend'] == 'http':
        pair_model, model = server_model_name(cfg), None
    else:
        import torch

        torch.manual_seed(cfg['seed'])
        pair_model, model = cfg['llm'], load_llm(cfg['llm'], cfg['device'], cfg['llm_dtype'])
    return pair_model, model, AutoTokenizer.from_pretrained(cfg['llm'])  # renders `input`, the layout trained with


def main(cfg):
    split_names = [s.strip() for s in cfg['splits'].split(',') if s.strip()]
    shard = parse_shard(cfg['shard'])
    for split in split_names:
        path = os.path.join(cfg['data_dir'], f"{split}.jsonl")
        if not os.path.exists(path):
            die(f"manifest {path} not found: run `python prepare.py` first (or set --data_dir / --splits)")
    groups = parse_instructions(cfg['instructions'])
    if cfg['merge_shards']:
        for split in split_names:
            merge(cfg, split, cfg['merge_shards'], groups)
        return
    if cfg['backend'] not in ('local', 'http'):
        die(f"--backend must be 'local' or 'http', got {cfg['backend']!r}")
    if cfg['llm_dtype'] != 'auto' and cfg['llm_dtype'] not in DTYPES:
        die(f"--llm_dtype must be auto or one of {', '.join(DTYPES)}, got {cfg['llm_dtype']!r}")
    for key in ('batch_size', 'queue_size'):
        if cfg[key] < 1:
            die(f"--{key} must be at least 1, got {cfg[key]}")
    pair_model, model, tokenizer = load_pair_model(cfg)
    for split in split_names:
        make_pairs(cfg, split, shard, groups, pair_model, model, tokenizer)


if __name__ == '__main__':
    main(config)
