# bench.py with the published model's shapes and random weights: speed and MFU where the weights are not at hand
# (a GPU without hub access). Only --llm's tokenizer is read (the offline Qwen's by default; Llama-3's has 128,256
# tokens, Qwen's 151,665: the LM head is a little wider here, and it runs on the target tokens only).
#   python bench.py config/bench_paper_shapes.py --device=cuda
random_whisper = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=768, n_audio_head=12, n_audio_layer=12,  # whisper-small
                      n_vocab=51865, n_text_ctx=448, n_text_state=768, n_text_head=12, n_text_layer=12)
random_llama = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,  # Llama-3-8B
                    num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=False)
tapped_layers = (2, 5, 8, 11)
batch_size = 8  # the paper's per-GPU batch
max_new_tokens = 128  # the released inference setting
