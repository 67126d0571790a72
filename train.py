"""
Train the DeSTA2 adapter: frozen Whisper encoder -> Q-Former adapter (the only trained part) -> frozen LLM,
on the (clip, instruction, target) pairs written by generate_pairs.py.

    python train.py config/demo_cpu.py                                  # the CPU demo
    python train.py config/demo_cpu.py --init_from=resume --max_iters=600
    torchrun --standalone --nproc_per_node=8 train.py config/desta2_paper.py --gradient_accumulation_steps=8 \
        --max_iters=19390 --lr_decay_iters=19390  # batch 64: 10 epochs of the paper's pairs

The effective batch of one optimizer step is batch_size * gradient_accumulation_steps rows, whatever the number of
processes: under torchrun each rank runs every world_size-th micro-batch of the step (so gradient_accumulation_steps must
be a multiple of the world size), and a run on N processes follows the same numbers as a run on one.

Writes into out_dir: adapter.safetensors (the adapter with the best validation loss so far, for sample.py),
ckpt.pt (everything needed to resume exactly: adapter, optimizer, scaler, iteration, data position, RNG states, config)
and log.jsonl (one JSON object per log line). Exit codes: 0 done, 2 bad input or config, 3 diverged.
"""
import atexit
import contextlib
import hashlib
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from audio import AudioError, load_audio, probe_audio
from common import (DTYPES, configure, die, generation_dtype, pad_features, read_jsonl, training_flops, training_tokens,
                    whisper_features, write_atomic)
from model import AdapterConfig, compile_decoder_layers, load_model

t_launch = time.time()

# ----------------------------------------------------------------------------------------------------
# default config values; override with config/<name>.py files and --key=value
# I/O
out_dir = 'out'  # checkpoints and log.jsonl go here
data_dir = 'data/synth'  # holds train_pairs.jsonl and val_pairs.jsonl from generate_pairs.py
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
eval_interval = 100  # evaluate, checkpoint, and keep the adapter if the val loss improved, every this many iters
eval_iters = 10  # batches per split in each evaluation (always the same batches, so evaluations compare)
log_interval = 1  # iters between log lines
# model: the base models stay frozen; only the adapter trains
whisper = 'weights/whisper-base.pt'  # openai-whisper name ('small') or a local checkpoint
llm = 'weights/qwen2.5-coder-0.5b-instruct'  # hub id or local directory of an instruction-tuned LLM
tapped_layers = ()  # Whisper encoder blocks feeding the adapter; () = evenly spaced, ending at the last one
n_queries = 64  # speech vectors per clip (DeSTA2: 64)
n_qformer_layer = 2  # Q-Former depth (DeSTA2: 2)
dropout = 0.1  # in the Q-Former while training
max_text_tokens = 200  # the transcript and the target are each cut to this many tokens (DeSTA2: 200)
# data
batch_size = 4  # rows per micro-batch
gradient_accumulation_steps = 1  # micro-batches per optimizer step, summed over all processes
bucket_batches = 50  # batches are made of rows of similar length, a clip's rows together, within random chunks of this many batches
cache_features = True  # compute each clip's Whisper features once and keep them in memory (see the memory note below)
standardize_features = True  # the adapter standardizes Whisper's channels with the training clips' statistics: a few
                             # huge, near-constant channels otherwise drown the frames' differences (README, "Why
                             # Whisper's channels are standardized"). Not in the published model (desta2_paper.py: off).
