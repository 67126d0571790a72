"""
Shared fixtures: tiny random base models saved to disk and loaded back through the real loaders
(whisper.load_model, transformers' from_pretrained), so the fast tests exercise the same code paths as the
real weights in a fraction of a second.
"""
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub

# a Qwen-style chat template, so the tiny LLM renders prompts the way the real one does
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENIZER_CORPUS = [
    "What can you hear from the audio? The speaker is a female with a Scottish accent, speaking fast and loud.",
    "A male voice with a low pitch says the weather is cold today. Gender: Male, Accent: American, Pitch: Low.",
    "<audio> </audio> user assistant system hello world the quick brown fox jumps over the lazy dog 0123456789",
]


def make_tiny_whisper(path, n_audio_layer=4, seed=0):
    import whisper.model as wm

    torch.manual_seed(seed)
    # the real mel/ctx/vocab sizes so Whisper's own audio front end and tokenizer work unchanged
    dims = wm.ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=n_audio_layer,
                              n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=4, n_text_layer=2)
    model = wm.Whisper(dims)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return str(path)


def make_tiny_llm(path, seed=0, hidden_size=48):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(TOKENIZER_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory):
    """Paths of a tiny random Whisper checkpoint and a tiny random LLM directory."""
    d = tmp_path_factory.mktemp("tiny_models")
    return make_tiny_whisper(d / "tiny-whisper.pt"), make_tiny_llm(d / "tiny-llm")


@pytest.fixture
def tiny_model(tiny_paths):
    from model import AdapterConfig, load_model

    torch.manual_seed(0)
    model = load_model(AdapterConfig(whisper=tiny_paths[0], llm=tiny_paths[1]), llm_dtype=torch.float32)
    model.eval()
    return model


def chirp(seconds, f0=150.0, sr=16000, seed=0):
    """A short harmonic test signal with a little noise: stands in for speech in the fast tests."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t * (1 + 0.1 * t)) / k for k in range(1, 5))
    return (0.1 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def speech_like(seconds, f0=150.0, seed=0):
    """chirp in syllables of 0.2 s with pauses between them: what audio.holds_speech takes for speech (a steady
    chirp is rejected, as steady noise is)."""
    x = chirp(seconds, f0, seed=seed)
    return x * (np.arange(len(x)) // 3200 % 2 == 0)
