"""
What the top-level scripts share: reading the config, failing with one line, writing files whole, reading jsonl,
talking to an OpenAI-compatible server, caching the frozen Whisper's features, the LLM's dtype for this machine, FLOPs
for MFU, and loading the model that answers (sample.py, serve.py). Plain functions, no state.
"""
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from ast import literal_eval


def die(message, code=2):
    """Stop with one line on stderr. Codes: 2 bad input (a command line, file or setting to fix), others are the
    script's own (see its docstring)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


# -----------------------------------------------------------------------------
# Poor man's configurator, in the nanoGPT manner. A script defines its config as plain module-level globals, then
# calls configure(globals()), which applies, in order, every config/<name>.py file named on the command line (plain
# Python assignments) and every --key=value override (a bare --flag sets a boolean to True). An override must name an
# existing global, and its value is parsed as a Python literal when possible and must keep the type of the default (so
# a typo or --lr=abc fails loudly instead of silently doing something else).

def configure(namespace, argv=None):
    """Apply config files and --key=value overrides to namespace, a script's globals(). argv None means this process's
    command line, which belongs to the script being run: a script imported as a module (by the tests, or bench_pairs
    importing generate_pairs) keeps its defaults."""
    if argv is None:
        if namespace.get('__name__') != '__main__':
            return
        argv = sys.argv[1:]
    for arg in argv:
        if arg.startswith('--'):
            override(namespace, arg)
            continue
        if not arg.endswith('.py'):
            die(f"'{arg}' is neither a config file (config/<name>.py) nor a --key=value override")
        try:
            with open(arg) as f:
                source = f.read()
        except OSError as e:
            die(f"cannot read config file {arg}: {e.strerror}")
        print(f"overriding config with {arg}")
        exec(source, namespace)  # plain assignments into the script's globals


def override(namespace, arg):
    """One --key=value, type-checked against the default."""
    if '=' not in arg and isinstance(namespace.get(arg[2:]), bool):
        arg += '=True'  # a bare --flag switches a boolean on
    if '=' not in arg:
        die(f"override '{arg}' must look like --key=value")
    key, val = arg[2:].split('=', 1)
    if key not in namespace:
        die(f"unknown config key '{key}' (from '{arg}')")
    try:
        value = literal_eval(val)  # numbers, booleans, lists, quoted strings
    except (SyntaxError, ValueError):
        value = val  # a bare string such as --device=cuda
    default = namespace[key]
    if default is not None and not isinstance(value, type(default)):
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)  # --lr=1 is a fine float
        elif isinstance(default, str):
            value = val  # --out_dir=123 is still a path
        else:
            die(f"--{key} expects a {type(default).__name__} like {default!r}, got {val!r}")
    print(f"overriding: {key} = {value!r}")
    namespace[key] = value


# -----------------------------------------------------------------------------

def write_atomic(path, content):
    """Replace path whole or not at all: a kill or an error mid-write leaves the old file (or none), never half of
    one. content is a str, bytes, or a function that writes the file at the path it is given (torch.save, sf.write).
    The temporary file sits beside path (a rename within one file system is atomic) and reaches the disk (fsync)
    before the rename, so a crash right after cannot leave an empty file under the final name."""
    tmp = f'{path}.{os.getpid()}.tmp'  # one per process: prepare.py's workers write side by side
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, 'wb') as f:
                f.write(content.encode() if isinstance(content, str) else content)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_jsonl(path, required=()):
    """(line number, record, problem) for each non-blank line of a .jsonl file: problem is None, or why the line is of
    no use (not JSON, not a JSON object, or without one of the required keys), for the caller to report and skip."""
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield number, None, f'bad JSON ({e.msg})'
                continue
            if not isinstance(record, dict):
                yield number, record, 'not a JSON object'
                continue
            missing = [k for k in required if k not in record]
            yield number, record, f"no {' and no '.join(missing)}" if missing else None


# -----------------------------------------------------------------------------
# an OpenAI-compatible server (vLLM, llama.cpp's llama-server, ...): generate_pairs.py's http backend, eval.py's judge

class ServerError(RuntimeError):
    pass


def http_json(url, body=None, api_key='', retries=5, timeout=600.0):
    """GET (body None) or POST a JSON body; retries connection errors, timeouts, 5xx and 429 with exponential backoff."""
    headers = {'Content-Type': 'application/json'}
    if api_key:
        headers['Authorization'] = f"Bearer {api_key}"
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method='GET' if body is None else 'POST')
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
            try:
                return json.loads(text)
            except ValueError:
                raise ServerError(f"{url} answered with something that is not JSON: {text[:300]!r}") from None
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:  # our request is wrong: retrying will not help
                raise ServerError(f"{url} answered HTTP {e.code}: {e.read()[:500].decode(errors='replace')}") from None
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            last = str(getattr(e, 'reason', e))
        if attempt < retries:
            time.sleep(min(0.5 * 2 ** attempt, 30.0))
    raise ServerError(f"cannot reach the OpenAI-compatible server at {url} ({last}, {retries + 1} tries): "
                      f"start one that serves the LLM (vLLM, llama.cpp's llama-server, ...)")


def chat_completion(api_base, body, **request):
    """One /chat/completions request (body: model, messages, sampling settings): (reply, generated tokens).
    request: http_json's api_key, retries and timeout."""
    url = api_base.rstrip('/') + '/chat/completions'
    answer = http_json(url, body, **request)
    try:
        reply = answer['choices'][0]['message']['content']
    except (KeyError, IndexError, TypeError):
        raise ServerError(f"{url}: unexpected answer {json.dumps(answer)[:300]}") from None
    return (reply or '').strip(), (answer.get('usage') or {}).get('completion_tokens', 0)


