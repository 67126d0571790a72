"""Fast tests of eval.py: the scorer, WER, the format rules, the Dynamic-SUPERB loader, the judge, and the whole
report on tiny random models (see conftest.py)."""
import base64
import http.server
import inspect
import json
import os
import subprocess
import sys
import threading

import pytest
import soundfile as sf
from conftest import ROOT, chirp, make_tiny_whisper

import eval as ev

GENDER = ['male', 'female']
PITCH5 = ['very low', 'low', 'normal', 'high', 'very high']


@pytest.mark.parametrize("prediction,label,options,expected", [
    ("The speaker is female.", "Female", GENDER, "hit"),
    ("FEMALE!!!", "female", GENDER, "hit"),  # case and punctuation are normalised away
    ("female", "male", GENDER, "wrong"),  # 'male' does not hit inside 'female'
    ("The speaker sounds male.", "female", GENDER, "wrong"),
    ("It could be male or female.", "male", GENDER, "multi"),  # naming several options is invalid
    ("I cannot tell from this clip.", "male", GENDER, "none"),
    ("The pitch is very high.", "very high", PITCH5, "hit"),  # multi-word label; 'high' inside it is not a second option
    ("The pitch is high.", "very high", PITCH5, "wrong"),
    ("very, HIGH", "Very High", PITCH5, "hit"),
    ("Yes.", "yes", ["yes", "no"], "hit"),
    ("A Scottish accent.", "Scottish", None, "hit"),  # no options known: label match only
    ("An English accent.", "Scottish", None, "wrong"),
])
def test_score_answer(prediction, label, options, expected):
    assert ev.score_answer(prediction, label, options) == expected


def test_word_error_rate():
    assert ev.word_error_rate(["the cat sat"], ["the cat sat"]) == 0
    assert ev.word_error_rate(["The cat, sat."], ["the CAT sat"]) == 0  # normalised on both sides
    assert ev.word_error_rate(["the cat sat on"], ["the dog sat in"]) == 0.5  # 2 substitutions / 4
    assert ev.word_error_rate(["the cat"], ["the big fat cat"]) == 1.0  # 2 insertions / 2
    assert ev.word_error_rate(["a b c d"], ["a d"]) == 0.5  # 2 deletions / 4
    assert ev.word_error_rate(["a b", "c d e f"], ["a b", ""]) == 4 / 6  # corpus level, an empty hypothesis
    assert ev.word_error_rate("", "") == 0 and ev.word_error_rate("", "hello there") == 2
    assert ev.edit_distance(list("kitten"), list("sitting")) == 3


FORMAT_CASES = [  # kind, params, an answer that follows the rule, one that does not
    ("all_caps", {}, "A FEMALE VOICE, CALM.", "A female voice."),
    ("lowercase", {}, "a calm female voice.", "A calm female voice."),
    ("bullets", {"n": 2}, "* a female voice\n* a scottish accent", "* one\n* two\n* three"),
    ("json", {"keys": ["speaker", "content"]}, '```json\n{"speaker": "female", "content": "hi"}\n```', '{"speaker": "female"}'),
    ("word_limit", {"n": 5}, "A female voice.", "A calm and clear female voice here."),
    ("ends_with", {"phrase": "That is all."}, "A calm voice. That is all.", "That is all. A calm voice."),
    ("no_commas", {}, "A calm female voice.", "A calm, female voice."),
    ("starts_with", {"word": "Overall"}, "**Overall,** a calm voice.", "A calm voice overall."),
    ("quoted", {}, '"A calm voice."', 'A "calm" voice.'),
]


@pytest.mark.parametrize("kind,params,good,bad", FORMAT_CASES)
def test_format_rules(kind, params, good, bad):
    assert ev.follows(good, (kind, params)) and not ev.follows(bad, (kind, params))
    assert not ev.follows("", (kind, params))
    # the instruction's wording names the rule's parameters: the number, the phrase, the word, each JSON key
    text = ev.constraint_text(kind, params)
    assert all(str(v) in text for v in params.values() if not isinstance(v, list)), text
    assert all(f'"{k}"' in text for k in params.get("keys", [])), text


