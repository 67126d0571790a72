# The CPU demo: the offline whisper-base + Qwen2.5-Coder-0.5B-Instruct (python get_weights.py), a few hundred steps.
#   python train.py config/demo_cpu.py
# On 2 CPU cores one step of 4 rows (~250 tokens each, 64 of them speech vectors) is several seconds in bf16,
# so this is tens of minutes; max_seconds_total caps it and the run stops cleanly with a checkpoint either way.
out_dir = 'out'  # sample.py's default --adapter is out/adapter.safetensors
data_dir = 'data/synth'  # prepare.py + generate_pairs.py write here
whisper = 'weights/whisper-base.pt'
llm = 'weights/qwen2.5-coder-0.5b-instruct'
tapped_layers = ()  # base has 6 blocks: taps 1, 3, 5

batch_size = 4
gradient_accumulation_steps = 1
max_iters = 280  # ~2.9 s per step: 14 min, inside max_seconds_total
# 3x the paper's for a short run; 1e-3 gave validation loss 0.86, not 0.68 (EXPERIMENTS.md, "The demo's other knobs")
lr = 3e-4
warmup_iters = 20
lr_decay_iters = 280
min_lr = 3e-5
weight_decay = 0.01
beta1, beta2 = 0.9, 0.98
grad_clip = 1.0

eval_interval = 70
eval_iters = 4
log_interval = 1
max_seconds_total = 900.0  # 15 minutes at most, start-up included: the run stops cleanly with a checkpoint

device = 'cpu'
# bf16 on CPUs with AVX512-BF16 or AMX, where the frozen LLM's forward+backward is ~1.4x faster than in fp32; fp32 on
# the others, which emulate bf16 many times slower (README, "On a CPU without bf16 instructions")
dtype = 'auto'
cache_features = True  # whisper-base features: ~154 kB per second of audio
compile = False