feature_stats_clips = 1000  # without cache_features, the statistics come from a Whisper pass over this many of them
# AdamW over the adapter's parameters
lr = 1e-4  # peak learning rate
max_iters = 1000  # optimizer steps in all
weight_decay = 0.01  # on matrices only (not biases, LayerNorms)
beta1 = 0.9
beta2 = 0.98
grad_clip = 1.0  # clip the gradient norm at this value; 0 = no clipping
# learning-rate schedule: linear warm-up then cosine decay
decay_lr = True  # False = constant lr
warmup_iters = 100
lr_decay_iters = 1000  # ~= max_iters
min_lr = 1e-5  # the floor of the cosine
# stopping
max_seconds_total = 0.0  # wall-clock limit of this process in seconds, start-up included; 0 = none
max_bad_steps = 5  # stop (exit code 3) after this many non-finite losses in a row
# system
device = 'auto'  # 'auto' (cuda, then mps, then cpu), or 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # bf16 where the hardware computes in it, fp16 (GradScaler) on older GPUs, else fp32; or name one
compile = False  # torch.compile the adapter and the LLM's decoder layers (model.compile_decoder_layers)
seed = 1337  # adapter init, data order and dropout
num_threads = 0  # torch CPU threads per process; 0 = torch's default
backend = 'auto'  # DDP backend: 'auto' = nccl on CUDA, gloo on CPU
# ----------------------------------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, tuple))]
config_keys.remove('t_launch')
rank = int(os.environ.get('RANK', 0))
# every rank reads the same overrides; only rank 0 says so. Bad config -> exit 2.
with contextlib.redirect_stdout(io.StringIO()) if rank > 0 else contextlib.nullcontext():
    configure(globals())
config = {k: globals()[k] for k in config_keys}  # saved in every checkpoint
# ----------------------------------------------------------------------------------------------------


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


# --- checks that need nothing loaded: fail fast ---
if init_from not in ('scratch', 'resume'):
    die(f"init_from must be 'scratch' or 'resume', not {init_from!r}")
if dtype != 'auto' and dtype not in DTYPES:
    die(f"dtype must be auto or one of {', '.join(DTYPES)}, not {dtype!r}")
if eval_interval < 1 or log_interval < 1:
    die(f"eval_interval and log_interval must be at least 1, not {eval_interval} and {log_interval}")
pairs_files = {split: os.path.join(data_dir, f'{split}_pairs.jsonl') for split in ('train', 'val')}
if not os.path.isfile(pairs_files['train']):
    die(f"{pairs_files['train']} not found: make the training pairs first with `python generate_pairs.py` "
        f"(after `python prepare.py`), or point --data_dir at them")
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if init_from == 'resume':
    if not os.path.isfile(ckpt_path):
        die(f"--init_from=resume but {ckpt_path} does not exist")
    checkpoint = torch.load(ckpt_path, map_location='cpu', weights_only=False)
    # the model and the data order are the checkpoint's; the rest (max_iters, lr, ...) may be changed on resume
    # (a key newer than the checkpoint keeps this run's value)
    for k in ('whisper', 'llm', 'tapped_layers', 'n_queries', 'n_qformer_layer', 'dropout', 'max_text_tokens', 'seed'):
        saved = checkpoint['config'].get(k, config[k])
        if config[k] != saved and rank == 0:
            warn(f"resuming with the checkpoint's {k}={saved!r}, not {config[k]!r}")
        config[k] = globals()[k] = saved

# --- processes, device, precision ---
ddp = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
device_type = 'cuda' if device.startswith('cuda') else device
if dtype == 'auto':  # a CPU without bf16 instructions emulates it, many times slower than fp32 (config/demo_cpu.py)
    dtype = 'float16' if device_type == 'cuda' and not torch.cuda.is_bf16_supported() else generation_dtype(device)
if ddp:
    if backend == 'auto':
        backend = 'nccl' if device_type == 'cuda' else 'gloo'
    dist.init_process_group(backend=backend)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())  # on any exit, die()'s included
    world_size, local_rank = dist.get_world_size(), int(os.environ['LOCAL_RANK'])
    if device_type == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
else:
    world_size = 1
master = rank == 0  # only rank 0 logs and writes files
if gradient_accumulation_steps % world_size:
    die(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the {world_size} processes "
        f"(each runs every {world_size}th micro-batch of a step)")
if num_threads > 0:
    torch.set_num_threads(num_threads)
if master:
    os.makedirs(out_dir, exist_ok=True)