def test_every_kind_of_constraint_has_a_case():
    assert set(ev.FORMAT_RULES) == {case[0] for case in FORMAT_CASES} and len(ev.FORMAT_RULES) >= 8


def test_options_from_instruction():
    inst = "Recognize the emotion. The answer could be anger, disgust, sadness, joy, or neutral. Answer briefly."
    assert ev.options_from_instruction(inst) == ["anger", "disgust", "sadness", "joy", "neutral"]
    assert ev.options_from_instruction("Is it fake? The answer could be 'yes' or 'no'.") == ["yes", "no"]
    assert ev.options_from_instruction("Transcribe the speech.") is None


def test_instances_vary_wording_deterministically_and_list_options():
    rows = [{"audio_id": f"c{k}", "audio": f"/x/c{k}.wav", "transcription": f"sentence number {k}",
             "gender": "Male" if k % 2 else "Female", "pitch": "Very High" if k == 3 else "Low"} for k in range(12)]
    insts, dropped = ev.build_instances(rows, ["gender", "pitch", "accent", "transcription", "matching"], seed=1)
    assert dropped == ["accent"]
    again, _ = ev.build_instances(rows, ["gender", "pitch", "accent", "transcription", "matching"], seed=1)
    assert [i.instruction for i in insts] == [i.instruction for i in again]
    gender = [i for i in insts if i.task == "gender"]
    assert len({i.instruction for i in gender}) >= 3
    # every instance lists all the options, in an order of its own (the same in every run)
    shown = [tuple(ev.options_from_instruction(i.instruction)) for i in gender]
    assert set(shown) == {("male", "female"), ("female", "male")}
    assert [i for i in insts if i.task == "pitch"][0].options == ["low", "normal", "high", "very high"]
    matching = [i for i in insts if i.task == "matching"]
    assert sorted(i.label for i in matching) == ["no"] * 6 + ["yes"] * 6
    limited, _ = ev.build_instances(rows, ["gender"], limit=3, if_limit=9, seed=1)
    assert len([i for i in limited if i.task == "gender"]) == 3
    # a limit keeps each value about equally often, however the seeded shuffle happens to fall
    skewed = [dict(r, gender="Male" if k < 3 else "Female") for k, r in enumerate(rows)]  # 3 male, 9 female
    for seed in range(5):
        labels = [i.label for i in ev.build_instances(skewed, ["gender", "pitch"], limit=4, seed=seed)[0]]
        assert sorted(labels[:4]) == ["female", "female", "male", "male"]
        # a value with fewer rows than its share gives them all, and the other values fill the limit
        assert sorted(labels[4:]) == ["low", "low", "low", "very high"]
    assert {i.rule[0] for i in limited if i.task == "ifeval"} == set(list(ev.FORMAT_RULES)[:9])


def test_dynamic_superb_loader(tmp_path):
    sf.write(tmp_path / "a.wav", chirp(0.5), 16000)
    (tmp_path / "EmotionRecognition").mkdir()
    sf.write(tmp_path / "EmotionRecognition" / "b.wav", chirp(0.5, f0=200), 16000)
    rows = [{"file": "b.wav", "audio": "b.wav", "instruction": "Which emotion? The answer could be happy, sad, or angry.",
             "label": "Sad"},
            {"file": "e.wav", "audio": {"array": chirp(0.5, sr=8000).tolist(), "sampling_rate": 8000},
             "instruction": "Which emotion? The answer could be happy, sad, or angry.", "label": "happy"}]
    (tmp_path / "EmotionRecognition" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "speaker.jsonl").write_text(json.dumps({"file": "a.wav", "instruction": "Who speaks?", "label": "Alice"}) + "\n")
    insts, skipped = ev.load_dynamic_superb(str(tmp_path))
    assert skipped == [] and sorted({i.task for i in insts}) == ["ds:EmotionRecognition", "ds:speaker"]
    emo = sorted([i for i in insts if i.task == "ds:EmotionRecognition"], key=lambda i: i.label.lower())
    assert emo[0].options == ["happy", "sad", "angry"] and emo[1].label == "Sad"
    assert len(ev.read_clip(emo[0].audio)) == 8000  # embedded at 8 kHz, resampled to 16 kHz
    assert len(ev.read_clip(emo[1].audio)) == 8000  # a path relative to the jsonl's folder
    speaker = [i for i in insts if i.task == "ds:speaker"][0]
    assert speaker.options is None and len(ev.read_clip(speaker.audio)) == 8000  # file relative to the root
    assert len(ev.load_dynamic_superb(str(tmp_path), limit=1)[0]) == 2  # one per task


