# The CPU demo with Qwen2.5-Coder-1.5B-Instruct (LLM=1.5b bash demo.sh), applied after config/demo_cpu.py:
#   python train.py config/demo_cpu.py config/demo_cpu_1.5b.py --data_dir=data/demo-1.5b --out_dir=out/demo-1.5b
# A step costs about 3x the 0.5B's. On the espeak-ng corpus before 2026-12-06, 1350 steps of this LLM heard gender on
# 99.7% of 120 held-out clips and all five other attributes 20 points past chance and the cascade (EXPERIMENTS.md, "How
# the 1.5B demo's size was found"). On the natural voices, 600 steps answered gender, speed, volume and noise right
# under its training questions, and gender about chance under eval.py's; 1000 steps 69 / 59 (EXPERIMENTS.md, "The
# 1.5B LLM on the natural voices").
llm = 'weights/qwen2.5-coder-1.5b-instruct'
max_iters = 1350
lr_decay_iters = 1350
max_seconds_total = 14400.0  # 4 hours at most; a run that stops here resumes where it stopped (re-run demo.sh)
