#!/usr/bin/env bash
# The main job on a built-in tiny dataset: write it, train RedNet-26 from our ImageNet config for a few
# iterations through `mim train mmpretrain` on CPU, then test the saved checkpoint with tools/dist_test.sh,
# which prints top-1/top-5. Run from anywhere; uses ./.venv unless PYTHON is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export PYTHON=${PYTHON:-python}
CONFIG=configs/rednet/rednet26_64xb32-warmup-coslr-130e_in1k.py
DATA=${DEMO_DATA:-data/demo_imagenet}
WORK=${DEMO_WORK_DIR:-work_dirs/demo_rednet26}
# The paper's config, pointed at the tiny dataset and shrunk to a CPU-sized run.
DATA_OPTS="train_dataloader.dataset.data_root=$DATA val_dataloader.dataset.data_root=$DATA \
test_dataloader.dataset.data_root=$DATA train_dataloader.batch_size=4 val_dataloader.batch_size=8 \
test_dataloader.batch_size=8 train_dataloader.num_workers=1 val_dataloader.num_workers=1 \
test_dataloader.num_workers=1"

"$PYTHON" tools/make_demo_data.py imagenet "$DATA"
rm -rf "$WORK"
mim train mmpretrain "$CONFIG" --gpus 0 --work-dir "$WORK" --auto-scale-lr --cfg-options $DATA_OPTS \
    train_cfg.max_epochs=1 default_hooks.logger.interval=1
CHECKPOINT=$(cat "$WORK/last_checkpoint")
tools/dist_test.sh "$CONFIG" "$CHECKPOINT" 1 --work-dir "$WORK" --cfg-options $DATA_OPTS
echo "demo done: trained $CHECKPOINT and tested it (accuracy/top1, accuracy/top5 above)"