def test_dynamic_superb_bad_rows_are_skipped_and_reported(tmp_path):
    good = json.dumps({"file": "a.wav", "instruction": "Who speaks?", "label": "Alice"})
    no_label = json.dumps({"file": "a.wav", "instruction": "Who?"})
    lines = [good, "{not json", "", no_label, json.dumps(["a", "list"]), good]
    path = tmp_path / "speaker.jsonl"
    path.write_text("\n".join(lines) + "\n")
    insts, skipped = ev.load_dynamic_superb(str(tmp_path))
    # the rest still load, numbered among the good rows as before
    assert sorted(i.id for i in insts) == ["ds:speaker/speaker.jsonl:0", "ds:speaker/speaker.jsonl:1"]
    assert [x["id"] for x in skipped] == [f"{path}:2", f"{path}:4", f"{path}:5"]  # file and line of each
    assert skipped[0]["reason"].startswith(f"{path}:2: not JSON")
    assert skipped[1]["reason"] == f"{path}:4: no label" and skipped[2]["reason"] == f"{path}:5: not a JSON object"


@pytest.mark.parametrize("audio,reason", [
    ({"bytes": base64.b64encode(b"not audio at all").decode()}, "unreadable"),
    ({"bytes": b"RIFF....WAVE"}, "unreadable"),
    ({"array": [0.1, 0.2]}, "unreadable"),  # no sampling_rate
    ({"array": [], "sampling_rate": 16000}, "empty"),
    ({"array": [0.0, float("nan")], "sampling_rate": 16000}, "non_finite"),
    ({"array": [0.0] * 3100, "sampling_rate": 100}, "too_long"),
    ({"text": "hello"}, "missing"),
    (None, "missing"),
])
def test_unusable_embedded_audio_is_an_audio_error_naming_the_instance(audio, reason):
    with pytest.raises(ev.AudioError) as e:
        ev.read_clip(audio, "ds:Emotion/test.jsonl:3")
    assert e.value.reason == reason and str(e.value).startswith("ds:Emotion/test.jsonl:3: ")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(RuntimeError, match="pyarrow"):
        ev.load_dynamic_superb(str(tmp_path))


@pytest.mark.parametrize("reply,expected", [
    ("8 6\nAssistant 1 is more detailed.", (8, 6)),
    ("Assistant 1: 7/10\nAssistant 2: 9/10", (7, 9)),
    ("**Assistant 1** receives a score of 4, while Assistant 2 gets 10.", (4, 10)),
    ("Scores: 6.5 and 8", (6.5, 8)),
    ("Both answers are fine.", None),
    ("0 12", None),
])
def test_parse_judge_scores(reply, expected):
    assert ev.parse_judge_scores(reply) == expected


