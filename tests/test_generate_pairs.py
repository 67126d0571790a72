"""Fast tests of generate_pairs.py on the tiny random LLM (conftest.py) and a fake OpenAI-compatible server."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT

import generate_pairs as gp
from model import DEFAULT_INSTRUCTION, chat_messages, render_prompt

TWO_INSTRUCTIONS = f"{DEFAULT_INSTRUCTION}|Describe the speaker in one sentence."
WORDS = "the quick brown fox jumps over the lazy dog hello world weather is cold today".split()


def manifest_row(k):
    text = " ".join(WORDS[(k + j) % len(WORDS)] for j in range(2 + k % 7))  # prompts of varied lengths
    attributes = {"gender": ["Female", "Male"][k % 2], "accent": ["Scottish", "American"][k % 3 == 0], "pitch": "High"}
    seed = (f'[00:00:00 - 00:00:0{k % 9 + 1}]: "{text}" (Gender: {attributes["gender"]}, Accent: {attributes["accent"]}, '
            f'Pitch: High, Duration: {k % 9 + 1}s)')
    return dict(audio_id=f"clip{k:04d}", audio_filepath=f"wavs/clip{k:04d}.wav", transcription=text, duration=k % 9 + 1.0,
                dataset="synth", attributes=attributes, seed_transcript=seed)


def write_manifest(data_dir, n, split="train"):
    os.makedirs(data_dir, exist_ok=True)
    rows = [manifest_row(k) for k in range(n)]
    with open(os.path.join(data_dir, f"{split}.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def run(data_dir, llm_dir, **overrides):
    # float32: 'auto' picks bf16 on CPUs with bf16 instructions, where the greedy replies of a random LLM can flip
    # on near-ties when a row is batched with other rows, and the tests compare replies across runs exactly
    gp.main({**gp.config, "data_dir": str(data_dir), "llm": llm_dir, "splits": "train", "max_new_tokens": 8,
             "batch_size": 4, "llm_dtype": "float32", **overrides})


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def by_id(rows):
    return {r["audio_id"]: r for r in rows}


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny models gain nothing from a second thread, and on a CPU shared with other jobs OpenMP's waiting
    threads can make their small matrix products hundreds of times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tokenizer(tiny_paths):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_paths[1])


@pytest.fixture(scope="module")
def lively_llm(tiny_paths, tmp_path_factory):
    """The tiny LLM re-initialised with larger weights and its own output layer. The conftest one (tied embeddings,
    init std 0.02) mostly repeats its last input token whatever came before, so 'batched equals alone' would hold even
    with a wrong padding mask; this one's replies depend on the whole prompt."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_paths[1])
    config.tie_word_embeddings, config.initializer_range = False, 0.2
    torch.manual_seed(1)
    path = str(tmp_path_factory.mktemp("lively") / "tiny-llm")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_paths[1]).save_pretrained(path)
    return path


@pytest.mark.parametrize("shard", ["4/4", "-1/4", "1", "a/b", "1/0"])
def test_bad_shard_is_a_clear_error(shard, capsys):
    with pytest.raises(SystemExit):
        gp.parse_shard(shard)
    assert f"--shard must look like i/n with 0 <= i < n, got {shard!r}" in capsys.readouterr().err
    assert gp.parse_shard("3/4") == (3, 4)


def test_pairs_carry_the_manifest_and_the_training_layout(lively_llm, tokenizer, tmp_path):
    llm_dir = lively_llm
    rows = write_manifest(tmp_path / "batched", 10)
    write_manifest(tmp_path / "alone", 10)
    run(tmp_path / "batched", llm_dir, instructions=TWO_INSTRUCTIONS, batch_size=4)
    instruction_file = tmp_path / "instructions.txt"
    instruction_file.write_text("\n".join(TWO_INSTRUCTIONS.split("|")) + "\n\n")  # the same list, one per line
    run(tmp_path / "alone", llm_dir, instructions=f"@{instruction_file}", batch_size=1)
    batched = read(tmp_path / "batched" / "train_pairs.jsonl")
    alone = by_id(read(tmp_path / "alone" / "train_pairs.jsonl"))
    assert sorted(by_id(batched)) == sorted(alone) == [r["audio_id"] for r in rows]
    choices = TWO_INSTRUCTIONS.split("|")
    for pair in batched:
        row = rows[int(pair["audio_id"][4:])]
        assert {k: pair[k] for k in row} == row
        assert pair["instruction"] == gp.pick_instruction(row["audio_id"], choices)
        assert pair["input"] == render_prompt(tokenizer, row["seed_transcript"], pair["instruction"])
        assert pair["pair_model"] == llm_dir
        # greedy replies do not depend on the batch: left padding and positions are right
        assert (pair["instruction"], pair["target"]) == (alone[pair["audio_id"]]["instruction"], alone[pair["audio_id"]]["target"])
    assert {p["instruction"] for p in batched} == set(choices)
    assert len({p["target"] for p in batched}) > len(batched) // 2  # real replies that depend on the prompt


