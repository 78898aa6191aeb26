#!/usr/bin/env bash
# The bundled demo model's recipe (MODELS.md): shapes-world data -> text encoder -> VAE -> denoising decoder ->
# latent cache -> transformer -> decoder polish -> the model folder src/ltxv/assets/demo. Run from an empty
# work folder:
#   bash /path/to/ltxv/scripts/train_demo.sh
# Every stage resumes when re-run (delete runs/<stage> to start it again).
set -euo pipefail
IMG_STEPS=${IMG_STEPS:-4000}
VAE_STEPS=${VAE_STEPS:-2500}
DEC_STEPS=${DEC_STEPS:-500}
DIT_STEPS=${DIT_STEPS:-12000}
DIT2_STEPS=${DIT2_STEPS:-6000}
DIT3_STEPS=${DIT3_STEPS:-17000}
DEC2_STEPS=${DEC2_STEPS:-4500}
OUT=${OUT:-demo}

ltxv data synth data/img --clips 4096 --size 128 --frames 1 --seed 2             # VAE stage 1: still images
ltxv data synth data/vae --clips 1024 --size 128 --frames 9 --seed 1             # VAE / decoder clips
ltxv data synth data/dit --clips 1024 --size 128 --frames 49 --seed 0 --holdout  # 2 s clips, 8 combos held out
ltxv data synth data/dit4k --clips 4096 --size 128 --frames 49 --seed 3 --holdout  # more of them, same held-out set
ltxv data text-encoder t5 --captions data/vae                                   # 64-d T5-style, word tokenizer

# The VAE learns to draw the object on still images first (1-frame clips: 5x the samples per second, and the
# object appears within ~1,000 steps where 9-frame clips took >4,500 steps to draw none), then on 9-frame clips.
# vae.foreground=30 weighs the object's pixels (a few % of the frame) 31x in the MSE. lr >= 5e-4 stalls at the
# mean image or diverges (MODELS.md).
ltxv train vae --preset demo --data data/img --buckets 1x128x128 --out runs/vae_img \
    --steps "$IMG_STEPS" --batch-size 16 --lr 2e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set optim.warmup_steps=50 --set vae.wavelet=0.1 --set vae.foreground=30
ltxv train vae --init runs/vae_img/model.safetensors --data data/vae --buckets 9x128x128 --out runs/vae \
    --steps "$VAE_STEPS" --batch-size 4 --lr 2e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set optim.warmup_steps=50 --set vae.wavelet=0.1 --set vae.foreground=30
ltxv train decoder --init runs/vae/model.safetensors --data data/vae --buckets 9x128x128 --out runs/dec \
    --steps "$DEC_STEPS" --batch-size 4 --lr 1e-4 --log-every 50 --save-every 500 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30
ltxv preprocess data/dit --model runs/dec/model.safetensors --text-encoder t5 --out cache \
    --buckets 49x128x128 --max-tokens 32 --batch-size 8
ltxv train dit --init runs/dec/model.safetensors --data cache --out runs/dit --steps "$DIT_STEPS" \
    --batch-size 16 --lr 5e-4 --ema 0.999 --log-every 200 --save-every 2000 --val-every 100000 \
    --set optim.warmup_steps=200 --set flow.first_frame_p=0.3 --set data.max_tokens=32
# then a lower learning rate from the first run's EMA weights (the flow loss had plateaued at lr 5e-4)
ltxv train dit --init runs/dit/model.safetensors --data cache --out runs/dit2 --steps "$DIT2_STEPS" \
    --batch-size 16 --lr 1.5e-4 --ema 0.999 --log-every 200 --save-every 2000 --val-every 100000 \
    --set optim.warmup_steps=100 --set flow.first_frame_p=0.3 --set data.max_tokens=32
# then 4x the clips (each of the 308 (colour, shape, motion, background) combinations: ~3 clips -> ~13) and a
# cosine learning-rate decay
ltxv preprocess data/dit4k --model runs/dec/model.safetensors --text-encoder t5 --out cache4k \
    --buckets 49x128x128 --max-tokens 32 --batch-size 8
ltxv train dit --init runs/dit2/model.safetensors --data cache4k --out runs/dit3 --steps "$DIT3_STEPS" \
    --batch-size 16 --lr 3e-4 --ema 0.999 --log-every 500 --save-every 2000 --val-every 100000 \
    --set optim.warmup_steps=200 --set optim.decay=cosine --set flow.first_frame_p=0.3 --set data.max_tokens=32
# last, polish the decoder alone (the encoder, hence the transformer's latents, stay as they are); the decoder
# stage keeps the transformer of its --init file, so this is the finished model
ltxv train decoder --init runs/dit3/model.safetensors --data data/vae --buckets 9x128x128 --out runs/dec2 \
    --steps "$DEC2_STEPS" --batch-size 8 --lr 1.5e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30 --set optim.warmup_steps=50 --set optim.decay=cosine

mkdir -p "$OUT"
ltxv convert runs/dec2/model.safetensors "$OUT/model.safetensors" --to ltxv --dtype bf16
cp -r t5 "$OUT/text_encoder"
cat > "$OUT/generation.json" <<'JSON'
{"width": 128, "height": 128, "num_frames": 49, "frame_rate": 24.0, "steps": 10, "guidance": 3.0,
 "stg": 0.0, "negative_prompt": "", "max_tokens": 32}
JSON
