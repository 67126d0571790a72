"""
Ask the trained model about audio clips: prints Whisper's transcript of each clip and the model's answers.

    python sample.py --audio=clip.wav --prompt="What is the speaker's gender?"
    python sample.py --audio='clips/*.wav' --prompt_file=prompts.txt   # every prompt about every clip, batched
    python sample.py --audio=a.wav,b.wav --temperature=0.6 --top_p=0.9
    python sample.py --audio=clip.wav --adapter=''                     # no adapter: the cascade (transcript only)
    python sample.py --audio=a.wav --interactive                       # a conversation, from stdin, until EOF

--interactive holds a conversation: each line is a question, answered as it is generated, with the clips and the
earlier answers in the context; a line `/audio b.wav` (or several, comma-separated) adds clips to the next question.
Clips longer than 30 s are read in 30-s windows, up to max_seconds.

Exit code 2, with one line on stderr, for a missing or unusable clip, prompt file or adapter, or an adapter that does
not fit the base models.
"""
import glob
import os
import sys

from audio import AudioError, load_audio
from common import answer_conversations, configure, die, load_answering_model, reply_so_far, transcribe_heard
from model import DEFAULT_INSTRUCTION

# -----------------------------------------------------------------------------
audio = ''  # a clip, comma-separated clips, or a glob such as 'clips/*.wav' (quote it)
prompt = DEFAULT_INSTRUCTION  # the instruction asked about every clip
prompt_file = ''  # or a text file of instructions, one per line, each asked about every clip
interactive = False  # a conversation: questions from stdin, one per line, until EOF; `/audio a.wav` adds clips
adapter = 'out/adapter.safetensors'  # the trained adapter (used if present); '' = none: the LLM sees the transcript only
whisper = ''  # base models; '' = the ones the adapter was trained with (without an adapter: the offline defaults)
llm = ''
device = 'auto'  # 'auto' = cuda, then mps, then cpu
dtype = 'auto'  # the LLM's: 'auto' = bfloat16 on CUDA and on CPUs with bf16 instructions, else float32 (common.generation_dtype)
max_new_tokens = 128
temperature = 0.0  # 0 = greedy
top_p = 1.0  # nucleus sampling when temperature > 0
batch_size = 8  # (clip, prompt) pairs per generate call
draft_tokens = 10  # prompt-lookup drafts per step when one pair is answered greedily; 0 = plain decoding (model.llm_decode)
max_seconds = 120.0  # longer clips are refused; past 30 s, Whisper reads them in 30-s windows
seed = 1337
configure(globals())
# -----------------------------------------------------------------------------

# --- everything that can be checked before the models load ---
def read_clips(spec):
    """(paths, 16 kHz arrays) of a clip, comma-separated clips or globs; AudioError or ValueError naming what is wrong."""
    paths = []
    for item in (s.strip() for s in spec.split(',')):
        if any(c in item for c in '*?['):
            matches = sorted(glob.glob(item))
            if not matches:
                raise ValueError(f"no file matches {item}")
            paths += matches
        elif item:
            paths.append(item)
    return paths, [load_audio(p, max_seconds) for p in paths]  # refuses unreadable files and clips over max_seconds


try:
    paths, audios = read_clips(audio)
except (AudioError, ValueError) as e:
    die(f"{e}{' (--max_seconds sets the limit)' if getattr(e, 'reason', '') == 'too_long' else ''}")
if not paths and not interactive:
    die("no audio: pass --audio=clip.wav (several: a,b or a glob)")
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
decoding = dict(use_adapter=bool(adapter), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                draft_tokens=draft_tokens)


def transcribe(clips):
    """Each clip's transcript ('' for one that holds no speech), batch_size clips at a time."""
    return [t for i in range(0, len(clips), batch_size) for t in transcribe_heard(model, clips[i:i + batch_size])]


def converse(paths, audios):
    """Questions from stdin about a growing conversation, each answer printed as it is generated."""
    conversation, transcripts, new_clips, shown = [], [], [], ''

    def add_clips(paths, clips):
        texts = transcribe(clips)
        for path, text in zip(paths, texts):
            print(f"== {path}\ntranscript: {text}", flush=True)
        transcripts.extend(texts)
        new_clips.extend(clips)

    def show(row, ids):  # the answer so far, printed as it grows
        nonlocal shown
        text = reply_so_far(model.tokenizer, ids)
        if text.startswith(shown):
            print(text[len(shown):], end="", flush=True)
            shown = text

    add_clips(paths, audios)
    while True:
        if sys.stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if line.startswith('/audio'):
            try:
                add_clips(*read_clips(line[len('/audio'):].strip()))
            except (AudioError, ValueError) as e:  # said, and the conversation goes on
                print(f"error: {e}", file=sys.stderr, flush=True)
        elif line:
            conversation.append({'role': 'user', 'content': line, 'audios': new_clips[:]})
            new_clips.clear()
            shown = ''
            print("A: ", end="", flush=True)
            answer = answer_conversations(model, [conversation], transcripts, on_token=show, **decoding)[0][0]
            print(answer[len(shown):] if answer.startswith(shown) else f"\nA: {answer}", flush=True)
            conversation.append({'role': 'assistant', 'content': answer})


if interactive:
    converse(paths, audios)
else:
    transcripts = transcribe(audios)  # once per clip, however many prompts ask about it
    per_batch = max(1, batch_size // len(prompts))  # clips per round, so that the output streams clip by clip
    for start in range(0, len(paths), per_batch):
        clip_ids = list(range(start, min(start + per_batch, len(paths))))
        asked, answers = [(c, p) for c in clip_ids for p in prompts], []
        for i in range(0, len(asked), batch_size):
            chunk = asked[i:i + batch_size]
            answers += answer_conversations(model, [[{'role': 'user', 'content': p, 'audios': [audios[c]]}] for c, p in chunk],
                                            [transcripts[c] for c, _ in chunk], **decoding)[0]
        answers = iter(answers)
        for c in clip_ids:
            print(f"== {paths[c]}\ntranscript: {transcripts[c]}")
            for p in prompts:
                print(f"Q: {p}\nA: {next(answers)}")
            print(flush=True)