def test_finished_rows_leave_the_batch_without_changing_the_rest(lively_llm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model import llm_decode

    tokenizer = AutoTokenizer.from_pretrained(lively_llm)
    model = AutoModelForCausalLM.from_pretrained(lively_llm, dtype=torch.float32).eval()
    prompts = [render_prompt(tokenizer, manifest_row(k)["seed_transcript"], DEFAULT_INSTRUCTION) for k in (0, 3, 5, 8)]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]

    def greedy_without_cache(row, n):
        x, out = torch.tensor([row]), []
        with torch.no_grad():
            for _ in range(n):
                out.append(model(x).logits[0, -1].argmax().item())
                x = torch.cat([x, torch.tensor([[out[-1]]])], dim=1)
        return out

    # make the first row's third token a stop token, so that row leaves the batch early while the others go on
    reference = greedy_without_cache(ids[0], 3)
    stop = reference[2]
    assert stop not in reference[:2]
    batch = gp.left_padded_batch(model, ids, tokenizer.pad_token_id)
    answers, n_tokens = llm_decode(model, tokenizer, batch, 12, eot_id=stop)
    assert n_tokens[0] == 3 and max(n_tokens) == 12
    assert answers[0] == tokenizer.decode(reference[:2], skip_special_tokens=True).strip()
    for row, answer, n in zip(ids, answers, n_tokens):
        alone = llm_decode(model, tokenizer, gp.left_padded_batch(model, [row], tokenizer.pad_token_id), 12, eot_id=stop)
        assert alone == ([answer], [n])
        if n == 12:  # the KV-cached loop agrees with recomputing everything
            assert answer == tokenizer.decode(greedy_without_cache(row, 12), skip_special_tokens=True).strip()
    # local_replies encodes the prompts' shared start once and reuses its cache, and the fourth prompt takes the place
    # of the first row to finish: the same replies
    items = [{'input': p} for p in prompts]
    cfg = dict(batch_size=3, queue_size=4, max_new_tokens=12, temperature=0.0, top_p=1.0)
    full = {k: llm_decode(model, tokenizer, gp.left_padded_batch(model, [row], tokenizer.pad_token_id), 12)[0][0]
            for k, row in enumerate(ids)}
    reused = [(item['input'], reply) for results in gp.local_replies(items, cfg, model, tokenizer) for item, reply, _ in results]
    assert len(reused) == 4 and all(reply == full[prompts.index(p)] for p, reply in reused)
    assert gp.shared_start(ids) > 3