# -----------------------------------------------------------------------------
# Whisper is frozen, so each clip's tapped features can be computed once and kept (train.py's cache_features, and
# bench.py's way of training). Memory: len(tapped_layers) * n_audio_state values per encoder frame (50 frames per
# second), 2 bytes each (bf16; 4 in a float32 run): whisper-base, 3 blocks of 512 -> 154 kB per second of audio (1000
# clips of 5 s: 0.8 GB); whisper-small, 4 blocks of 768 -> 307 kB/s (the paper's 124k clips would need ~190 GB).

def whisper_features(model, lengths, load, ctx, dtype, progress=False):
    """Each clip's tapped features (L, T, D) on the CPU in dtype, cut to the clip's own frames. lengths: clip -> its
    length (clips of similar length go through Whisper together, 16 at a time: less padding); load(clip): its 16 kHz
    audio, or AudioError. Returns (features, unreadable: clip -> reason)."""
    from tqdm import tqdm

    from audio import AudioError
    todo = sorted(lengths, key=lambda clip: lengths[clip])
    features, unreadable = {}, {}
    with tqdm(total=len(todo), desc='whisper features', unit='clip', disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(todo), 16):
            audios, clips = [], []
            for clip in todo[i:i + 16]:
                try:
                    audios.append(load(clip))
                    clips.append(clip)
                except AudioError as e:  # the header was fine but the samples are not
                    unreadable[clip] = str(e)
            if audios:
                with ctx:
                    tapped, frame_mask = model.speech_features(audios)
                for j, clip in enumerate(clips):
                    features[clip] = tapped[j, :, :int(frame_mask[j].sum())].to('cpu', dtype).clone()
            bar.update(len(todo[i:i + 16]))
    return features, unreadable


def pad_features(feats):
    """Cached features of a batch, zero-padded to the longest: tapped (B, L, T, D) and the frame mask (B, T)."""
    import torch
    T = max(f.shape[1] for f in feats)
    tapped = torch.zeros(len(feats), feats[0].shape[0], T, feats[0].shape[2], dtype=feats[0].dtype)
    frame_mask = torch.zeros(len(feats), T, dtype=torch.bool)
    for i, f in enumerate(feats):
        tapped[i, :, :f.shape[1]], frame_mask[i, :f.shape[1]] = f, True
    return tapped, frame_mask


# -----------------------------------------------------------------------------
# the LLM's dtype for this machine, and FLOPs of a training step for MFU

DTYPES = ("float32", "bfloat16", "float16")  # the dtype names the scripts take (the generating ones also take "auto")


def generation_dtype(device: str) -> str:
    """The LLM's dtype for generating: bfloat16 on CUDA GPUs that have it and on CPUs with bf16 instructions (AVX512-BF16
    or AMX), float32 elsewhere: CPUs without them emulate bf16 slowly (EXPERIMENTS.md, "Speed, measured on a CPU")."""
    import torch
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device != "cpu":
        return "float32"
    try:
        with open("/proc/cpuinfo") as f:
            return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(f.read().split()) else "float32"
    except OSError:  # not Linux
        return "float32"


def training_tokens(model, pieces, clips=None, share_prompt_start=True) -> int:
    """LLM tokens one training step runs for these rows (clips and share_prompt_start as model.forward takes them): a
    clip's rows' shared part once (model.tree_rows), the prompt start all rows share not at all where it is cached,
    padding not counted."""
    from model import group_by_clip, prompt_start_length, tree_rows, widen_rows
    rows = widen_rows(pieces, model.config.n_queries, prompt_start_length(pieces) if share_prompt_start else 0, 0)
    return sum(len(s) for s in tree_rows(group_by_clip(clips, len(pieces)), *rows)[0])