# the same seed on every rank: the adapter's init and the data order must agree (dropout is seeded per micro-batch)
torch.manual_seed(seed)
random.seed(seed)
np.random.seed(seed)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = getattr(torch, dtype)
# mixed precision: autocast on CUDA (bf16/fp16) and for bf16 on CPU; otherwise plain fp32 (or the LLM's own dtype)
if (device_type == 'cuda' and dtype != 'float32') or (device_type == 'cpu' and dtype == 'bfloat16'):
    ctx = torch.autocast(device_type=device_type, dtype=ptdtype)
else:
    ctx = contextlib.nullcontext()

# --- the model: frozen base models, trainable adapter ---
adapter_config = AdapterConfig(whisper=whisper, llm=llm, tapped_layers=tuple(tapped_layers), n_queries=n_queries,
                               n_qformer_layer=n_qformer_layer, dropout=dropout)
try:
    raw_model = load_model(adapter_config, device=device, llm_dtype=ptdtype)
except (OSError, ValueError) as e:
    die(f"cannot load the base models ({whisper}, {llm}): {e} (for the offline defaults run `python get_weights.py`)")
raw_model.train()  # dropout on in the adapter; the base models stay in eval mode
adapter_params = list(raw_model.adapter.parameters())
# check, do not assume, that only the adapter can learn
trainable = {n for n, p in raw_model.named_parameters() if p.requires_grad}
if trainable != {f'adapter.{n}' for n, _ in raw_model.adapter.named_parameters()}:
    raise RuntimeError(f"only the adapter may train, but requires_grad is set on: {sorted(trainable)[:10]}")
n_adapter = sum(p.numel() for p in adapter_params)
n_llm = sum(p.numel() for p in raw_model.llm.parameters())
if master:
    print(f"adapter: {n_adapter / 1e6:.2f}M trainable parameters; whisper {whisper} (blocks {raw_model.config.tapped_layers}), "
          f"llm {llm} ({n_llm / 1e6:.0f}M, frozen); device {device}, {dtype}, {world_size} process(es)")

# ----------------------------------------------------------------------------------------------------
# data: read the pairs once, check every clip once, tokenize every row once, and (cache_features) run Whisper once per clip


def read_pairs(path):
    """Rows of a pairs file; the audio path is relative to the file's directory. Malformed lines are reported and skipped."""
    rows, skipped = [], 0
    for line_no, r, problem in read_jsonl(path, required=('audio_filepath', 'transcription', 'instruction', 'target')):
        if problem:
            if master:
                warn(f"{path}:{line_no}: skipped, not a pairs row ({problem})")
            skipped += 1
            continue
        rows.append(dict(audio=os.path.join(os.path.dirname(path), str(r['audio_filepath'])), transcript=r['transcription'],
                         instruction=r['instruction'], target=r['target']))
    return rows, skipped


splits = {}
for split, path in pairs_files.items():
    if not os.path.isfile(path):
        if master:
            warn(f"{path} not found: evaluating on the training split only")
        continue
    rows, n_malformed = read_pairs(path)
    splits[split] = dict(rows=rows, n_read=len(rows) + n_malformed, n_malformed=n_malformed)
clips, bad_clips = {}, {}  # path -> length in samples; path -> reason
for s in splits.values():
    for row in s['rows']:
        if row['audio'] not in clips and row['audio'] not in bad_clips:
            try:
                clips[row['audio']] = probe_audio(row['audio'])
            except AudioError as e:
                bad_clips[row['audio']] = str(e)

# Whisper is frozen, so each clip's tapped features are computed once (the memory it takes: common.py, whisper_features;
# the paper's 124k clips would need ~190 GB: use cache_features=False there, which runs the encoder on every batch)
features = {}  # path -> (L, T, D) on the CPU
cache_dtype = torch.float32 if dtype == 'float32' else torch.bfloat16
if cache_features:
    features, unreadable = whisper_features(raw_model, clips, load_audio, ctx, cache_dtype, progress=master)
    bad_clips.update(unreadable)
