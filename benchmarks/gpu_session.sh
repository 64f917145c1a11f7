#!/usr/bin/env bash
# One short session on a lent GPU machine, in the order the project asks for, each part time-boxed so one
# that hangs or fails leaves time for the next:
#   1. benchmarks/gpu_bench.py: ModelScope 1.7B's architecture (random weights), fp16, against diffusers;
#   2. benchmarks/gpu_dit.py: Wan 2.1 1.3B and CogVideoX-2b at full size (random weights), fp16 steps;
#   3. toy-shapes: the UNet stage of a from-scratch run goes on on the GPU until the budget is spent.
#
#   OUT=/tmp/out BUDGET=540 TOY_RUN=.gpu bash benchmarks/gpu_session.sh
#
# TOY_RUN: a work directory of `python -m t2v_nb.toy.train` holding vae.pt (stage 1 done) and unet.pt; the
# latent cache is rebuilt there (on the GPU) from the same seed. What comes back in $OUT: the benchmarks'
# reports, the whole log, the toy run's log.jsonl and its checkpoint in two files (model+state, optimizer)
# that `python -m t2v_nb.toy.train --workdir DIR` resumes from once joined:
#   python -c "import torch; c = torch.load('toy_unet_model.pt', weights_only=False);
#              c['opt'] = torch.load('toy_unet_opt.pt', weights_only=False); torch.save(c, 'DIR/unet.pt')"
# (DIR keeps its own latents.pt: the same videos, encoded on the CPU.)
set -u
START=$(date +%s)
BUDGET=${BUDGET:-540}
OUT=${OUT:-benchmarks/out}
TOY_RUN=${TOY_RUN:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the machine lacks (diffusers), carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
left() { echo $(( START + BUDGET - $(date +%s) )); }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"

echo "== 1. gpu_bench ($(left) s left)"
timeout "${BENCH_S:-150}" python3 benchmarks/gpu_bench.py --repeats 2 --out "$OUT/gpu_results.md"
echo "== 2. gpu_dit ($(left) s left)"
timeout "${DIT_S:-180}" python3 benchmarks/gpu_dit.py --out "$OUT"

if [ -n "$TOY_RUN" ]; then
  work=/tmp/toy_run
  mkdir -p $work && cp "$TOY_RUN"/vae.pt "$TOY_RUN"/unet.pt $work/
  [ -f "$TOY_RUN/log.jsonl" ] && cp "$TOY_RUN/log.jsonl" $work/
  # The cache takes ~30-60 s; the UNet stage gets what is left, less a margin to checkpoint and copy.
  minutes=$(python3 -c "print(max(0.5, ($(left) - 75) / 60))")
  echo "== 3. toy-shapes UNet on the GPU for $minutes min ($(left) s left)"
  timeout $(( $(left) - 15 )) python3 -m t2v_nb.toy.train --workdir $work --device "${TOY_DEVICE:-cuda}" --threads 4 \
    --eval-every "${EVAL_EVERY:-2000}" --max-minutes "$minutes" ${TOY_ARGS:-}
  python3 - "$work" "$OUT" <<'EOF'
import os, sys, torch
work, out = sys.argv[1:]
ckpt = torch.load(os.path.join(work, "unet.pt"), weights_only=False)
torch.save(ckpt.pop("opt"), os.path.join(out, "toy_unet_opt.pt"))  # each file that comes back: <= 16 MiB
torch.save(ckpt, os.path.join(out, "toy_unet_model.pt"))
print("toy checkpoint:", ckpt["state"])
EOF
  cp $work/log.jsonl "$OUT/toy_log.jsonl"
fi
echo "== done ($(left) s left)"