def test_rows_that_join_a_batch_under_way_get_the_replies_they_get_alone(lively_llm, monkeypatch):
    """llm_decode's refill: prompts take the places of finished rows, their KV caches joined to the batch's. The first
    row is made to stop early; the prompt that takes its place is longer than the batch's cache so far and a later
    one shorter, so both sides of join_batches' padding are exercised."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import model as model_py

    tokenizer = AutoTokenizer.from_pretrained(lively_llm)
    model = AutoModelForCausalLM.from_pretrained(lively_llm, dtype=torch.float32).eval()
    more = [tokenizer(render_prompt(tokenizer, manifest_row(k)["seed_transcript"], DEFAULT_INSTRUCTION),
                      add_special_tokens=False).input_ids for k in range(12)]
    ids = [more[k] for k in (0, 8, 6, 3)]  # 2, 3, 8 and 5 words

    def decode(rows, **kwargs):
        return model_py.llm_decode(model, tokenizer, gp.left_padded_batch(model, rows, tokenizer.pad_token_id), 10, **kwargs)

    seen = {}
    decode(ids[:1], on_token=lambda row, tokens: seen.update({row: list(tokens)}))
    reference = seen[0]
    stop = reference[2]  # the first row's third token ends its turn
    assert stop not in reference[:2]
    alone = [decode([row], eot_id=stop) for row in ids]
    gaps, join_batches = [], model_py.join_batches

    def recording_join(cache, attention_mask, joining_cache, joining_mask):
        gaps.append(attention_mask.shape[1] - joining_mask.shape[1])
        return join_batches(cache, attention_mask, joining_cache, joining_mask)

    monkeypatch.setattr(model_py, "join_batches", recording_join)
    waiting = ids[2:]

    def refill(n):
        chunk = waiting[:n]
        del waiting[:n]
        return gp.left_padded_batch(model, chunk, tokenizer.pad_token_id) if chunk else None

    answers, n_tokens = decode(ids[:2], eot_id=stop, refill=refill)
    assert (answers, n_tokens) == ([a[0][0] for a in alone], [a[1][0] for a in alone])
    assert n_tokens[0] == 3 and not waiting
    assert min(gaps) < 0 < max(gaps)
    # in a batch of 8, prompts join 2 or more at a time (a quarter of the batch), and still get their own replies
    alone = [decode([row], eot_id=stop) for row in more]
    waiting, asked = more[8:], []

    def counted_refill(n):
        asked.append(n)
        return refill(n)

    answers, n_tokens = decode(more[:8], eot_id=stop, refill=counted_refill)
    assert (answers, n_tokens) == ([a[0][0] for a in alone], [a[1][0] for a in alone])
    assert asked and min(asked) >= 2 and not waiting
    assert len(set(n_tokens)) > 2  # rows finished at different steps


@pytest.mark.parametrize("key", ["batch_size", "queue_size"])
def test_batch_and_queue_sizes_below_one_are_a_clear_error(key, tiny_paths, tmp_path, capsys):
    write_manifest(tmp_path, 2)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, tiny_paths[1], **{key: 0})
    assert e.value.code == 2 and f"--{key} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "train_pairs.jsonl").exists()


def test_queues_are_even_and_longest_first():
    ids = [[7] * (2 + k * 5 % 13) for k in range(13)]
    n_start, queues = gp.plan_queues(ids, 4)
    assert [len(q) for q in queues] == [3, 3, 3, 4] and n_start == 1  # not 4, 4, 4 and a lone 1
    order = [k for q in queues for k in q]
    assert sorted(order) == list(range(13)) and [len(ids[k]) for k in order] == sorted(map(len, ids), reverse=True)


def test_resume_after_damage_equals_a_clean_run(tiny_paths, lively_llm, tmp_path, capsys):
    write_manifest(tmp_path, 12)
    run(tmp_path, lively_llm)
    out = tmp_path / "train_pairs.jsonl"
    clean = by_id(read(out))
    assert len({r["target"] for r in clean.values()}) > 6  # replies of their own, so a mix-up of rows would show
    lines = out.read_text().splitlines(keepends=True)
    # rows 2 and 5 lost, and the last line cut short as by a kill mid-write
    out.write_text("".join(lines[:2] + lines[3:5] + lines[6:-1]) + lines[-1][: len(lines[-1]) // 2])
    run(tmp_path, lively_llm)
    assert "dropped 1 incomplete or repeated line(s)" in capsys.readouterr().err
    again = read(out)
    assert len(again) == len({r["audio_id"] for r in again}) == 12
    assert by_id(again) == clean
    run(tmp_path, lively_llm)  # nothing left to do
    assert read(out) == again
    assert "0 new pairs, 12 already done" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # pairs from another LLM are not mixed in
        run(tmp_path, tiny_paths[1])
    assert f"holds pairs from '{lively_llm}'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor pairs made for an instruction no longer asked
        run(tmp_path, lively_llm, instructions="Describe the speaker's voice.")
    err = capsys.readouterr().err
    assert "was asked 'What can you hear from the audio?', these give it \"Describe the speaker's voice.\"" in err
    with pytest.raises(SystemExit):  # nor, with one instruction added, pairs whose rows the longer list asks another
        run(tmp_path, lively_llm, instructions="What can you hear from the audio?|Describe the speaker's voice.")
    assert "pairs made with other --instructions" in capsys.readouterr().err
    assert read(out) == again


def test_resumed_run_queues_and_caches_as_an_uninterrupted_one(tiny_paths, tmp_path, monkeypatch):
    """The queues, and the prompt start held in the KV cache, are planned over every prompt asked, written or not: in
    bf16 another batch or another cached start can flip a greedy reply, and a resumed run would not equal a clean one.
    The LLM is faked (only the plan matters here): each reply names its queue."""
    calls = []  # (n_start, cached start) of each queue

    def fake_decode(model, tokenizer, batch, *args, refill):
        calls.append((batch["n_start"], batch["cache"]))
        rows = []
        while batch is not None:  # the first batch, then the rows that take finished rows' places
            assert (batch["n_start"], batch["cache"]) == calls[-1]
            rows += batch["rows"]
            batch = refill(1)
        return [f"queue {len(calls)}"] * len(rows), [1] * len(rows)

    monkeypatch.setattr(gp, "load_llm", lambda *args: None)
    monkeypatch.setattr(gp, "start_cache", lambda model, ids: tuple(ids))
    monkeypatch.setattr(gp, "cache_for_batch", lambda cache, n: cache)
    monkeypatch.setattr(gp, "left_padded_batch", lambda model, rows, pad_id, n_start: dict(rows=rows, n_start=n_start))
    monkeypatch.setattr(gp, "llm_decode", fake_decode)
    write_manifest(tmp_path, 12)
    out = tmp_path / "train_pairs.jsonl"

    def queues(pairs):
        grouped = {}
        for p in pairs:
            grouped.setdefault(p["target"], set()).add(p["audio_id"])
        return list(grouped.values())

    run(tmp_path, tiny_paths[1], queue_size=4, batch_size=2)
    clean = out.read_text().splitlines(keepends=True)
    planned = queues(map(json.loads, clean))
    assert len(planned) == 3 and len(set(calls)) == 1
    lost = [{"clip0000", "clip0009"},  # both 1 s long: their prompts share more than all twelve do
            {min(planned[0]), min(planned[2])},  # two rows of different queues
            planned[1]]  # a whole queue, as a kill leaves
    for ids in lost:
        out.write_text("".join(line for line in clean if json.loads(line)["audio_id"] not in ids))
        n_calls = len(calls)
        run(tmp_path, tiny_paths[1], queue_size=4, batch_size=2)
        remade = queues(map(json.loads, out.read_text().splitlines()[len(clean) - len(ids):]))
        assert set().union(*remade) == ids
        assert all(any(b <= p for p in planned) for b in remade)  # each one part of a planned queue...
        assert ids not in planned or remade == [ids]  # ...and all of it when all of it was lost
        assert len(calls) == n_calls + len(remade) and len(set(calls)) == 1  # the same cached start


def test_each_group_of_instructions_gives_every_row_a_pair(lively_llm, tmp_path, capsys):
    """Groups as in config/voice_questions.txt: every clip gets a pair from the first (here a description) and one
    from the second (a gender question). Adding a group to a list keeps the pairs made with it and makes only the
    new group's."""
    descriptions, questions = TWO_INSTRUCTIONS.split("|"), ["Is the speaker male or female?", "Is the speaker female or male?"]
    rows = write_manifest(tmp_path / "grown", 10)
    write_manifest(tmp_path / "fresh", 10)
    run(tmp_path / "grown", lively_llm, instructions=TWO_INSTRUCTIONS)
    first = read(tmp_path / "grown" / "train_pairs.jsonl")
    run(tmp_path / "grown", lively_llm, instructions=TWO_INSTRUCTIONS + "||" + "|".join(questions))
    assert "10 new pairs, 10 already done" in capsys.readouterr().err
    grown = read(tmp_path / "grown" / "train_pairs.jsonl")
    assert grown[:10] == first
    instruction_file = tmp_path / "groups.txt"
    instruction_file.write_text("\n".join(descriptions) + "\n\n" + "\n".join(questions) + "\n")
    run(tmp_path / "fresh", lively_llm, instructions=f"@{instruction_file}")
    fresh = read(tmp_path / "fresh" / "train_pairs.jsonl")
    key = lambda p: (p["audio_id"], p["instruction"], p["target"])
    assert sorted(map(key, fresh)) == sorted(map(key, grown)) and len({p["target"] for p in fresh}) > 12
    for row in rows:
        asked = sorted(p["instruction"] for p in fresh if p["audio_id"] == row["audio_id"])
        assert asked == sorted([gp.pick_instruction(row["audio_id"], descriptions), gp.pick_instruction(row["audio_id"], questions)])
    assert {p["instruction"] for p in fresh} == set(descriptions + questions)
    with pytest.raises(SystemExit):  # a group dropped again: its pairs are not the list's
        run(tmp_path / "fresh", lively_llm, instructions="|".join(questions))
    assert "these give it 'Is the speaker" in capsys.readouterr().err


