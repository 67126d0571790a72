"""train.py end to end on tiny random models (conftest.py): run as a script, as the README runs it."""
import json
import os
import runpy
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import torch
from conftest import ROOT, chirp

from common import generation_dtype
from model import AdapterConfig, DeSTA2, load_model, read_adapter_config

INSTRUCTION = "What can you hear from the audio?"
TARGETS = ["a female speaker with a Scottish accent", "a male voice with a low pitch", "the quick brown fox",
           "hello world the weather is cold"]


def write_pairs(data_dir, n_clips=4, extra_rows=True):
    """A pairs directory like generate_pairs.py writes: clips under audio/, paths relative to the jsonl files.
    With extra_rows, train also has two more questions about clips 0 and 1, a row whose audio is missing and a broken line."""
    (data_dir / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_clips):
        sf.write(data_dir / "audio" / f"c{i}.wav", chirp(1.0 + 0.4 * i, 120 + 40 * i, seed=i), 16000)
        rows.append(dict(audio_id=f"c{i}", audio_filepath=f"audio/c{i}.wav", transcription=["hello", "the lazy dog",
                    "what can you hear", "quick brown"][i % 4], duration=1.0 + 0.4 * i, dataset="test", attributes={},
                         seed_transcript="(Gender: Female)", instruction=INSTRUCTION, input="", target=TARGETS[i % 4]))
    train = list(rows)
    lines = []
    if extra_rows:
        train += [{**rows[0], "instruction": "Describe the speaker.", "target": "a female voice"},
                  {**rows[1], "instruction": "Describe the speaker.", "target": "a male voice"},
                  {**rows[2], "audio_id": "gone", "audio_filepath": "audio/missing.wav"}]
        lines = ["{not json"]
    (data_dir / "train_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train) + "".join(l + "\n" for l in lines))
    (data_dir / "val_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    return data_dir


@pytest.fixture(scope="module")
def steerable_llm(tiny_paths, tmp_path_factory):
    """conftest's tiny LLM, rebuilt wider (96) and with a larger init (std 0.2 instead of 0.02). At the default init its
    tied embeddings are so small that its logits stay within ~1 of each other whatever comes in, so no adapter could move
    its loss far; this one can be steered, so the overfitting test measures the adapter and the training loop."""
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("steerable") / "llm"
    config = AutoConfig.from_pretrained(tiny_paths[1])
    config.hidden_size, config.intermediate_size, config.initializer_range = 96, 192, 0.2
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_paths[1]).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"))


def run_train(out_dir, *args, whisper, llm, data_dir, nproc=0, expect_rc=0):
    """train.py in a subprocess, as python (nproc=0) or under torchrun with nproc processes."""
    base = [f"--whisper={whisper}", f"--llm={llm}", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--device=cpu",
            "--dtype=float32", "--num_threads=1", "--eval_iters=1", "--log_interval=1", "--warmup_iters=2", *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(launcher + [str(ROOT / "train.py"), *base], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def train_losses(out_dir):
    """iter -> training loss, from log.jsonl (which must hold each iteration once)."""
    records = [json.loads(line) for line in open(out_dir / "log.jsonl")]
    iters = [r["iter"] for r in records if not r.get("eval")]
    assert len(iters) == len(set(iters)), f"an iteration was logged twice: {iters}"
    return {r["iter"]: r["loss"] for r in records if not r.get("eval")}


# the run the resume and DDP tests compare against: 2 rows per micro-batch, 4 micro-batches per step, 3 batches per
# epoch, so steps straddle epochs and the resume point (iter 4 = micro-batch 16) falls in the middle of an epoch
SHARED = ["--batch_size=2", "--gradient_accumulation_steps=4", "--lr=3e-3", "--lr_decay_iters=8", "--min_lr=3e-4",
          "--eval_interval=4"]


@pytest.fixture(scope="module")
def reference_run(tiny_paths, steerable_llm, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    run_train(out, *SHARED, "--max_iters=8", whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    return out


# 30 steps over all 6 training rows at once: enough for the adapter alone to steer the steerable LLM to the targets
OVERFIT = ["--batch_size=6", "--max_iters=30", "--lr=3e-3", "--lr_decay_iters=30", "--min_lr=3e-4", "--eval_interval=10"]


def test_overfits_a_handful_of_clips_and_skips_bad_rows(tiny_paths, steerable_llm, data_dir, tmp_path):
    proc = run_train(tmp_path, *OVERFIT, whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(30))
    assert losses[29] < 0.5 * losses[0], losses  # the adapter alone steers the frozen LLM to the fixed targets
    # the schedule: warm-up over 2 steps to lr 3e-3, then a cosine (not a straight line) down to 3e-4 at step 30
    lrs = [r["lr"] for r in map(json.loads, open(tmp_path / "log.jsonl")) if not r.get("eval")]
    assert lrs[:3] == pytest.approx([1e-3, 2e-3, 3e-3]) and lrs[9] == pytest.approx(2.605e-3, rel=1e-3), lrs
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and 3e-4 < lrs[29] < 3.1e-4, lrs
    # the missing clip and the broken line are reported once each, then summarised; their rows are skipped
    assert proc.stderr.count("missing.wav") == 1 and proc.stderr.count("not a pairs row") == 1
    assert "skipped 2 of 8 rows (1 malformed, 1 with unusable audio)" in proc.stderr
    assert "6 train rows, 2 val rows, 4 clips" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "ckpt.pt", "log.jsonl"]  # no temporary files left
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == 30 and ckpt["config"]["llm"] == steerable_llm and ckpt["config"]["batch_size"] == 6
    assert {"torch", "numpy", "python", "cuda"} <= set(ckpt["rng"]) and ckpt["data"]["epoch"] == 29
    evals = [json.loads(line) for line in open(tmp_path / "log.jsonl") if '"eval"' in line]
    assert [e["iter"] for e in evals] == [0, 10, 20, 30] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    # each clip has its own target, so once the adapter has learned them, another clip's audio must cost the LLM
    # (measured: from -0.42 at iter 0, where the random adapter's vectors steer at random, to +0.71 at iter 30)
    gaps = [e["other_audio_loss"] - e["val_loss"] for e in evals]
    assert gaps[-1] > 0.5 and gaps[-1] - gaps[0] > 0.8, gaps
    assert "val loss with other clips' audio" in proc.stdout


def test_other_audio_loss_never_gives_a_row_its_own_clip(tiny_paths, data_dir, tmp_path):
    """Two questions about one clip share a batch when their rows are about as long: the loss 'with other clips' audio'
    must not hand them each other's audio, which is their own (a roll by one did, and logged the plain loss again)."""
    one_clip = tmp_path / "data"
    shutil.copytree(data_dir, one_clip)
    rows = [json.loads(line) for line in open(one_clip / "val_pairs.jsonl")]
    (one_clip / "val_pairs.jsonl").write_text("".join(json.dumps({**rows[0], "instruction": q}) + "\n"
                                                      for q in (INSTRUCTION, "Describe the speaker.")))
    proc = run_train(tmp_path / "out", "--batch_size=2", "--max_iters=1", "--eval_interval=1", whisper=tiny_paths[0],
                     llm=tiny_paths[1], data_dir=one_clip)
    evals = [json.loads(line) for line in open(tmp_path / "out" / "log.jsonl") if '"eval"' in line]
    assert evals and all("other_audio_loss" not in e for e in evals), evals
    assert "other clips' audio" not in proc.stdout
    # with two clips in the batch the loss with swapped audio is measured (and differs from the plain one)
    run_train(tmp_path / "out2", "--batch_size=2", "--max_iters=1", "--eval_interval=1", whisper=tiny_paths[0],
              llm=tiny_paths[1], data_dir=data_dir)
    evals = [json.loads(line) for line in open(tmp_path / "out2" / "log.jsonl") if '"eval"' in line]
    assert evals and all(e["other_audio_loss"] != e["val_loss"] for e in evals), evals


def test_adapter_shape_is_configurable_and_travels_with_the_adapter(tiny_paths, data_dir, tmp_path):
    """--n_queries and --n_qformer_layer reach the adapter, its file records them, and the model sample.py and eval.py
    build from that file takes them back: the trained weights load into it and give that many speech vectors."""
    run_train(tmp_path, "--batch_size=6", "--max_iters=1", "--eval_interval=1", "--n_queries=5", "--n_qformer_layer=1",
              whisper=tiny_paths[0], llm=tiny_paths[1], data_dir=data_dir)
    path = str(tmp_path / "adapter.safetensors")
    config = read_adapter_config(path)
    assert config["n_queries"] == 5 and config["n_qformer_layer"] == 1
    model = load_model(AdapterConfig(**config), adapter_path=path, llm_dtype=torch.float32)
    assert len(model.adapter.layers) == 1
    tapped, frame_mask = model.speech_features([chirp(1.0)])
    assert model.adapter(tapped, frame_mask).shape[1] == 5


def test_adapter_standardizes_with_the_training_clips_statistics(tiny_paths, data_dir, tmp_path):
    """The adapter file carries the per-channel mean and std of the training clips' Whisper frames (over the 4 clips
    of the train rows; the missing one is skipped), the same whether they come from the feature cache or a pass."""
    model = load_model(AdapterConfig(whisper=tiny_paths[0], llm=tiny_paths[1]), llm_dtype=torch.float32)
    frames = []
    for i in range(4):
        tapped, mask = model.speech_features([chirp(1.0 + 0.4 * i, 120 + 40 * i, seed=i)])
        frames.append(tapped[0, :, mask[0]].double())
    frames = torch.cat(frames, dim=1)  # (L, all frames, D)
    for cached in (True, False):
        out = tmp_path / f"cache_{cached}"
        proc = run_train(out, "--batch_size=6", "--max_iters=1", "--eval_interval=1", f"--cache_features={cached}",
                         whisper=tiny_paths[0], llm=tiny_paths[1], data_dir=data_dir)  # on by default
        assert f"features standardized per channel over 4 training clips ({frames.shape[1]} frames" in proc.stdout
        trained = load_model(adapter_path=str(out / "adapter.safetensors"), llm_dtype=torch.float32).adapter
        torch.testing.assert_close(trained.feature_mean.double(), frames.mean(1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(trained.feature_std.double(), frames.std(1, correction=0), rtol=1e-4, atol=1e-4)
    run_train(tmp_path / "off", "--batch_size=6", "--max_iters=1", "--eval_interval=1", "--standardize_features=False",
              whisper=tiny_paths[0], llm=tiny_paths[1], data_dir=data_dir)
    off = load_model(adapter_path=str(tmp_path / "off" / "adapter.safetensors"), llm_dtype=torch.float32).adapter
    assert (off.feature_mean == 0).all() and (off.feature_std == 1).all()


def test_resume_continues_exactly(tiny_paths, steerable_llm, data_dir, reference_run, tmp_path):
    """Stopped at 4 and resumed to 8, the run is the uninterrupted one: the same losses and weights, bit for bit
    (tolerance 0 on CPU fp32: same ops, same data order, the optimizer and RNG states restored). An adapter shape
    given on the resume's command line gives way to the checkpoint's, with a warning."""
    kw = dict(whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    run_train(tmp_path, *SHARED, "--max_iters=4", **kw)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)["data"]
    assert len(saved.pop("train_rows_sha256")) == 64
    assert saved == {"epoch": 5, "batch_in_epoch": 1, "seed": 1337, "batch_size": 2, "n_train_rows": 6}
    proc = run_train(tmp_path, *SHARED, "--max_iters=8", "--init_from=resume", "--n_queries=3", **kw)
    assert "resuming from" in proc.stdout
    assert "resuming with the checkpoint's n_queries=" in proc.stderr
    assert train_losses(tmp_path) == train_losses(reference_run)
    resumed = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    reference = torch.load(reference_run / "ckpt.pt", weights_only=False)
    assert resumed["iter_num"] == reference["iter_num"] == 8
    for name, tensor in reference["adapter"].items():
        assert torch.equal(resumed["adapter"][name], tensor), name


def test_time_limit_stops_cleanly_with_a_checkpoint(tiny_paths, data_dir, tmp_path):
    """Out of time, the run finishes its step, evaluates, saves and exits 0 (resuming: the resume tests). dtype=auto
    trains in bf16 only on CPUs with bf16 instructions (others emulate it, many times slower than fp32)."""
    kw = dict(whisper=tiny_paths[0], llm=tiny_paths[1], data_dir=data_dir)
    proc = run_train(tmp_path, "--batch_size=6", "--max_iters=1000", "--eval_interval=1000", "--max_seconds_total=0.001",
                     "--dtype=auto", **kw)
    assert "done: max_seconds_total=0.001 reached at iter 1" in proc.stdout and "eval at iter 1:" in proc.stdout
    assert f"device cpu, {generation_dtype('cpu')}, 1 process(es)" in proc.stdout
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["iter_num"] == 1
    assert (tmp_path / "adapter.safetensors").exists()


def test_resume_refuses_other_training_rows(tiny_paths, steerable_llm, data_dir, reference_run, tmp_path):
    """The same rows in a moved directory resume; a changed row stops the resume with an error naming the checkpoint
    and the pairs file, and the checkpoint stays as it was (continuing on other data is neither run)."""
    kw = dict(whisper=tiny_paths[0], llm=steerable_llm)
    moved, out = tmp_path / "moved", tmp_path / "out"
    shutil.copytree(data_dir, moved)
    shutil.copytree(reference_run, out)
    assert "resuming from" in run_train(out, *SHARED, "--max_iters=9", "--init_from=resume", data_dir=moved, **kw).stdout
    before = (out / "ckpt.pt").read_bytes()
    pairs = moved / "train_pairs.jsonl"
    pairs.write_text(pairs.read_text().replace(TARGETS[1], "a male voice, low and slow"))
    proc = run_train(out, *SHARED, "--max_iters=10", "--init_from=resume", data_dir=moved, expect_rc=2, **kw)
    assert f"{out / 'ckpt.pt'} was trained on other rows than {pairs} holds now (6 then, 6 now)" in proc.stderr
    assert (out / "ckpt.pt").read_bytes() == before


def test_resume_takes_a_new_batch_size_and_optimizer_settings(tiny_paths, steerable_llm, data_dir, reference_run,
                                                             tmp_path):
    """The reference run stops at micro-batch 2 of a 3-batch epoch; at batch 6 an epoch is 1 batch, so the resume starts
    a new epoch (with a warning) instead of reading past the end. Weight decay and betas are this run's, not the
    checkpoint's (the optimizer's saved state would bring those back)."""
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    proc = run_train(out, *SHARED, "--max_iters=9", "--init_from=resume", "--batch_size=6",
                     "--gradient_accumulation_steps=1", "--weight_decay=0.5", "--beta2=0.9",
                     whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    assert "batch_size was 2 in the checkpoint" in proc.stderr
    checkpoint = torch.load(out / "ckpt.pt", weights_only=False)
    assert checkpoint["iter_num"] == 9 and checkpoint["data"]["batch_in_epoch"] == 1
    groups = checkpoint["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0] and all(g["betas"] == (0.9, 0.9) for g in groups)


def test_two_processes_match_one(tiny_paths, steerable_llm, data_dir, reference_run, tmp_path):
    """torchrun with 2 CPU processes (gloo), each running 2 of the step's 4 micro-batches, follows the 1-process run, and
    only rank 0 writes. Not bit for bit: the gradient all-reduce adds in another order, and Adam grows the difference
    step by step (measured: losses within 6e-6 on one machine, 5.8e-5 at step 8 on another), so the tolerance is 2e-4
    on both. A real fault moves them far more: with every rank running rank 0's micro-batches, the first loss is off by
    0.2. The attention key biases are left out of the weight check: softmax ignores them, so their true gradient is 0
    and Adam turns the rounding noise they get into steps of +-lr."""
    proc = run_train(tmp_path, *SHARED, "--max_iters=8", nproc=2, whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    one, two = train_losses(reference_run), train_losses(tmp_path)
    assert sorted(two) == sorted(one) == list(range(8))
    for it in one:
        assert abs(one[it] - two[it]) < 2e-4, (it, one[it], two[it])
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("iter 7: loss") == 1 and proc.stdout.count("overriding: max_iters") == 1
    assert proc.stderr.count("missing.wav") == 1
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "ckpt.pt", "log.jsonl"]
    reference = torch.load(reference_run / "ckpt.pt", weights_only=False)["adapter"]
    for name, tensor in torch.load(tmp_path / "ckpt.pt", weights_only=False)["adapter"].items():
        if not name.endswith("key.bias"):
            torch.testing.assert_close(tensor, reference[name], atol=2e-4, rtol=0, msg=name)


def run_train_in_process(monkeypatch, tiny_paths, data_dir, out_dir, *args):
    """train.py run in this process (so a test can patch the model), on the tiny base models, one thread."""
    monkeypatch.setattr(sys, "argv", ["train.py", f"--whisper={tiny_paths[0]}", f"--llm={tiny_paths[1]}", f"--data_dir={data_dir}",
                                      f"--out_dir={out_dir}", "--device=cpu", "--dtype=float32", "--eval_interval=100",
                                      "--eval_iters=1", "--num_threads=1", *args])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)


def test_non_finite_losses_are_skipped_then_stop_the_run(tiny_paths, data_dir, tmp_path, monkeypatch, capsys):
    """In-process, with the model's loss forced to NaN on chosen training steps: a NaN step changes nothing, a good step
    resets the count, and max_bad_steps NaNs in a row stop the run with exit code 3 and a checkpoint."""
    real_forward, calls = DeSTA2.forward, []

    def forward(self, *args, **kwargs):
        loss = real_forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) != 2:  # the first step fails, the second is fine, the rest fail
                return loss * float("nan")
        return loss

    monkeypatch.setattr(DeSTA2, "forward", forward)
    with pytest.raises(SystemExit) as exit_info:
        run_train_in_process(monkeypatch, tiny_paths, data_dir, tmp_path, "--max_iters=20", "--max_bad_steps=2",
                             "--batch_size=6")
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert err.count("step skipped") == 3 and "2 non-finite losses in a row at iter 4" in err
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == 4
    assert [s["step"].item() for s in ckpt["optimizer"]["state"].values()] == [1] * len(ckpt["optimizer"]["state"])


def test_a_clips_rows_share_a_batch_and_run_as_one_sequence(tiny_paths, tmp_path, monkeypatch):
    """Six clips asked two questions each, batches of 4 rows bucketed in chunks of one batch: every training batch holds
    two whole clips, and the model is told which rows are one clip (it runs them as one sequence, model.tree_rows)."""
    data = write_pairs(tmp_path / "data", n_clips=6, extra_rows=False)
    rows = [json.loads(line) for line in open(data / "train_pairs.jsonl")]
    (data / "train_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(
        json.dumps({**r, "instruction": "Describe the speaker.", "target": "a voice"}) + "\n" for r in rows))
    real_forward, batches = DeSTA2.forward, []

    def forward(self, *args, **kwargs):
        if self.training:
            batches.append(kwargs["clips"])
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(DeSTA2, "forward", forward)
    run_train_in_process(monkeypatch, tiny_paths, data, tmp_path / "out", "--max_iters=9", "--batch_size=4",
                         "--bucket_batches=1")
    assert len(batches) == 9  # three epochs of three batches
    for clips in batches:
        assert sorted(clips.count(c) for c in set(clips)) == [2, 2], batches


def test_clear_errors_for_missing_pairs_and_weights(tiny_paths, data_dir, tmp_path):
    kw = dict(whisper=tiny_paths[0], llm=tiny_paths[1], expect_rc=2)
    proc = run_train(tmp_path, data_dir=tmp_path / "nowhere", **kw)
    assert "generate_pairs.py" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(tmp_path, data_dir=data_dir, **{**kw, "llm": "weights/no-such-llm"})
    assert "get_weights.py" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(tmp_path, "--gradient_accumulation_steps=three", data_dir=data_dir, **kw)
    assert "expects a int" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,compile,nproc", [("bfloat16", False, 0), ("float16", False, 0), ("bfloat16", True, 0),
                                                 ("bfloat16", False, 1)])
def test_cuda_mixed_precision_compile_and_nccl(dtype, compile, nproc, tiny_paths, steerable_llm, data_dir, tmp_path):
    """The paths a CPU run never takes: autocast in bf16 or fp16 on CUDA, the GradScaler (fp16 only), the fused AdamW,
    torch.compile of the adapter and the LLM's layers, DDP over NCCL (torchrun with one process: NCCL allows one rank
    per GPU). The adapter must overfit as it does on the CPU in fp32, and an fp16 checkpoint must carry the scaler's
    state for the resume."""
    proc = run_train(tmp_path, *OVERFIT, "--device=cuda", f"--dtype={dtype}", f"--compile={compile}", nproc=nproc,
                     whisper=tiny_paths[0], llm=steerable_llm, data_dir=data_dir)
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(30)) and losses[29] < 0.5 * losses[0], losses
    assert "device cuda" in proc.stdout and f"{dtype}, 1 process(es)" in proc.stdout and "non-finite" not in proc.stderr
    assert ("compiling the adapter and the LLM's layers" in proc.stdout) == compile
    scaler = torch.load(tmp_path / "ckpt.pt", weights_only=False)["scaler"]
    assert ("scale" in scaler) == (dtype == "float16"), scaler