for path in bad_clips:
    clips.pop(path, None)
if master:
    for reason in bad_clips.values():
        print(f"skipping clip: {reason}", file=sys.stderr)
for split, s in splits.items():
    good = [r for r in s['rows'] if r['audio'] in clips]
    n_skipped = s['n_read'] - len(good)
    if master and n_skipped:
        warn(f"{pairs_files[split]}: skipped {n_skipped} of {s['n_read']} rows "
             f"({s['n_malformed']} malformed, {len(s['rows']) - len(good)} with unusable audio)")
    s['rows'] = good
    s['pieces'] = raw_model.tokenize([r['transcript'] for r in good], [r['instruction'] for r in good],
                                     [r['target'] for r in good], max_text_tokens)
    # sort key for bucketing: encoder frames, then the clip, so that a clip's rows share a batch and run as one sequence
    # (model.tree_rows), then text tokens
    s['sort_keys'] = [(math.ceil(clips[r['audio']] / 320), r['audio'], len(p.prompt) + len(p.target))
                      for r, p in zip(good, s['pieces'])]
if not splits['train']['rows']:
    die(f"no usable rows in {pairs_files['train']}")
# what the training rows say, so that a resume can tell the same data from grown or changed data. Audio paths are taken
# relative to data_dir: a moved data directory holds the same data.
train_rows_sha256 = hashlib.sha256(json.dumps([(os.path.relpath(r['audio'], data_dir), r['transcript'], r['instruction'],
                                                r['target']) for r in splits['train']['rows']]).encode()).hexdigest()
if 'val' in splits and not splits['val']['rows']:
    del splits['val']
if master:
    n_cache = sum(f.numel() * f.element_size() for f in features.values())
    print(f"data: {len(splits['train']['rows'])} train rows, {len(splits.get('val', {}).get('rows', []))} val rows, "
          f"{len(clips)} clips" + (f", features cached: {n_cache / 2**20:.0f} MiB" if cache_features else ""))