def test_killed_run_restarts_without_duplicates(tiny_paths, tmp_path):
    rows = write_manifest(tmp_path, 120)
    out = tmp_path / "train_pairs.jsonl"
    cmd = [sys.executable, "generate_pairs.py", f"--data_dir={tmp_path}", f"--llm={tiny_paths[1]}", "--splits=train",
           "--batch_size=1", "--queue_size=1", "--max_new_tokens=16", f"--instructions={TWO_INSTRUCTIONS}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 60
        while not (out.exists() and out.stat().st_size > 0):  # the first batch has landed
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no output within 60 s"
            time.sleep(0.01)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    n_first = len(out.read_bytes().splitlines())
    assert 0 < n_first < len(rows)
    run(tmp_path, tiny_paths[1], batch_size=16, max_new_tokens=16, instructions=TWO_INSTRUCTIONS)
    ids = [p["audio_id"] for p in read(out)]
    assert len(ids) == len(set(ids)) and sorted(ids) == [r["audio_id"] for r in rows]


def test_shards_cover_every_row_once_and_merge(tiny_paths, tmp_path, capsys):
    rows = write_manifest(tmp_path, 9)
    groups = "What can you hear from the audio?||Is the speaker male or female?"  # two pairs per row
    run(tmp_path, tiny_paths[1], shard="0/2", max_new_tokens=4, instructions=groups)
    run(tmp_path, tiny_paths[1], shard="1/2", max_new_tokens=4, instructions=groups)
    first = read(tmp_path / "train_pairs.shard0of2.jsonl")
    second = read(tmp_path / "train_pairs.shard1of2.jsonl")
    assert sorted(p["audio_id"] for p in first) == [r["audio_id"] for r in rows[0::2] for _ in range(2)]
    assert sorted(p["audio_id"] for p in second) == [r["audio_id"] for r in rows[1::2] for _ in range(2)]
    assert not (tmp_path / "train_pairs.jsonl").exists()
    with pytest.raises(SystemExit):  # merged for one pair per row, the shards' second pairs are not asked for
        run(tmp_path, tiny_paths[1], merge_shards=2)
    assert "the shards hold 9 pairs that the manifest and --instructions do not ask for" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # merged for three, the third is missing
        run(tmp_path, tiny_paths[1], merge_shards=2, instructions=groups + "||Describe the voice.")
    assert "9 pairs have not been made yet" in capsys.readouterr().err
    run(tmp_path, tiny_paths[1], merge_shards=2, instructions=groups)
    merged = read(tmp_path / "train_pairs.jsonl")
    assert [p["audio_id"] for p in merged] == [r["audio_id"] for r in rows for _ in range(2)]  # manifest order
    assert sorted(map(json.dumps, merged)) == sorted(map(json.dumps, first + second))


def test_bad_manifest_rows_are_reported_and_skipped(tiny_paths, tmp_path, capsys):
    good = [manifest_row(k) for k in range(3)]
    path = tmp_path / "train.jsonl"
    no_seed = {**manifest_row(7)}
    del no_seed["seed_transcript"]
    path.write_text(json.dumps(good[0]) + "\n" + '{"audio_id": "x", "seed_transcript": \n' + json.dumps(good[1]) + "\n"
                    + json.dumps(no_seed) + "\n" + json.dumps(good[2]) + "\n" + json.dumps(good[2]) + "\n")
    run(tmp_path, tiny_paths[1], max_new_tokens=4)
    err = capsys.readouterr().err
    assert f"{path}:2: bad JSON" in err
    assert f"{path}:4: no seed_transcript" in err
    assert f"{path}:6: audio_id 'clip0002' repeated" in err
    assert "3 new pairs, 0 already done, 3 bad manifest rows skipped" in err
    assert [p["audio_id"] for p in read(tmp_path / "train_pairs.jsonl")] != []
    assert sorted(p["audio_id"] for p in read(tmp_path / "train_pairs.jsonl")) == [r["audio_id"] for r in good]


def test_missing_manifest_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path / "nowhere", "unused")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "nowhere" / "train.jsonl") in err and "python prepare.py" in err