def test_judge_averages_both_orders():
    def fake_judge(prompts):  # favours whichever answer comes first, and cannot read one item
        replies = []
        for p in prompts:
            if "UNREADABLE" in p:
                replies.append("no idea")
            else:
                first = p.split("[The Start of Assistant 1's Answer]\n")[1].split("\n")[0]
                replies.append("9 5" if first == "REF" else "6 8")
        return replies
    items = [{"description": "(Gender: Female)", "question": "Who?", "reference": "REF", "answer": "MODEL"},
             {"description": "(Gender: Male)", "question": "Who?", "reference": "REF", "answer": "UNREADABLE"}]
    results = ev.judge_both_orders(fake_judge, items)
    # model: 5 when second, 6 when first -> 5.5; reference: 9 when first, 8 when second -> 8.5
    assert results == [{"model": 5.5, "reference": 8.5}, None]
    summary = ev.summarize_judged(results)
    assert summary["n_scored"] == 1 and summary["unparseable"] == 1 and summary["model_score"] == 5.5


def test_http_judge_speaks_the_openai_chat_api():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "7 3"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ask = ev.http_judge(f"http://127.0.0.1:{server.server_port}/v1", "judge-llm")
        assert ask(["p1", "p2"]) == ["7 3", "7 3"]
    finally:
        server.shutdown()
    assert seen[0][0] == "/v1/chat/completions" and seen[0][1]["model"] == "judge-llm"
    assert seen[1][1]["messages"] == [{"role": "user", "content": "p2"}]


# --- the whole evaluation on tiny random models ---

ATTRS = [dict(gender="Female", accent="Scottish", pitch="High", speed="Fast", volume="Loud", noise="Clean"),
         dict(gender="Male", accent="American", pitch="Low", speed="Slow", volume="Quiet", noise="Noisy"),
         dict(gender="Female", accent="English", pitch="Normal", speed="Normal", volume="Normal", noise="Moderate"),
         dict(gender="Male", accent="Caribbean", pitch="Low", speed="Fast", volume="Normal", noise="Clean")]
SENTENCES = ["the weather is cold today", "the quick brown fox jumps", "hello world", "the lazy dog sleeps"]


@pytest.fixture
def eval_setup(tmp_path, tiny_paths, tiny_model):
    data = tmp_path / "data"
    (data / "wavs").mkdir(parents=True)
    with open(data / "test.jsonl", "w") as f:
        for k, (attrs, text) in enumerate(zip(ATTRS, SENTENCES)):
            sf.write(data / "wavs" / f"c{k}.wav", chirp(0.6 + 0.2 * k, f0=120 + 40 * k, seed=k), 16000)
            details = ", ".join(f"{a.capitalize()}: {v}" for a, v in attrs.items())
            f.write(json.dumps({"audio_id": f"c{k}", "audio_filepath": f"wavs/c{k}.wav", "transcription": text, "duration": 1.0,
                                "dataset": "tiny", **attrs,
                                "seed_transcript": f'[00:00:00 - 00:00:01]: "{text}" ({details})'}) + "\n")
        # a clip that is missing: skipped and reported, not fatal
        f.write(json.dumps({"audio_id": "gone", "audio_filepath": "wavs/gone.wav", "transcription": "lost", **ATTRS[0],
                            "seed_transcript": "lost"}) + "\n")
    ds = tmp_path / "ds" / "EmotionRecognition"
    ds.mkdir(parents=True)
    ds_row = {"file": "e.wav", "audio": {"array": chirp(0.5).tolist(), "sampling_rate": 16000},
              "instruction": "Which emotion? The answer could be happy, sad, or angry.", "label": "sad"}
    # then a line that is not JSON, a row with no label and a clip that does not decode: each skipped and reported
    ds_bad = ["{not json", json.dumps({k: v for k, v in ds_row.items() if k != "label"}),
              json.dumps({**ds_row, "audio": {"bytes": base64.b64encode(b"not audio").decode()}})]
    (ds / "test.jsonl").write_text("".join(line + "\n" for line in [json.dumps(ds_row)] + ds_bad))
    adapter = tmp_path / "adapter.safetensors"
    tiny_model.save_adapter(str(adapter))
    out = tmp_path / "eval_results"
    args = [f"--data_dir={data}", f"--adapter={adapter}", f"--whisper={tiny_paths[0]}", f"--llm={tiny_paths[1]}",
            f"--out_dir={out}", f"--dynamic_superb_dir={tmp_path / 'ds'}", "--max_new_tokens=5", "--long_new_tokens=6",
            "--if_limit=4", "--judge=local", "--judge_limit=2", "--batch_size=8"]
    return args, out


