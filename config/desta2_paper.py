# The published DeSTA2 recipe (Lu et al., 2024): Whisper small -> Q-Former -> Llama-3-8B-Instruct, only the adapter trains.
#   python train.py config/desta2_paper.py                                                        # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/desta2_paper.py \
#       --gradient_accumulation_steps=8 --max_iters=19390 --lr_decay_iters=19390  # 8 GPUs, batch 64
# Needs hub access for both base models (or local paths) and the pairs in data_dir.
out_dir = 'out-desta2'
data_dir = 'data/desta2'
whisper = 'small'
llm = 'meta-llama/Meta-Llama-3-8B-Instruct'
tapped_layers = (2, 5, 8, 11)
dropout = 0.1
max_text_tokens = 200
standardize_features = False  # the published adapter reads Whisper's blocks as they are

# batch 8 per step (the paper's per-GPU batch) on one GPU. 10 epochs of the released 124,088 pairs:
# ceil(124088 / 8) = 15,511 steps per epoch -> 155,110 steps. (With an effective batch of 64 on 8 GPUs:
# ceil(124088 / 64) = 1,939 steps per epoch -> 19,390, as in the command above.)
batch_size = 8
gradient_accumulation_steps = 1
max_iters = 155_110
lr = 1e-4
warmup_iters = 2000
lr_decay_iters = 155_110
min_lr = 0.0  # cosine all the way down
weight_decay = 0.01
beta1, beta2 = 0.9, 0.98
grad_clip = 1.0

eval_interval = 2000
eval_iters = 50
log_interval = 50

device = 'auto'
dtype = 'bfloat16'
# whisper-small features for 124k clips (~4 x 768 values per frame, 50 frames/s, bf16) would be ~190 GB: recompute instead
cache_features = False
compile = True  # the adapter and the LLM's layers (model.compile_decoder_layers; on an H100: README, Measured on a GPU)