# -----------------------------------------------------------------------------
# the http backend, against a fake OpenAI-compatible server on 127.0.0.1


def fake_reply(messages):
    return "heard " + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture
def fake_server():
    state = dict(bodies=[], failures_left=1, failures_served=0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_json(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": "fake-llm", "object": "model"}]})
            else:
                self.send_json(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                return self.send_json(404, {"error": "not found"})
            if state["failures_left"] > 0:  # one server error, to exercise the retry
                state["failures_left"] -= 1
                state["failures_served"] += 1
                return self.send_json(500, {"error": "overloaded"})
            state["bodies"].append(body)
            self.send_json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": fake_reply(body["messages"])}}],
                                 "usage": {"completion_tokens": 5}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


def test_http_backend_sends_the_chat_layout_and_retries(tiny_paths, tokenizer, tmp_path, fake_server):
    api_base, state = fake_server
    rows = write_manifest(tmp_path, 7)
    run(tmp_path, tiny_paths[1], backend="http", api_base=api_base, concurrency=3, max_retries=2, max_new_tokens=50,
        temperature=0.6, top_p=0.9, instructions=TWO_INSTRUCTIONS)
    assert state["failures_served"] == 1 and len(state["bodies"]) == len(rows)  # the failed request was retried
    pairs = by_id(read(tmp_path / "train_pairs.jsonl"))
    assert sorted(pairs) == [r["audio_id"] for r in rows]
    choices = TWO_INSTRUCTIONS.split("|")
    expected_messages = []
    for row in rows:
        pair = pairs[row["audio_id"]]
        messages = chat_messages(row["seed_transcript"], gp.pick_instruction(row["audio_id"], choices))
        expected_messages.append(messages)
        assert pair["target"] == fake_reply(messages)
        assert pair["input"] == render_prompt(tokenizer, row["seed_transcript"], pair["instruction"])
        assert pair["pair_model"] == "fake-llm"
    assert sorted(map(json.dumps, (b["messages"] for b in state["bodies"]))) == sorted(map(json.dumps, expected_messages))
    for body in state["bodies"]:
        assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"]) == ("fake-llm", 50, 0.6, 0.9)


def test_unreachable_server_names_the_url(tiny_paths, tmp_path, capsys):
    write_manifest(tmp_path, 2)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_base = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, tiny_paths[1], backend="http", api_base=api_base, max_retries=1)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "cannot reach the OpenAI-compatible server" in err and api_base in err
    assert not (tmp_path / "train_pairs.jsonl").exists()


def test_demo_training_questions_are_not_eval_questions():
    """demo.sh trains on the questions of its instruction files, and eval.py scores the adapter on its own QUESTIONS: a
    training question holding one of eval.py's would teach the test's wording, not the hearing. (Its 'chat' questions
    are left out: they start with the paper's training question, and no score of the demo's bar comes from them.)"""
    import eval as ev
    files = sorted(set(re.findall(r"config/voice_[\w.]+?\.txt", (ROOT / "demo.sh").read_text())))
    assert files == ["config/voice_questions.txt", "config/voice_questions_0.5b.txt"]
    scored = [ev.words(max(q.split("{text}"), key=len)) for task, questions in ev.QUESTIONS.items() if task != "chat"
              for q in questions]
    for name in files:
        for instruction in [i for group in gp.parse_instructions("@" + str(ROOT / name)) for i in group]:
            asked = [q for q in scored if ev.spans(ev.words(instruction), q)]
            assert not asked, f"{name}: {instruction!r} asks eval.py's question"
