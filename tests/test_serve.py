"""serve.py as a server, talked to with the official openai client (tiny random models from conftest.py)."""
import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT
from conftest import speech_like as speech

from model import AdapterConfig, load_model
from test_train import steerable_llm  # noqa: F401 (a fixture: a tiny LLM whose answers vary with the prompt)

openai = pytest.importorskip("openai")  # requirements.txt installs it; the server itself does not need it


def wav_base64(x, fmt="WAV", sample_rate=16000):
    buffer = io.BytesIO()
    sf.write(buffer, x, sample_rate, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def ask(clip_base64, question, fmt="wav"):
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": clip_base64, "format": fmt}},
                                         {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def adapter_and_model(tiny_paths, steerable_llm, tmp_path_factory):
    """A random adapter on disk, and the same model in this process to compare the server's answers with (on an LLM
    whose answers vary with the prompt: conftest's says the same, mostly nothing visible, whatever it is asked)."""
    torch.manual_seed(0)
    model = load_model(AdapterConfig(whisper=tiny_paths[0], llm=steerable_llm), llm_dtype=torch.float32)
    path = tmp_path_factory.mktemp("serve") / "adapter.safetensors"
    model.save_adapter(str(path))
    model.eval()
    return str(path), model


@pytest.fixture(scope="module")
def server(adapter_and_model):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # batch_wait of a second: requests sent together in the test land in one batch
    proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), f"--adapter={adapter_and_model[0]}", "--port=0",
                             "--device=cpu", "--dtype=float32", "--max_new_tokens=12", "--batch_wait=1.0",
                             "--max_body_mb=1.0", "--max_seconds=40"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("serving on "):
            break
    else:
        pytest.fail(f"serve.py did not start: {proc.stderr.read()[-3000:]}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain the request log
    url = line.split()[2]
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def post(url, data, content_type="application/json"):
    request = urllib.request.Request(url + "/v1/chat/completions", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_answers_as_the_model_does_streaming_or_not(client, adapter_and_model):
    x = speech(1.5)
    _, model = adapter_and_model
    torch.manual_seed(0)
    (expected,), (transcript,) = model.generate([x], ["Is the speaker male or female?"], max_new_tokens=12)
    reply = client.chat.completions.create(model="nanodesta", messages=ask(wav_base64(x), "Is the speaker male or female?"))
    assert reply.choices[0].message.content == expected
    assert reply.model_extra["transcripts"] == [transcript]
    chunks = list(client.chat.completions.create(model="nanodesta", stream=True,
                                                 messages=ask(wav_base64(x), "Is the speaker male or female?")))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == expected and len(pieces) >= 3, pieces  # token by token, not the answer in one piece
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["transcripts"] == [transcript]


def test_a_conversation_with_several_clips_and_earlier_answers(client, adapter_and_model):
    x, y = speech(1.0, f0=220), speech(1.4, f0=120, seed=3)
    _, model = adapter_and_model
    turns = [{"role": "user", "content": "What is the speaker's gender?", "audios": [x]},
             {"role": "assistant", "content": "The speaker is female."},
             {"role": "user", "content": "And this one? Compare them.", "audios": [y]},
             {"role": "assistant", "content": "The second is lower."},
             {"role": "user", "content": "And the pitch?"}]
    (expected,), transcripts = model.chat([turns], max_new_tokens=12)
    messages = ask(wav_base64(x, "FLAC"), "What is the speaker's gender?", fmt="flac") + [
        {"role": "assistant", "content": "The speaker is female."}] + ask(wav_base64(y), "And this one? Compare them.") + [
        {"role": "assistant", "content": "The second is lower."}, {"role": "user", "content": "And the pitch?"}]
    reply = client.chat.completions.create(model="nanodesta", messages=messages)
    assert reply.choices[0].message.content == expected and reply.model_extra["transcripts"] == transcripts
    # the earlier answers are read: other ones, another reply
    (other,), _ = model.chat([[dict(t, content="No.") if t["role"] == "assistant" else t for t in turns]], max_new_tokens=12)
    assert other != expected


def test_a_long_clip_is_read_in_windows(client, adapter_and_model):
    from audio import decode_audio
    _, model = adapter_and_model
    data = wav_base64(np.concatenate([speech(20.0, f0=150, seed=4), speech(14.0, f0=210, seed=5)])[::2].copy(), sample_rate=8000)
    x = decode_audio(base64.b64decode(data), "long", 60)  # 34 s, sent at 8 kHz to stay under the test's 1 MB
    (expected,), transcripts = model.generate([x], ["Describe the voice."], max_new_tokens=12)
    reply = client.chat.completions.create(model="nanodesta", messages=ask(data, "Describe the voice."))
    assert reply.choices[0].message.content == expected and reply.model_extra["transcripts"] == transcripts


def test_requests_that_arrive_together_share_a_batch_and_keep_their_answers(client, server, adapter_and_model):
    _, model = adapter_and_model
    clips = [speech(1.0 + 0.3 * i, f0=120 + 40 * i, seed=i) for i in range(3)]
    expected = [model.generate([x], ["Describe the voice."], max_new_tokens=12)[0][0] for x in clips]
    with urllib.request.urlopen(server + "/health") as r:
        before = json.load(r)
    answers = [None] * 3

    def one(i):
        reply = client.chat.completions.create(model="nanodesta", messages=ask(wav_base64(clips[i]), "Describe the voice."))
        answers[i] = reply.choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    with urllib.request.urlopen(server + "/health") as r:
        after = json.load(r)
    assert answers == expected  # left-padded in one batch, each answer is the one it gets alone
    assert after["requests"] - before["requests"] == 3 and after["batches"] - before["batches"] < 3


@pytest.mark.parametrize("body, status, message", [
    (b"not json", 400, "not JSON"),
    (json.dumps({"messages": []}).encode(), 400, "non-empty list"),
    (json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode(), 400, "no audio"),
    (json.dumps({"messages": ask("%%%", "hi")}).encode(), 400, "not base64"),
    (json.dumps({"messages": ask(base64.b64encode(b"this is not audio at all").decode(), "hi")}).encode(), 400,
     "cannot read audio"),
    (json.dumps({"messages": ask(wav_base64(np.zeros(8000 * 41, np.float32), sample_rate=8000), "hi")}).encode(), 400,
     "longer than the limit of 40 s"),
    (json.dumps({"messages": ask(wav_base64(speech(0.5)), "hi") + [{"role": "assistant", "content": "Hi."}]}).encode(), 400,
     "the last message must be the user's"),
    (json.dumps({"messages": ask(wav_base64(speech(0.5)), "hi"), "max_tokens": 10**6}).encode(), 400, "max_tokens"),
    (json.dumps({"messages": ask(wav_base64(speech(0.5)), "hi"), "n": 3}).encode(), 400, "n must be 1"),
    (json.dumps({"messages": ask(wav_base64(np.zeros(16000 * 29, np.float32)), "hi")}).encode(), 413, "larger than 1 MB"),
])
def test_bad_requests_get_a_4xx_that_says_why_and_the_server_goes_on(server, client, body, status, message):
    code, reply = post(server, body)
    assert code == status and message in reply["error"]["message"], reply
    ok = client.chat.completions.create(model="nanodesta", messages=ask(wav_base64(speech(0.5)), "hi"), max_tokens=2)
    assert isinstance(ok.choices[0].message.content, str)


def test_holds_speech_tells_syllables_from_silence_hum_and_steady_noise():
    from audio import holds_speech
    rng = np.random.default_rng(0)
    x = speech(2.0)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    noisy = x + noise * np.sqrt((x[x != 0] ** 2).mean() / 10 ** 0.5)  # 5 dB SNR, the demo's noisiest
    hum = 0.1 * np.sin(2 * np.pi * 50 * np.arange(32000) / 16000)
    assert holds_speech(x) and holds_speech(noisy)
    assert not any(holds_speech(y) for y in (np.zeros(32000), 0.05 * noise, hum, 1e-4 * x, x[:100]))


def test_silence_and_steady_noise_are_said_to_hold_no_speech(client):
    rng = np.random.default_rng(0)
    for x in (np.zeros(16000, np.float32), (0.05 * rng.standard_normal(32000)).astype(np.float32)):
        reply = client.chat.completions.create(model="nanodesta", messages=ask(wav_base64(x), "Who is speaking?"))
        assert reply.choices[0].message.content == "The clip holds no speech."
        assert reply.model_extra["transcripts"] == [""]


def test_serves_its_page_and_lists_its_model(server, client):
    with urllib.request.urlopen(server + "/") as r:
        page = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html") and "/v1/chat/completions" in page
    assert [m.id for m in client.models.list()] == ["nanodesta:adapter.safetensors"]


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium through selenium, its microphone a wav file (test.sh installs both)."""
    import shutil
    webdriver = pytest.importorskip("selenium.webdriver")
    if not shutil.which("chromedriver"):
        pytest.skip("no chromedriver (Debian: apt-get install chromium chromium-driver; test.sh does)")
    microphone = tmp_path / "microphone.wav"
    sf.write(microphone, np.tile(speech(1.0, f0=180), 3), 16000)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, shown when a test fails
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    yield driver
    driver.quit()


def page_answer(browser, question):
    """Ask on the page; the assistant's line and the page's notes once the answer is there."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    n_before = len(browser.find_elements(By.CSS_SELECTOR, "#log .assistant"))
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "send").click()
    try:
        WebDriverWait(browser, 240).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log .assistant")) > n_before
                                          or "error" in d.find_element(By.ID, "log").text)
    except TimeoutException:
        pytest.fail(f"no answer on the page after 240 s; it shows: {browser.find_element(By.TAG_NAME, 'body').text!r}, "
                    f"console: {browser.get_log('browser')}")
    notes = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "#log .note")]
    answers = browser.find_elements(By.CSS_SELECTOR, "#log .assistant")
    return (answers[-1].text if answers else None), notes


