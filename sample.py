"""
Ask the trained model about audio clips: prints Whisper's transcript of each clip and the model's answers.

    python sample.py --audio=clip.wav --prompt="What is the speaker's gender?"
    python sample.py --audio='clips/*.wav' --prompt_file=prompts.txt   # every prompt about every clip, batched
    python sample.py --audio=a.wav,b.wav --temperature=0.6 --top_p=0.9
    python sample.py --audio=clip.wav --interactive                    # prompts from stdin about one clip, until EOF
    python sample.py --audio=clip.wav --adapter=''                     # no adapter: the cascade (transcript only)

Exit code 2, with one line on stderr, for a missing or unusable clip, prompt file or adapter, or an adapter that does
not fit the base models.
"""
import glob
import os
import sys

from audio import NO_SPEECH, AudioError, holds_speech, load_audio
from common import configure, die, load_answering_model
from model import DEFAULT_INSTRUCTION

# -----------------------------------------------------------------------------
audio = ''  # a clip, comma-separated clips, or a glob such as 'clips/*.wav' (quote it)
prompt = DEFAULT_INSTRUCTION  # the instruction asked about every clip
prompt_file = ''  # or a text file of instructions, one per line, each asked about every clip
interactive = False  # read instructions from stdin, one per line, about one clip, until EOF
adapter = 'out/adapter.safetensors'  # the trained adapter (used if present); '' = none: the LLM sees the transcript only
whisper = ''  # base models; '' = the ones the adapter was trained with (without an adapter: the offline defaults)
llm = ''
device = 'auto'  # 'auto' = cuda, then mps, then cpu
dtype = 'auto'  # the LLM's: 'auto' = bfloat16 on CUDA and on CPUs with bf16 instructions, else float32 (model.generation_dtype)
max_new_tokens = 128
temperature = 0.0  # 0 = greedy
top_p = 1.0  # nucleus sampling when temperature > 0
batch_size = 8  # (clip, prompt) pairs per generate call
draft_tokens = 10  # prompt-lookup drafts per step when one pair is answered greedily; 0 = plain decoding (model.llm_decode)
seed = 1337
configure(globals())
# -----------------------------------------------------------------------------

# --- everything that can be checked before the models load ---
paths = []
for item in (s.strip() for s in audio.split(',')):
    if any(c in item for c in '*?['):
        paths += sorted(glob.glob(item)) or die(f"no file matches {item}")
    elif item:
        paths.append(item)
if not paths:
    die("no audio: pass --audio=clip.wav (several: a,b or a glob)")
for path in paths:
    if not os.path.isfile(path):
        die(f"{path}: no such file")
try:
    audios = [load_audio(p) for p in paths]  # 16 kHz mono; refuses unreadable files and clips over 30 s
except AudioError as e:
    die(str(e))
if interactive and len(paths) != 1:
    die(f"--interactive asks about one clip, got {len(paths)}")
if prompt_file:
    try:
        prompts = [line.strip() for line in open(prompt_file) if line.strip()]
    except OSError as e:
        die(f"{prompt_file}: {e.strerror}")
    if not prompts:
        die(f"{prompt_file}: no prompts in it")
else:
    prompts = [prompt]
if adapter and not os.path.isfile(adapter):
    if any(a.startswith('--adapter=') for a in sys.argv[1:]):
        die(f"{adapter}: no such adapter file (train one with train.py, or pass --adapter='' for none)")
    print(f"note: no adapter at {adapter}: the LLM answers from Whisper's transcript alone", file=sys.stderr)
    adapter = ''

# --- the model ---
model, device, dtype = load_answering_model(adapter, whisper, llm, device, dtype, seed)


def ask(clip_ids, questions):
    """Answers to questions[i] about clip clip_ids[i], in batches; a clip of silence or steady noise is said to hold no
    speech (audio.holds_speech), not given a voice it does not have."""
    heard = [k for k, c in enumerate(clip_ids) if transcripts[c] is not None]
    answers = {}
    for i in range(0, len(heard), batch_size):
        ids = [clip_ids[k] for k in heard[i:i + batch_size]]
        replies = model.generate([audios[c] for c in ids], [questions[k] for k in heard[i:i + batch_size]],
                                 transcripts=[transcripts[c] for c in ids], max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, use_adapter=bool(adapter), draft_tokens=draft_tokens)[0]
        answers.update(zip(heard[i:i + batch_size], replies))
    return [answers.get(k, NO_SPEECH) for k in range(len(questions))]


# each clip is transcribed once, however many prompts ask about it; None: it holds no speech, and is not transcribed
spoken = [c for c, a in enumerate(audios) if holds_speech(a)]
transcripts = [None] * len(audios)
for i in range(0, len(spoken), batch_size):
    for c, t in zip(spoken[i:i + batch_size], model.transcribe([audios[c] for c in spoken[i:i + batch_size]])):
        transcripts[c] = t

if interactive:
    print(f"== {paths[0]}\ntranscript: {transcripts[0] or ''}", flush=True)
    while True:
        if sys.stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            print(f"A: {ask([0], [line.strip()])[0]}", flush=True)
else:
    per_batch = max(1, batch_size // len(prompts))  # clips per round, so that the output streams clip by clip
    for start in range(0, len(paths), per_batch):
        clip_ids = list(range(start, min(start + per_batch, len(paths))))
        answers = iter(ask([c for c in clip_ids for _ in prompts], [p for _ in clip_ids for p in prompts]))
        for c in clip_ids:
            print(f"== {paths[c]}\ntranscript: {transcripts[c] or ''}")
            for p in prompts:
                print(f"Q: {p}\nA: {next(answers)}")
            print(flush=True)