def count_generation(monkeypatch):
    """Counts the prompts answered and the clips transcribed, and records the adapter each speech batch ran with."""
    import model
    counts = {"prompts": 0, "transcribed": 0, "adapters": set()}
    chat, transcribe = model.DeSTA2.chat, model.DeSTA2.transcribe

    def counted_chat(self, conversations, *a, **k):  # generate, and the text-only systems, answer through chat
        counts["prompts"] += len(conversations)
        args = inspect.signature(chat).bind(self, conversations, *a, **k).arguments
        if args.get("use_adapter", True) and any("audios" in t for c in conversations for t in c):
            counts["adapters"].add(self.adapter.queries.sum().item())
        return chat(self, conversations, *a, **k)

    def counted_transcribe(self, audios):
        counts["transcribed"] += len(audios)
        return transcribe(self, audios)
    monkeypatch.setattr(model.DeSTA2, "chat", counted_chat)
    monkeypatch.setattr(model.DeSTA2, "transcribe", counted_transcribe)
    return counts


def test_report_end_to_end_and_the_cache(eval_setup, tiny_model, monkeypatch, capsys):
    args, out = eval_setup
    counts = count_generation(monkeypatch)
    report = ev.main(args)
    assert counts["prompts"] > 0 and counts["transcribed"] == 5  # each clip transcribed once, for all systems
    # trained answers with the saved adapter, untrained with a fresh one
    assert len(counts["adapters"]) == 2 and tiny_model.adapter.queries.sum().item() in counts["adapters"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["systems"] == ["trained", "untrained", "cascade", "text_seed", "chance"]
    tasks = ["gender", "pitch", "speed", "volume", "accent", "noise", "transcription", "matching", "ds:EmotionRecognition"]
    assert saved["tasks"] == tasks and saved["dropped_tasks"] == ["emotion"]
    for s in saved["systems"]:
        for t in tasks:
            r = saved["results"][s][t]
            expected_n = 0 if (s == "text_seed" and t.startswith("ds:")) else 1 if t.startswith("ds:") else 4
            assert r["n"] == expected_n, (s, t)
            if t == "transcription":
                assert (r["wer"] is None) == (s == "chance")
            elif r["n"]:
                assert 0 <= r["accuracy"] <= 1 and 0 <= r["invalid_rate"] <= 1 and 0 <= r["no_answer_rate"] <= 1
    assert saved["results"]["chance"]["gender"]["accuracy"] == 0.5
    assert abs(saved["results"]["chance"]["pitch"]["accuracy"] - 1 / 3) < 1e-9
    assert saved["results"]["chance"]["accent"]["accuracy"] == 0.25  # the four accents the split holds
    ds_file, gone = out.parent / "ds" / "EmotionRecognition" / "test.jsonl", out.parent / "data" / "wavs" / "gone.wav"
    assert [x["id"] for x in saved["skipped"]] == [f"{ds_file}:2", f"{ds_file}:3", str(gone),
                                                   "ds:EmotionRecognition/EmotionRecognition/test.jsonl:1"]
    ife = saved["instruction_following"]
    assert set(ife["systems"]) == {"trained", "untrained", "cascade", "text_seed"}
    assert all(r["n"] == 4 for r in ife["systems"].values())
    assert ife["forgetting"] == pytest.approx(ife["systems"]["text_seed"]["if_rate"] - ife["systems"]["trained"]["if_rate"])
    assert set(saved["judge"]) == {"trained", "untrained", "cascade"}
    assert all(r["n"] == 2 and r["n_scored"] + r["unparseable"] == 2 for r in saved["judge"].values())
    md = (out / "report.md").read_text()
    captured = capsys.readouterr()
    assert "| gender | 4 |" in md and "forgetting" in md and md in captured.out
    assert f"skipped {ds_file}:3: no label" in captured.err
    assert report == saved

    # a rerun generates nothing and leaves the caches as they were
    caches = {p: p.read_bytes() for p in out.glob("cache_*.jsonl")}
    assert {p.name for p in caches} >= {f"cache_{s}.jsonl" for s in ["trained", "untrained", "cascade", "text_seed"]}
    counts.update(prompts=0, transcribed=0)
    assert ev.main(args)["results"] == saved["results"]
    assert counts["prompts"] == 0 and counts["transcribed"] == 0
    assert {p: p.read_bytes() for p in out.glob("cache_*.jsonl")} == caches

    # an interrupted run (the cascade's last two answers lost, one line cut short) resumes with just those
    cascade = out / "cache_cascade.jsonl"
    lines = cascade.read_text().splitlines(keepends=True)
    cascade.write_text("".join(lines[:-2]) + lines[-2][:15])
    ev.main(args)
    assert counts["prompts"] == 2 and counts["transcribed"] == 0


def test_cached_answers_follow_what_they_depend_on(eval_setup, monkeypatch):
    """A clip rebuilt under the same name, a changed seed transcript and an untrained adapter of another shape each get
    new answers, and only those. The reports are replaced whole (os.replace), never rewritten in place."""
    import torch
    from safetensors.torch import save_file
    from model import read_adapter_config
    args, out = eval_setup
    args = args + ["--systems=untrained,cascade,text_seed", "--tasks=gender", "--if_limit=0", "--judge=",
                   "--dynamic_superb_dir="]
    counts = count_generation(monkeypatch)
    replaced, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(os.path.basename(b)), real_replace(a, b)))
    ev.main(args)
    assert counts["prompts"] == 12 and counts["transcribed"] == 4  # 4 gender instances, 3 systems
    assert {"report.json", "report.md"} <= set(replaced) and not list(out.glob("*.tmp*"))

    data = out.parent / "data"
    sf.write(data / "wavs" / "c0.wav", chirp(0.7, f0=300, seed=9), 16000)
    counts.update(prompts=0, transcribed=0)
    ev.main(args)
    assert counts["prompts"] == 2 and counts["transcribed"] == 1  # c0's untrained and cascade answers, its transcript

    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    rows[1]["seed_transcript"] += " (Emotion: Happy)"
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts.update(prompts=0, transcribed=0)
    ev.main(args)
    assert counts["prompts"] == 1 and counts["transcribed"] == 0  # text_seed's answer about c1

    reshaped = out.parent / "reshaped.safetensors"  # only its header matters: the untrained adapter is built from it
    config = {**read_adapter_config(str(out.parent / "adapter.safetensors")), "n_queries": 4}
    save_file({"unused": torch.zeros(1)}, str(reshaped), metadata={"config": json.dumps(config)})
    counts.update(prompts=0, transcribed=0)
    ev.main(args + [f"--adapter={reshaped}"])
    assert counts["prompts"] == 4 and counts["transcribed"] == 0  # untrained's four; the others' are cached