def test_the_page_answers_about_an_uploaded_and_a_recorded_clip(server, browser, tmp_path):
    import time
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    silent, spoken = tmp_path / "silent.wav", tmp_path / "spoken.flac"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(spoken, speech(1.5, f0=200), 16000)
    browser.find_element(By.ID, "file").send_keys(str(silent))
    answer, notes = page_answer(browser, "Who is speaking?")
    assert answer == "assistant: The clip holds no speech.", notes

    browser.find_element(By.ID, "file").send_keys(str(spoken))  # a new clip goes with the next question
    answer, notes = page_answer(browser, "Who is speaking?")
    assert answer.startswith("assistant:") and "no speech" not in answer, notes
    assert any(n.startswith("transcript: ") for n in notes) and not any("error" in n for n in notes), notes

    browser.find_element(By.ID, "record").click()  # the microphone is microphone.wav
    time.sleep(2.0)
    browser.find_element(By.ID, "record").click()
    for _ in range(300):
        if browser.find_element(By.ID, "clip").text == "recording":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the recording did not become the clip: {browser.find_element(By.TAG_NAME, 'body').text!r}")
    answer, notes = page_answer(browser, "What is the speaker's gender?")
    assert answer.startswith("assistant:") and "no speech" not in answer, notes
    # a follow-up without a new clip: the page sent the whole conversation, each clip with the question it came before
    answer, notes = page_answer(browser, "And the pitch?")
    kept = browser.execute_script("return messages.map(m => [m.role, Array.isArray(m.content) ? m.content.map(p => p.type) : 'text'])")
    assert kept == [["user", ["input_audio", "text"]], ["assistant", "text"]] * 3 + [["user", ["text"]], ["assistant", "text"]], kept
    assert answer.startswith("assistant:") and not any("error" in n for n in notes), notes
