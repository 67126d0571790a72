"""sample.py as a script, on an adapter that train.py wrote (tiny random models from conftest.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT, make_tiny_llm, speech_like

from audio import load_audio
from model import AdapterConfig, load_model
from test_train import steerable_llm  # noqa: F401 (a fixture: a tiny LLM whose answers an adapter can change)

PROMPTS = ["What can you hear from the audio?", "Is the speaker male or female?"]


def run_sample(*args, stdin=None, expect_rc=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    # float32: the answers are compared with an in-process float32 model (the default would be bf16 on a bf16 CPU)
    proc = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--device=cpu", "--dtype=float32", "--max_new_tokens=8",
                           *args], cwd=ROOT, env=env, input=stdin and stdin.encode(), capture_output=True, timeout=300)
    # decoded by hand, not text=True: universal newlines would turn a "\r" in a random tiny LLM's answer into "\n"
    proc.stdout, proc.stderr = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tiny_paths, steerable_llm, tmp_path_factory):
    """A few steps of train.py on two clips: (adapter path, clip paths)."""
    d = tmp_path_factory.mktemp("sample")
    (d / "clips").mkdir()
    rows = []
    for i in range(2):
        sf.write(d / "clips" / f"c{i}.wav", speech_like(1.0 + i, 140 + 60 * i, seed=i), 16000)
        rows.append(dict(audio_filepath=f"clips/c{i}.wav", transcription="hello world", instruction=PROMPTS[0],
                         target=["a female voice", "a male voice"][i]))
    (d / "train_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run([sys.executable, str(ROOT / "train.py"), f"--whisper={tiny_paths[0]}", f"--llm={steerable_llm}",
                    f"--data_dir={d}", f"--out_dir={d / 'out'}", "--device=cpu", "--dtype=float32", "--num_threads=1",
                    "--max_iters=15", "--lr=3e-3", "--warmup_iters=0", "--eval_iters=1"],
                   cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, timeout=300)
    return d / "out" / "adapter.safetensors", [d / "clips" / "c0.wav", d / "clips" / "c1.wav"]


@pytest.fixture(scope="module")
def loaded(trained):
    """The trained adapter loaded in-process the way sample.py loads it (fp32 on CPU)."""
    return load_model(adapter_path=str(trained[0]), llm_dtype=torch.float32).eval()


def test_sample_reproduces_the_trained_adapters_greedy_answers(trained, loaded, tmp_path):
    adapter, clips = trained
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    proc = run_sample(f"--adapter={adapter}", f"--audio={clips[0].parent}/*.wav", f"--prompt_file={tmp_path / 'prompts.txt'}")
    audios = [load_audio(c) for c in clips]
    transcripts = loaded.transcribe(audios)
    # sample.py puts every (clip, prompt) pair of this small run in one batch; so does this
    answers, _ = loaded.generate([a for a in audios for _ in PROMPTS], PROMPTS * 2, transcripts=[t for t in transcripts for _ in PROMPTS],
                                 max_new_tokens=8)
    expected = "".join(f"== {c}\ntranscript: {t}\n" + "".join(f"Q: {p}\nA: {answers[2 * i + j]}\n" for j, p in enumerate(PROMPTS)) + "\n"
                       for i, (c, t) in enumerate(zip(clips, transcripts)))
    assert proc.stdout.endswith(expected)
    assert any(answers), "all answers are empty: the comparison would prove nothing"


def test_interactive_holds_a_conversation_and_takes_clips_on_the_way(trained, loaded, tmp_path):
    adapter, clips = trained
    audio = [load_audio(c) for c in clips]
    transcripts = loaded.transcribe(audio)
    stdin = f"{PROMPTS[0]}\n/audio {tmp_path / 'missing.wav'}\n/audio {clips[0]}\n{PROMPTS[1]}\nAnd now?\n"
    proc = run_sample(f"--adapter={adapter}", f"--audio={clips[1]}", "--interactive", stdin=stdin)
    # the same conversation in-process: the clips in the turns they were added to, each answer kept in the context
    turns, answers, in_order = [], [], [transcripts[1], transcripts[0]]
    for question, clips_added in ((PROMPTS[0], audio[1:]), (PROMPTS[1], audio[:1]), ("And now?", [])):
        turns.append({"role": "user", "content": question, "audios": clips_added})
        n_clips = sum(len(t.get("audios", ())) for t in turns)
        answers.append(loaded.chat([turns], transcripts=in_order[:n_clips], max_new_tokens=8)[0][0])
        turns.append({"role": "assistant", "content": answers[-1]})
    assert proc.stdout.endswith(f"== {clips[1]}\ntranscript: {transcripts[1]}\nA: {answers[0]}\n"
                                f"== {clips[0]}\ntranscript: {transcripts[0]}\nA: {answers[1]}\nA: {answers[2]}\n"), proc.stdout
    assert f"error: {tmp_path / 'missing.wav'}: no such file" in proc.stderr and len(set(answers)) > 1
    # without the earlier turns the last question gets another answer: the conversation is what it answers
    alone = loaded.chat([[{"role": "user", "content": "And now?", "audios": audio[:1]}]], transcripts=transcripts[:1],
                        max_new_tokens=8)[0][0]
    assert alone != answers[2], alone


def test_cascade(trained, loaded):
    adapter, clips = trained
    audio = [load_audio(clips[1])]
    transcript = loaded.transcribe(audio)
    # no adapter: the LLM answers from the transcript alone
    proc = run_sample("--adapter=", f"--audio={clips[1]}", f"--whisper={loaded.config.whisper}", f"--llm={loaded.config.llm}")
    cascade = loaded.generate(audio, [PROMPTS[0]], transcripts=transcript, max_new_tokens=8, use_adapter=False)[0][0]
    assert proc.stdout.endswith(f"A: {cascade}\n\n") and cascade


def test_a_long_clip_is_read_in_windows_up_to_max_seconds(trained, loaded, tmp_path):
    adapter, _ = trained
    long = np.concatenate([speech_like(20.0, 150, seed=4), speech_like(15.0, 210, seed=5)])
    sf.write(tmp_path / "long.wav", long, 16000)
    proc = run_sample(f"--adapter={adapter}", f"--audio={tmp_path / 'long.wav'}")
    clip = load_audio(tmp_path / "long.wav", 60)
    answer, transcript = loaded.generate([clip], [PROMPTS[0]], max_new_tokens=8)
    assert proc.stdout.endswith(f"transcript: {transcript[0]}\nQ: {PROMPTS[0]}\nA: {answer[0]}\n\n"), proc.stdout
    proc = run_sample(f"--adapter={adapter}", f"--audio={tmp_path / 'long.wav'}", "--max_seconds=30", expect_rc=2)
    assert "35.0 s is longer than the limit of 30 s (--max_seconds sets the limit)" in proc.stderr, proc.stderr


def test_a_clip_of_silence_is_said_to_hold_no_speech(trained, tmp_path):
    adapter, clips = trained
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    proc = run_sample(f"--adapter={adapter}", f"--audio={tmp_path / 'silence.wav'},{clips[0]}")
    silent, spoken = proc.stdout.split("== ")[-2:]
    assert silent == f"{tmp_path / 'silence.wav'}\ntranscript: \nQ: {PROMPTS[0]}\nA: The clip holds no speech.\n\n"
    assert "no speech" not in spoken


def test_clear_errors(trained, tiny_paths, tmp_path):
    adapter, clips = trained
    (tmp_path / "noise.wav").write_bytes(b"not a wav file at all" * 10)
    sf.write(tmp_path / "long.wav", np.zeros(121 * 16000, np.int16), 16000)
    for audio, message in [(tmp_path / "nothing.wav", "no such file"), (tmp_path / "noise.wav", "cannot read audio"),
                           (tmp_path / "long.wav", "longer than the limit of 120 s"), (f"{tmp_path}/*.flac", "no file matches")]:
        proc = run_sample(f"--adapter={adapter}", f"--audio={audio}", expect_rc=2)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_sample(f"--adapter={tmp_path / 'none.safetensors'}", f"--audio={clips[0]}", expect_rc=2)
    assert "no such adapter file" in proc.stderr
    # an adapter trained for another LLM (hidden size 32, not 48) is refused, naming the dimension
    other = load_model(AdapterConfig(whisper=tiny_paths[0], llm=make_tiny_llm(tmp_path / "llm32", hidden_size=32)),
                       llm_dtype=torch.float32)
    other.save_adapter(tmp_path / "other.safetensors")
    proc = run_sample(f"--adapter={tmp_path / 'other.safetensors'}", f"--llm={tiny_paths[1]}", f"--audio={clips[0]}", expect_rc=2)
    assert "n_llm_state=32" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
