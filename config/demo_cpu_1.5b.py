# The CPU demo (bash demo.sh) trains Qwen2.5-Coder-1.5B-Instruct's adapter: this file applied after config/demo_cpu.py,
#   python train.py config/demo_cpu.py config/demo_cpu_1.5b.py --data_dir=data/demo --out_dir=out/demo
# 1000 steps of 4 rows on the 1120-clip corpus's 1568 training pairs (2.6 epochs); the best validation loss came at
# step 800 (EXPERIMENTS.md, "Natural voices": "Whole descriptions and option-naming gender questions")
llm = 'weights/qwen2.5-coder-1.5b-instruct'
max_iters = 1000
lr_decay_iters = 1000
max_seconds_total = 14400.0  # 4 hours at most; a run that stops here resumes where it stopped (re-run demo.sh)
