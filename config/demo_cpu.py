# The CPU demo's settings: the offline whisper-base + Qwen2.5-Coder-0.5B-Instruct (python get_weights.py), 600 steps of
# 4 rows. Alone, the 0.5B smoke variant (LLM=0.5b bash demo.sh: 3 epochs of its 784 training pairs):
#   python train.py config/demo_cpu.py --data_dir=data/demo-0.5b --out_dir=out/demo-0.5b
# with config/demo_cpu_1.5b.py on top, the demo. On 2 AVX2-only cores a 0.5B step takes about 5 s in fp32
# (EXPERIMENTS.md, "Natural voices")
out_dir = 'out'  # sample.py's default --adapter is out/adapter.safetensors
data_dir = 'data/synth'  # prepare.py + generate_pairs.py write here
whisper = 'weights/whisper-base.pt'
llm = 'weights/qwen2.5-coder-0.5b-instruct'
tapped_layers = ()  # base has 6 blocks: taps 1, 3, 5
n_queries = 32  # speech vectors per clip: half the paper's 64, so a row is about a quarter shorter and a step faster

batch_size = 4
gradient_accumulation_steps = 1
max_iters = 600
# 3x the paper's for a short run; 1e-3 gave validation loss 0.86, not 0.68 (EXPERIMENTS.md, "The demo's other knobs")
lr = 3e-4
warmup_iters = 20
lr_decay_iters = 600
min_lr = 3e-5
weight_decay = 0.01
beta1, beta2 = 0.9, 0.98
grad_clip = 1.0

eval_interval = 100
eval_iters = 4
log_interval = 1
max_seconds_total = 5400.0  # 90 minutes at most, start-up included: the run stops cleanly with a checkpoint, and
                            # re-running demo.sh resumes it

device = 'cpu'
# bf16 on CPUs with AVX512-BF16 or AMX, where the frozen LLM's forward+backward is ~1.4x faster than in fp32; fp32 on
# the others, which emulate bf16 many times slower (EXPERIMENTS.md, "On a CPU without bf16 instructions")
dtype = 'auto'
cache_features = True  # whisper-base features: ~154 kB per second of audio
compile = False