def make_batches(sort_keys, epoch):
    """Row indices in batches of similar length, a clip's rows side by side (they run as one sequence): shuffle the clips,
    sort their rows within chunks of whole clips of about bucket_batches batches, shuffle the batches. With a row per
    clip, a chunk is bucket_batches batches exactly. The order is a function of (seed, epoch) alone, so (epoch, batch
    index) is all a checkpoint needs to find its place."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    rows_of_clip = {}
    for i, key in enumerate(sort_keys):
        rows_of_clip.setdefault(key[1], []).append(i)
    clip_rows = list(rows_of_clip.values())
    chunks, chunk = [[]], bucket_batches * batch_size
    for k in torch.randperm(len(clip_rows), generator=g).tolist():
        chunks[-1] += clip_rows[k]
        if len(chunks[-1]) >= chunk:
            chunks.append([])
    batches = []
    for rows in chunks:
        rows = sorted(rows, key=lambda i: sort_keys[i])
        batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def get_batch(split, idx):
    """One micro-batch: tapped features (B, L, T, D) as float32 on the device, frame mask (B, T), text pieces, and each
    row's audio path (a clip's rows run as one sequence: model.tree_rows)."""
    s = splits[split]
    rows, pieces = [s['rows'][i] for i in idx], [s['pieces'][i] for i in idx]
    if cache_features:
        tapped, frame_mask = pad_features([features[r['audio']] for r in rows])
    else:
        try:
            audios = [load_audio(r['audio']) for r in rows]
        except AudioError as e:
            die(f"{e} (it was readable at start-up)")
        with ctx:
            tapped, frame_mask = raw_model.speech_features(audios)
    return tapped.to(device).float(), frame_mask.to(device), pieces, [r['audio'] for r in rows]


# per tapped block and channel, the mean and std of the training clips' Whisper frames, for the adapter's
# standardization (see SpeechAdapter). Every rank computes the same from the same clips; a resumed run reads its own.
if standardize_features and init_from == 'scratch':
    one_row_per_clip = {r['audio']: i for i, r in enumerate(splits['train']['rows'])}
    stat_rows = [one_row_per_clip[p] for p in sorted(one_row_per_clip)]
    if not cache_features:  # a Whisper pass over a sample of them
        sample = torch.randperm(len(stat_rows), generator=torch.Generator().manual_seed(seed))[:feature_stats_clips]
        stat_rows = [stat_rows[i] for i in sorted(sample.tolist())]
    n_frames, total, squares = 0, 0.0, 0.0
    for i in range(0, len(stat_rows), 16):
        tapped, frame_mask, _, _ = get_batch('train', stat_rows[i:i + 16])
        for f, m in zip(tapped.double().cpu(), frame_mask.cpu()):
            f = f[:, m]
            n_frames, total, squares = n_frames + f.shape[1], total + f.sum(1), squares + (f * f).sum(1)
    feature_mean = total / n_frames
    feature_std = (squares / n_frames - feature_mean ** 2).clamp_min(1e-12).sqrt()
    raw_model.adapter.feature_mean.copy_(feature_mean)
    raw_model.adapter.feature_std.copy_(feature_std)
    if master:
        print(f"features standardized per channel over {len(stat_rows)} training clips ({n_frames} frames; "
              f"channel std {feature_std.min():.3g} to {feature_std.max():.3g})")

# the evaluation batches are fixed, so successive evaluations measure the same thing
eval_batches = {split: make_batches(s['sort_keys'], epoch=-1)[:eval_iters] for split, s in splits.items()}
listen_split = 'val' if 'val' in splits else 'train'  # where estimate_loss also measures the loss with other clips' audio
n_train_batches = len(make_batches(splits['train']['sort_keys'], 0))
if master:
    print(f"{n_train_batches} batches of up to {batch_size} per epoch; {gradient_accumulation_steps} per step "
          f"-> {n_train_batches / gradient_accumulation_steps:.1f} steps per epoch")

# ----------------------------------------------------------------------------------------------------
# optimizer, state, resume

decay = [p for p in adapter_params if p.dim() >= 2]  # weight decay on matrices (queries, layer weights, linears)
no_decay = [p for p in adapter_params if p.dim() < 2]  # not on biases and LayerNorms
optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
                              lr=lr, betas=(beta1, beta2), fused=device_type == 'cuda')
if {id(p) for g in optimizer.param_groups for p in g['params']} != {id(p) for p in adapter_params} \
        or sum(len(g['params']) for g in optimizer.param_groups) != len(adapter_params):
    raise RuntimeError("the optimizer must hold exactly the adapter's parameters")
scaler = torch.amp.GradScaler(device_type, enabled=dtype == 'float16')
iter_num, best_val_loss, epoch, batch_in_epoch = 0, float('inf'), 0, 0
if init_from == 'resume':
    # Continuing on other rows (a corpus grown by prepare.py --n_clips, pairs made with other instructions) would give a
    # run that is neither the old one nor a fresh one on the new data, and its schedule and data order would not fit.
    # Checkpoints written before the fingerprint existed are compared by their row count only.
    saved = checkpoint['data']
    n_rows = len(splits['train']['rows'])
    if saved['n_train_rows'] != n_rows or saved.get('train_rows_sha256', train_rows_sha256) != train_rows_sha256:
        die(f"{ckpt_path} was trained on other rows than {pairs_files['train']} holds now ({saved['n_train_rows']} then, "
            f"{n_rows} now): train from scratch instead (delete {out_dir} or pass another --out_dir)")
    if saved['batch_size'] != batch_size:
        warn(f"batch_size was {saved['batch_size']} in the checkpoint: the data order will not continue exactly")
    raw_model.adapter.load_weights(checkpoint['adapter'])
    optimizer.load_state_dict(checkpoint['optimizer'])
    for group, decay_of_group in zip(optimizer.param_groups, (weight_decay, 0.0)):  # this run's, not the saved ones
        group.update(weight_decay=decay_of_group, betas=(beta1, beta2))
    if checkpoint['scaler']:  # empty when saved without fp16: a run that switches to fp16 starts a fresh scaler
        scaler.load_state_dict(checkpoint['scaler'])
    iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    epoch, batch_in_epoch = saved['epoch'], saved['batch_in_epoch']
    rng = checkpoint['rng']
    torch.set_rng_state(rng['torch'])
    np.random.set_state(rng['numpy'])
    random.setstate(rng['python'])
    if device_type == 'cuda' and rng.get('cuda') is not None:
        torch.cuda.set_rng_state_all(rng['cuda'])
    if master:
        print(f"resuming from {ckpt_path} at iter {iter_num} (epoch {epoch}, batch {batch_in_epoch}), best val loss {best_val_loss:.4f}")
    del checkpoint
epoch_order = make_batches(splits['train']['sort_keys'], epoch)
if compile:
    if master:
        print("compiling the adapter and the LLM's layers (on the first steps; no shared-start cache)...")
    raw_model.adapter.compile(dynamic=True)  # in place: the state_dict keys stay the same
    compile_decoder_layers(raw_model)
# DDP wraps the whole model so its forward stays model(...); only the adapter has gradients to reduce. broadcast_buffers
# is off: the frozen buffers are identical on every rank already (they are loaded from the same files).
model = DDP(raw_model, device_ids=[local_rank] if device_type == 'cuda' else None, broadcast_buffers=False) if ddp else raw_model
log_path = os.path.join(out_dir, 'log.jsonl')
if master and init_from == 'scratch' and os.path.exists(log_path):
    os.remove(log_path)  # a fresh run starts a fresh log; a resumed one appends


def log(record):
    if master:
        with open(log_path, 'a') as f:
            f.write(json.dumps(record) + '\n')


def save_checkpoint():
    if not master:
        return
    checkpoint = {
        'adapter': raw_model.adapter.state_dict(), 'adapter_config': asdict(raw_model.config),
        'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
        'iter_num': iter_num, 'best_val_loss': best_val_loss, 'config': config,
        'data': {'epoch': epoch, 'batch_in_epoch': batch_in_epoch, 'seed': seed, 'batch_size': batch_size,
                 'n_train_rows': len(splits['train']['rows']), 'train_rows_sha256': train_rows_sha256},
        'rng': {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate(),
                'cuda': torch.cuda.get_rng_state_all() if device_type == 'cuda' else None},
    }
    write_atomic(ckpt_path, lambda tmp: torch.save(checkpoint, tmp))


def other_clip_rows(audios):
    """For each row of a batch, the next row (cyclically) that holds another clip, or None if all hold one clip. Not
    simply the next row: rows of similar length share a batch, and two questions about one clip often are, so a
    roll by one gave such rows their own audio back and hid the gap estimate_loss measures."""
    n = len(audios)
    rows = [next((j % n for j in range(k + 1, k + n) if audios[j % n] != audios[k]), None) for k in range(n)]
    return None if None in rows else rows


@torch.no_grad()
def estimate_loss():
    """Mean loss over the fixed evaluation batches of each split, dropout off; the batches are shared among the ranks.
    On listen_split also 'other_audio': the same rows with each row's speech taken from another clip of its batch
    (other_clip_rows) while its transcript and target stay. The gap to the plain loss is what the speech vectors tell
    the LLM beyond the transcript; near zero, the LLM is not listening (README, "Why Whisper's channels are
    standardized")."""
    raw_model.eval()
    out = {}
    for split, batches in eval_batches.items():
        total = torch.zeros(4, device=device)  # loss sum and batch count with each row's own audio, then with another's
        for idx in batches[rank::world_size]:
            tapped, frame_mask, pieces, audios = get_batch(split, idx)
            with ctx:
                total[0:2] += torch.stack([raw_model(tapped, frame_mask, pieces, share_prompt_start=not compile,
                                                     clips=audios).float(), torch.ones((), device=device)])
                swap = other_clip_rows(audios) if split == listen_split else None
                if swap is not None:
                    other = raw_model(tapped[swap], frame_mask[swap], pieces, share_prompt_start=not compile,
                                      clips=[audios[j] for j in swap]).float()
                    total[2:4] += torch.stack([other, torch.ones((), device=device)])
        if ddp:
            dist.all_reduce(total)
        out[split] = (total[0] / total[1]).item()
        if total[3] > 0:
            out['other_audio'] = (total[2] / total[3]).item()
    raw_model.train()
    return out


def get_lr(it):
    """Linear warm-up to lr, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not decay_lr:
        return lr
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def next_step_batches():
    """The gradient_accumulation_steps micro-batches of the next optimizer step (the same list on every rank)."""
    global epoch, batch_in_epoch, epoch_order
    out = []
    while len(out) < gradient_accumulation_steps:
        if batch_in_epoch >= len(epoch_order):  # >=: a resume with a larger batch_size has fewer batches per epoch
            epoch, batch_in_epoch = epoch + 1, 0
            epoch_order = make_batches(splits['train']['sort_keys'], epoch)
        out.append(epoch_order[batch_in_epoch])
        batch_in_epoch += 1
    return out


# MFU on CUDA: model FLOPs per step (common.training_flops, bench.py's count: 4 per frozen LLM weight and token, the
# LM head on the target tokens only, 6 per adapter weight) over the GPU's peak
peak_flops = None
if device_type == 'cuda':
    name = torch.cuda.get_device_name(device)
    peak_flops = next((f for k, f in [('H100', 989e12), ('H200', 989e12), ('A100', 312e12), ('L40', 181e12),
                                      ('4090', 165e12), ('A10', 125e12)] if k in name), None)  # dense bf16

# ----------------------------------------------------------------------------------------------------
# the training loop

evaluated_at = iter_num if init_from == 'resume' else -1  # a checkpoint is written right after an evaluation
bad_steps, dt_avg, stop_reason = 0, None, None
if master:
    print(f"training from iter {iter_num} to {max_iters}")
while True:
    if iter_num >= max_iters and stop_reason is None:
        stop_reason = f"max_iters={max_iters} reached"
    if (iter_num % eval_interval == 0 or stop_reason) and iter_num != evaluated_at:
        losses = estimate_loss()
        evaluated_at = iter_num
        val_loss = losses.get('val', losses['train'])
        if master:
            print(f"eval at iter {iter_num}: train loss {losses['train']:.4f}" +
                  (f", val loss {losses['val']:.4f}" if 'val' in losses else "") +
                  (f", {listen_split} loss with other clips' audio {losses['other_audio']:.4f}" if 'other_audio' in losses else ""))
            log({'iter': iter_num, 'eval': True, **{f'{k}_loss': v for k, v in losses.items()}, 'time': time.time()})
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            if master:
                write_atomic(os.path.join(out_dir, 'adapter.safetensors'), raw_model.save_adapter)
        save_checkpoint()
    if stop_reason:
        break

    # one optimizer step: this rank's share of the step's micro-batches, gradient sync on its last one
    t0 = time.time()
    lr_now = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr_now
    step_batches = next_step_batches()
    mine = [(j, idx) for j, idx in enumerate(step_batches) if j % world_size == rank]
    loss_sum = torch.zeros((), device=device)
    for k, (j, idx) in enumerate(mine):
        # each micro-batch's dropout comes from its own seed: the same numbers on 1 or N processes, and after a resume
        torch.manual_seed(seed * 1_000_003 + iter_num * gradient_accumulation_steps + j)
        tapped, frame_mask, pieces, audios = get_batch('train', idx)
        with model.no_sync() if ddp and k < len(mine) - 1 else contextlib.nullcontext():
            with ctx:  # compiled layers: no shared prompt start
                loss = model(tapped, frame_mask, pieces, share_prompt_start=not compile, clips=audios)
            loss_sum += loss.detach().float()
            scaler.scale(loss / len(mine)).backward()
    # one collective per step: the summed loss, and rank 0's clock (so that every rank stops at the same step)
    out_of_time = max_seconds_total > 0 and time.time() - t_launch > max_seconds_total
    stats = torch.stack([loss_sum, torch.tensor(float(master and out_of_time), device=device)])
    if ddp:
        dist.all_reduce(stats)
    step_loss, out_of_time = stats[0].item() / gradient_accumulation_steps, stats[1].item() > 0
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(adapter_params, grad_clip if grad_clip > 0 else float('inf')).item()
    # fp16 overflow in the gradients is the scaler's business (it skips the step and lowers the scale);
    # a non-finite loss, or a non-finite gradient without the scaler, means this step cannot be used
    if math.isfinite(step_loss) and (scaler.is_enabled() or math.isfinite(grad_norm)):
        scaler.step(optimizer)
        bad_steps = 0
    else:
        bad_steps += 1
        if master:
            warn(f"iter {iter_num}: non-finite loss ({step_loss}) or gradient norm ({grad_norm}): "
                 f"step skipped ({bad_steps} in a row, stopping at {max_bad_steps})")
    scaler.update()
    optimizer.zero_grad(set_to_none=True)

    # log: every rank knows the step's batches, so rank 0 counts rows and tokens for all of them
    dt = time.time() - t0
    dt_avg = dt if dt_avg is None else 0.9 * dt_avg + 0.1 * dt
    if master and iter_num % log_interval == 0:
        n_rows = sum(len(idx) for idx in step_batches)
        n_target = sum(len(splits['train']['pieces'][i].target) for idx in step_batches for i in idx)
        # the tokens the LLM ran: a clip's shared part once, the cached prompt start not at all (not each row's length)
        step_rows = [([splits['train']['pieces'][i] for i in idx], [splits['train']['rows'][i]['audio'] for i in idx])
                     for idx in step_batches]
        n_tokens = sum(training_tokens(raw_model, pieces, clips, share_prompt_start=not compile) for pieces, clips in step_rows)
        # FLOPs counted only where there is a peak to divide them by (CUDA), not on every CPU step
        mfu = (sum(training_flops(raw_model, pieces, clips) for pieces, clips in step_rows) / dt / (peak_flops * world_size)
               if peak_flops else None)
        eta = (max_iters - iter_num - 1) * dt_avg
        if max_seconds_total > 0:
            eta = max(0.0, min(eta, max_seconds_total - (time.time() - t_launch)))
        print(f"iter {iter_num}: loss {step_loss:.4f}, lr {lr_now:.2e}, {dt * 1000:.0f} ms, {n_rows / dt:.1f} samples/s, "
              f"{n_target / dt:.0f} target tok/s, {n_tokens / dt:.0f} tok/s" + (f", mfu {100 * mfu:.1f}%" if mfu else "") +
              f", epoch {epoch}, eta {int(eta // 60)}m{int(eta % 60):02d}s", flush=True)
        log({'iter': iter_num, 'loss': step_loss, 'lr': lr_now, 'grad_norm': grad_norm, 'ms': dt * 1000,
             'samples_per_s': n_rows / dt, 'target_tokens_per_s': n_target / dt, 'tokens_per_s': n_tokens / dt,
             'mfu': mfu, 'epoch': epoch, 'time': time.time()})
    iter_num += 1
    if bad_steps >= max_bad_steps:
        save_checkpoint()
        die(f"{bad_steps} non-finite losses in a row at iter {iter_num}: stopping (checkpoint in {ckpt_path}); "
            f"try a lower lr, dtype='float32' or grad_clip", code=3)
    if out_of_time:
        stop_reason = f"max_seconds_total={max_seconds_total:g} reached"

if master:
    print(f"done: {stop_reason} at iter {iter_num}; best val loss {best_val_loss:.4f}; "
          f"adapter in {os.path.join(out_dir, 'adapter.safetensors')}, resume state in {ckpt_path}")