def test_an_adapter_that_is_not_one_or_does_not_fit_is_a_one_line_error(eval_setup, tmp_path, capsys):
    args, out = eval_setup
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not an adapter")
    with pytest.raises(SystemExit) as e:
        ev.main(args + [f"--adapter={junk}"])
    assert e.value.code == 2 and f"error: {junk}: cannot read it as an adapter" in capsys.readouterr().err
    # the adapter taps blocks 0-3 of a 4-block Whisper: a 2-block one cannot feed it
    shallow = make_tiny_whisper(tmp_path / "shallow-whisper.pt", n_audio_layer=2)
    with pytest.raises(SystemExit) as e:
        ev.main(args + [f"--whisper={shallow}", "--systems=trained", "--tasks=gender", "--if_limit=0", "--judge=",
                        "--dynamic_superb_dir="])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"error: {tmp_path / 'adapter.safetensors'} does not fit the base models" in err
    assert "has 2 encoder blocks" in err


def test_score_system_counts_hits_several_and_none():
    insts = [ev.Instance(id=f"gender/{k}", task="gender", instruction="Male or female?", label=label,
                         options=["male", "female"]) for k, label in enumerate(["male", "female", "male", "female"])]
    insts.append(ev.Instance(id="transcription/0", task="transcription", instruction="", label="the cat sat"))
    answers = {"gender/0": "Male.", "gender/1": "A female voice.", "gender/2": "male or female",
               "gender/3": "I cannot tell", "transcription/0": "the cat"}
    r = ev.score_system("trained", insts, answers)
    assert r["gender"] == {"n": 4, "accuracy": 0.5, "invalid_rate": 0.25, "no_answer_rate": 0.25}
    assert r["transcription"] == {"n": 1, "wer": pytest.approx(1 / 3)}
    del answers["gender/3"]  # an instance a system has no answer for is not counted
    assert ev.score_system("trained", insts, answers)["gender"]["n"] == 3
    assert ev.score_system("chance", insts, {})["gender"]["accuracy"] == 0.5


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ev.main(["--systems=trained,casacde"])
    assert e.value.code == 2 and "unknown system(s) ['casacde']: choose from trained," in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        ev.main([f"--data_dir={tmp_path / 'nowhere'}"])
    assert e.value.code == 2 and "prepare.py" in capsys.readouterr().err
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(SystemExit) as e:
        ev.main([f"--data_dir={tmp_path}", f"--adapter={tmp_path / 'none.safetensors'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "train.py" in err and "none.safetensors" in err and len(err.strip().splitlines()) == 1


def test_script_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "eval.py", f"--data_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "prepare.py" in r.stderr


def test_tables_by_engine():
    # two engines' held-out clips: the limit counts per engine, and each engine gets its own tables, titled by whether
    # the adapter was trained on that engine's other voices or never heard the engine at all
    rows = [dict(audio_id=f"{e}{k}", audio=f"{e}{k}.wav", engine=e, gender=("Male", "Female")[k % 2],
                 transcription="hi there", seed_transcript="s") for e in ("kokoro", "rhvoice") for k in range(6)]
    insts, _ = ev.build_instances(rows, ["gender"], limit=4, if_limit=4, seed=1)
    gender = [i for i in insts if i.task == "gender"]
    assert sorted(i.engine for i in gender) == ["kokoro"] * 4 + ["rhvoice"] * 4
    answers = {"trained": {i.id: i.label if i.engine == "kokoro" else "none of them" for i in insts}}
    parts = ev.by_engine(["trained", "chance"], ["gender"], insts, answers, trained_engines={"kokoro", "espeak"})
    assert parts["kokoro"]["title"] == "kokoro: held-out voices of an engine in training"
    assert parts["rhvoice"]["title"] == "rhvoice: an engine never in training"
    assert parts["kokoro"]["results"]["trained"]["gender"] == {"n": 4, "accuracy": 1.0, "invalid_rate": 0.0, "no_answer_rate": 0.0}
    assert parts["rhvoice"]["results"]["trained"]["gender"]["no_answer_rate"] == 1.0
    n_if = sum(i.task == "ifeval" for i in insts if i.engine == "kokoro")
    assert parts["kokoro"]["instruction_following"]["systems"]["trained"]["n"] == n_if
    report = {"config": {"data_dir": "d", "split": "test", "dynamic_superb_dir": ""}, "tasks": ["gender"], "skipped": [],
              **ev.score_report(["trained", "chance"], insts, answers), "by_engine": parts}
    md = ev.markdown_report(report)
    assert "# kokoro: held-out voices of an engine in training (" in md and "# rhvoice: an engine never in training (" in md
    assert md.count("| gender | 4 | 100.0 | 50.0 |") == 1 and md.count("| gender | 8 | 50.0 | 50.0 |") == 1  # all clips