def training_flops(model, pieces, clips=None) -> int:
    """Model FLOPs of one training step on these rows, for MFU, as the step runs them: 4 per frozen LLM weight and
    token of training_tokens (backward to the activations only), the LM head on the targets only, 6 per adapter weight,
    query and tapped block of each clip. Attention's own FLOPs and Whisper are left out: a few % at most."""
    from model import group_by_clip
    embed, head = model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight
    n_body = sum(p.numel() for p in model.llm.parameters()) - embed.numel() - (0 if head is embed else head.numel())
    n_adapter = sum(p.numel() for p in model.adapter.parameters())
    n_clips = len(group_by_clip(clips, len(pieces)))
    n_target = sum(len(p.target) for p in pieces)
    return (4 * n_body * training_tokens(model, pieces, clips) + 4 * head.numel() * n_target
            + 6 * n_adapter * n_clips * len(model.config.tapped_layers) * model.config.n_queries)


# -----------------------------------------------------------------------------
# the model sample.py and serve.py answer with

def load_answering_model(adapter, whisper, llm, device, dtype, seed):
    """(model in eval mode, device, dtype name) for a trained adapter file, or '' for none (the cascade); whisper and
    llm '' mean the base models the adapter was trained with (without one: the offline defaults), device and dtype
    'auto' are picked for this machine. Anything unusable stops the script with one line (code 2)."""
    import torch
    from dataclasses import replace

    from model import AdapterConfig, load_model, read_adapter_config
    if adapter:
        try:
            config = AdapterConfig(**read_adapter_config(adapter))
        except Exception as e:  # safetensors raises its own error type for a file that is not safetensors
            die(f"{adapter}: cannot read it as an adapter ({e})")
    else:
        config = AdapterConfig()
    config = replace(config, whisper=whisper or config.whisper, llm=llm or config.llm)
    for kind, name in (('whisper', config.whisper), ('llm', config.llm)):
        if not os.path.exists(name) and name.startswith(('weights', '.', '/', '~')):
            die(f"{kind} weights not found at {name}: run `python get_weights.py` first (or pass --{kind}=...)")
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if dtype == 'auto':
        dtype = generation_dtype(device)
    if dtype not in DTYPES:
        die(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    torch.manual_seed(seed)
    try:
        model = load_model(config, adapter_path=adapter or None, device=device, llm_dtype=getattr(torch, dtype))
    except ValueError as e:  # an adapter that does not fit the base models says which dimension differs
        die(str(e))
    except OSError as e:
        die(f"cannot load the base models: {e} (for the offline defaults run `python get_weights.py`)")
    return model.eval(), device, dtype


def transcribe_heard(model, clips):
    """Whisper's transcript of each clip that holds speech (audio.holds_speech), '' for one that does not: Whisper
    makes up words for silence."""
    from audio import holds_speech
    heard = [k for k, clip in enumerate(clips) if holds_speech(clip)]
    transcripts = [''] * len(clips)
    for k, text in zip(heard, model.transcribe([clips[k] for k in heard]) if heard else []):
        transcripts[k] = text
    return transcripts


def answer_conversations(model, conversations, transcripts=None, on_token=None, **decoding):
    """(answers, each conversation's transcripts): model.chat's, except that a conversation whose clips all hold no
    speech gets NO_SPEECH rather than a voice it does not have. transcripts: one per clip of all the conversations, in
    order (None: transcribe_heard's). on_token(i, ids) names conversation i. decoding: the rest of model.chat's arguments."""
    from audio import NO_SPEECH, holds_speech
    clips = [[a for turn in c for a in turn.get('audios', ())] for c in conversations]
    transcripts = transcribe_heard(model, [a for c in clips for a in c]) if transcripts is None else transcripts
    starts = [sum(map(len, clips[:i])) for i in range(len(clips))]
    heard = [i for i, c in enumerate(clips) if not c or any(holds_speech(a) for a in c)]
    answers = [NO_SPEECH] * len(conversations)
    if heard:
        texts = [t for i in heard for t in transcripts[starts[i]:starts[i] + len(clips[i])]]
        each_row = on_token and (lambda row, ids: on_token(heard[row], ids))
        replies, _ = model.chat([conversations[i] for i in heard], texts, on_token=each_row, **decoding)
        for i, reply in zip(heard, replies):
            answers[i] = reply
    return answers, [transcripts[s:s + len(c)] for s, c in zip(starts, clips)]


def reply_so_far(tokenizer, ids):
    """The text of a reply still being generated, for streaming: stripped as the final answer is, less a last character
    still cut in two (a multi-byte character spans several tokens)."""
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return text[:-1] if text.endswith('\ufffd') else text
