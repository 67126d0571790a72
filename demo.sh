#!/usr/bin/env bash
# The CPU demo, start to finish: install what is missing, then
#   prepare (synthetic speech) -> generate_pairs (the LLM's own targets) -> train (the adapter) -> eval
#   -> a sample answer.
# Every stage resumes: re-running this script reuses what is already done (delete data/demo, out/demo or
# eval_results/demo, or their -1.5b twins, to redo a stage). The sizes below are chosen for a 2-core CPU; scale them
# up on a GPU.
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE=1  # the demo needs no model hub: the weights come from registry packages (setup.sh)
# The demo trains on Qwen2.5-Coder-1.5B-Instruct. LLM=0.5b bash demo.sh is a smoke variant with the 0.5B LLM on half
# the clips, in its own directories: a fraction of the time, and an adapter that hears far less (README)
case ${LLM:=1.5b} in
  1.5b) NAME=demo N_CLIPS=1120 QUESTIONS=config/voice_questions.txt MAX_NEW_TOKENS=96
        TRAIN_CONFIGS="config/demo_cpu.py config/demo_cpu_1.5b.py" ;;
  0.5b) NAME=demo-0.5b N_CLIPS=560 QUESTIONS=config/voice_questions_0.5b.txt MAX_NEW_TOKENS=48
        TRAIN_CONFIGS=config/demo_cpu.py ;;
  *) echo "error: LLM must be 1.5b or 0.5b, got '$LLM'" >&2; exit 2 ;;
esac
export LLM  # for setup.sh
LLM_DIR=weights/qwen2.5-coder-$LLM-instruct
DATA=data/$NAME OUT=out/$NAME EVAL=eval_results/$NAME

step() { echo; echo "=== $1 ($(date +%H:%M:%S))"; }

step "setup: pip requirements, speech engines, offline weights"
bash setup.sh

step "prepare: synthetic corpus of four engines' voices -> $DATA/{train,val,test}.jsonl"
# RHVoice is never trained on: its clips are all in test, the figure for an engine the adapter never heard. A quarter
# of the clips are test clips, so that Kokoro's held-out voices have the 32 the report needs (EXPERIMENTS.md,
# "Natural voices")
python3 prepare.py --out_dir=$DATA --n_clips=$N_CLIPS --max_words=10 --holdout_engine=rhvoice --test_frac=0.25 --val_frac=0.05

step "generate_pairs: the frozen LLM answers questions about each clip's seed transcript -> $DATA/{train,val}_pairs.jsonl"
# Not the paper's one question, "What can you hear from the audio?": every clip gets one of five questions about its
# voice (two ask for a whole description) and a second one on its gender that names both options, in either order.
# Adapters trained on narrower questions answered them well and eval.py's wordings at chance (EXPERIMENTS.md, "Natural
# voices"); the 0.5B cannot answer the descriptions from the text, so the smoke variant asks it three it can
python3 generate_pairs.py --data_dir=$DATA --llm=$LLM_DIR --batch_size=32 --max_new_tokens=$MAX_NEW_TOKENS \
  --instructions=@$QUESTIONS

step "train: the Q-Former adapter -> $OUT/adapter.safetensors"
# a checkpoint means an earlier run: resume it (a finished run stops at once, an interrupted one goes on)
RESUME=$([ -f $OUT/ckpt.pt ] && echo --init_from=resume || true)
python3 train.py $TRAIN_CONFIGS --data_dir=$DATA --out_dir=$OUT $RESUME

# the held-out voices of Kokoro (an engine in training) and RHVoice (never trained on), 32 clips a task each
step "eval: trained adapter vs cascade vs text-with-metadata vs chance -> $EVAL/report.md"
python3 eval.py --data_dir=$DATA --adapter=$OUT/adapter.safetensors --out_dir=$EVAL --engines=kokoro,rhvoice \
  --tasks=gender,pitch,speed,volume,accent,noise --limit=32 --if_limit=48 --systems=trained,cascade,text_seed,chance \
  --batch_size=32

step "sample: one held-out clip"
CLIP=$(python3 -c "import json; r = json.loads(open('$DATA/test.jsonl').readline()); print('$DATA/' + r['audio_filepath']); print(r['voice'], r['seed_transcript'])")
echo "clip, its voice and its metadata: $CLIP"
python3 sample.py --audio="$(echo "$CLIP" | head -1)" --adapter=$OUT/adapter.safetensors --prompt="What is the speaker's gender?"

step "done"
echo "corpus: $DATA   pairs: $DATA/train_pairs.jsonl   adapter: $OUT/adapter.safetensors   report: $EVAL/report.md"
