# The CPU demo with Qwen2.5-Coder-1.5B-Instruct (LLM=1.5b bash demo.sh), applied after config/demo_cpu.py:
#   python train.py config/demo_cpu.py config/demo_cpu_1.5b.py --data_dir=data/demo-1.5b --out_dir=out/demo-1.5b
# A step of 4 rows takes about 6.5 s on 2 CPU cores instead of 3 (demo.sh's short questions; 7 s on descriptions only).
# 600 steps, about 65 minutes: a 300-step run answered every attribute worse, gender included (README, "With the 1.5B
# LLM").
llm = 'weights/qwen2.5-coder-1.5b-instruct'
max_iters = 600
lr_decay_iters = 600
eval_interval = 100
max_seconds_total = 5400.0  # 90 minutes at most
