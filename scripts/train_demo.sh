#!/usr/bin/env bash
# The bundled demo model's recipe (MODELS.md): shapes-world data -> text encoder -> VAE -> denoising decoder ->
# decoder polish -> latent cache -> transformer -> the whole VAE again for moving shapes -> latent cache ->
# the transformer moved onto the new latents (three times) -> a fourth and a fifth clip stage -> the same world at
# 192x192: data, the whole VAE, latent cache, the transformer (eight stages) -> the model folder
# src/ltxv/assets/demo. Run from an empty work folder:
#   bash /path/to/ltxv/scripts/train_demo.sh
# Every stage resumes when re-run (delete runs/<stage> to start it again).
set -euo pipefail
IMG_STEPS=${IMG_STEPS:-4000}
VAE_STEPS=${VAE_STEPS:-2500}
DEC_STEPS=${DEC_STEPS:-500}
DEC2_STEPS=${DEC2_STEPS:-4500}
DEC4_STEPS=${DEC4_STEPS:-2000}
DITW2_STEPS=${DITW2_STEPS:-4000}
DITW3_STEPS=${DITW3_STEPS:-5000}
DITW5_STEPS=${DITW5_STEPS:-4000}
DITW6_STEPS=${DITW6_STEPS:-3500}
IMG1_STEPS=${IMG1_STEPS:-1500}
IMG2_STEPS=${IMG2_STEPS:-3000}
CLIP_STEPS=${CLIP_STEPS:-10000}
DITV_STEPS=${DITV_STEPS:-5000}
CLIP2_STEPS=${CLIP2_STEPS:-4000}
DITV3_STEPS=${DITV3_STEPS:-10000}
DITV4_STEPS=${DITV4_STEPS:-5000}
CLIP3_STEPS=${CLIP3_STEPS:-6000}
DITV6_STEPS=${DITV6_STEPS:-4000}
DITV7_STEPS=${DITV7_STEPS:-2000}
DITV8_STEPS=${DITV8_STEPS:-2500}
CLIP4_STEPS=${CLIP4_STEPS:-6000}
CLIP5_STEPS=${CLIP5_STEPS:-6000}
VAE192_STEPS=${VAE192_STEPS:-3000}
DIT192_STEPS=${DIT192_STEPS:-2500}
DIT192B_STEPS=${DIT192B_STEPS:-800}
DIT192C_STEPS=${DIT192C_STEPS:-4500}
DIT192D_STEPS=${DIT192D_STEPS:-2700}
DIT192E_STEPS=${DIT192E_STEPS:-6500}
DIT192F_STEPS=${DIT192F_STEPS:-2500}
DIT192G_STEPS=${DIT192G_STEPS:-3000}
DIT192H_STEPS=${DIT192H_STEPS:-3000}
OUT=${OUT:-demo}
once() {  # FILE COMMAND...: run COMMAND unless FILE, the last one it writes, exists: a re-run skips finished
    [ -e "$1" ] || "${@:2}"  # data, text encoder, cache and model folder steps (training runs resume themselves)
}

once data/img/captions.jsonl ltxv data synth data/img --clips 4096 --size 128 --frames 1 --seed 2             # VAE stage 1: still images
once data/vae/captions.jsonl ltxv data synth data/vae --clips 1024 --size 128 --frames 9 --seed 1             # VAE / decoder clips
once data/dit4k/captions.jsonl ltxv data synth data/dit4k --clips 4096 --size 128 --frames 49 --seed 3 --holdout  # 2 s clips, 8 combos held out
once t5 ltxv data text-encoder t5 --captions data/vae                                  # 64-d T5-style, word tokenizer

# The VAE learns to draw the object on still images first (1-frame clips: 5x the samples per second, and the
# object appears within ~1,000 steps where 9-frame clips took >4,500 steps to draw none), then on 9-frame clips.
# vae.foreground=30 weighs the object's pixels (a few % of the frame) 31x in the MSE (these first stages: the
# target's object pixels only, foreground_symmetric=false; see decoder 3). lr >= 5e-4 stalls at the
# mean image or diverges (MODELS.md).
ltxv train vae --preset demo --data data/img --buckets 1x128x128 --out runs/vae_img \
    --steps "$IMG_STEPS" --batch-size 16 --lr 2e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set optim.warmup_steps=50 --set vae.wavelet=0.1 --set vae.foreground=30 \
    --set vae.foreground_symmetric=false
ltxv train vae --init runs/vae_img/model.safetensors --data data/vae --buckets 9x128x128 --out runs/vae \
    --steps "$VAE_STEPS" --batch-size 4 --lr 2e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set optim.warmup_steps=50 --set vae.wavelet=0.1 --set vae.foreground=30 \
    --set vae.foreground_symmetric=false
ltxv train decoder --init runs/vae/model.safetensors --data data/vae --buckets 9x128x128 --out runs/dec \
    --steps "$DEC_STEPS" --batch-size 4 --lr 1e-4 --log-every 50 --save-every 500 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30 --set vae.foreground_symmetric=false
# the transformer learns on cached latents of 4,096 two-second clips (~13 per (colour, shape, motion,
# background) combination)
cache_stage() {  # OUT VAE_FILE: the VAE's latents and the T5 embeddings of the 2 s clips
    once "$1/meta.json" ltxv preprocess data/dit4k --model "$2" --text-encoder t5 --out "$1" --buckets 49x128x128 --max-tokens 32 \
        --batch-size 8
}
cache_stage cache4k runs/dec/model.safetensors
# polish the decoder alone (the encoder, hence the cached latents, stay as they are)
ltxv train decoder --init runs/dec/model.safetensors --data data/vae --buckets 9x128x128 --out runs/dec2 \
    --steps "$DEC2_STEPS" --batch-size 8 --lr 1.5e-4 --log-every 100 --save-every 500 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30 --set vae.foreground_symmetric=false \
    --set optim.warmup_steps=50 --set optim.decay=cosine
# objects drawn too big: with the object weight on the target's object pixels only (foreground_symmetric=false
# above), drawing object colour on the background costs 31x less than missing the object, so the decoder paints
# blobs 17-35 % larger than the shapes; vae.foreground_symmetric (the default since) also weighs the pixels it
# draws as object. The run was stopped at step 1,000 of a 3,000-step cosine (optim.decay_steps)
ltxv train decoder --init runs/dec2/model.safetensors --data data/vae --buckets 9x128x128 --out runs/dec3 \
    --steps 1000 --batch-size 8 --lr 1e-4 --log-every 50 --save-every 250 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30 \
    --set optim.warmup_steps=50 --set optim.decay=cosine --set optim.decay_steps=3000
# interior latent frames: a 9-frame clip is 2 latent frames (the first frame and one more), so the VAE never
# decoded a latent frame with neighbours on both sides, which is most of a 49-frame video's; 25-frame clips
# (4 latent frames) from the 2 s clips
ltxv train decoder --init runs/dec3/model.safetensors --data data/dit4k --buckets 25x128x128 --out runs/dec4 \
    --steps "$DEC4_STEPS" --batch-size 4 --lr 1e-4 --log-every 50 --save-every 250 --val-every 100000 \
    --set vae.wavelet=0.1 --set vae.foreground=30 \
    --set optim.warmup_steps=50 --set optim.decay=cosine
# a new transformer (the demo preset's: 4 blocks, 256 wide) on that VAE (the decoder stages leave the encoder, so
# the cached latents, as they were). The shipped one is this run's step 3,000 of a 9,000-step cosine, raw weights
ltxv train dit --init runs/dec4/model.safetensors --new-dit --data cache4k --out runs/ditw --steps 3000 \
    --batch-size 16 --lr 5e-4 --log-every 100 --save-every 1000 --val-every 100000 --compile \
    --set optim.warmup_steps=200 --set optim.decay=cosine --set optim.decay_steps=9000 \
    --set flow.first_frame_p=0.3 --set data.max_tokens=32
# then the transformer at high noise, where the motion's direction is decided (MODELS.md): each stage continues
# the one before with the same flags but its steps, learning rate and flow.t_shift (the μ of the logit-normal t)
dit_stage() {  # OUT INIT STEPS LR T_SHIFT CACHE [more ltxv flags]
    ltxv train dit --init "$2" --data "$6" --out "$1" --steps "$3" --batch-size 16 --lr "$4" --ema 0.999 \
        --log-every 100 --save-every 1000 --val-every 100000 --compile --set optim.warmup_steps=100 \
        --set optim.decay=cosine --set flow.first_frame_p=0.3 --set data.max_tokens=32 --set flow.t_shift="$5" \
        "${@:7}"
}
# t > 0.9 for 24 % of the samples instead of 6 %; then more of the same at a lower learning rate
dit_stage runs/ditw2 runs/ditw/model.safetensors "$DITW2_STEPS" 3e-4 1.5 cache4k
dit_stage runs/ditw3 runs/ditw2/model.safetensors "$DITW3_STEPS" 2e-4 1.5 cache4k
# the direction follows where the object starts, which the transformer picks at the highest noise levels:
# t > 0.9 for 42 %, then for 62 % at a lower learning rate
dit_stage runs/ditw5 runs/ditw3/model.safetensors "$DITW5_STEPS" 2e-4 2.0 cache4k
dit_stage runs/ditw6 runs/ditw5/model.safetensors "$DITW6_STEPS" 1.5e-4 2.5 cache4k

# shapes (MODELS.md): the whole VAE again, from decoder 4, with the DWT term at its default weight: still images
# first (shape on still frames 45 -> 79 %), then a long run on the 25-frame starts of the 2 s clips, where the
# moving objects' shapes come back only late, in the low learning rates of the cosine
vae_stage() {  # OUT INIT DATA BUCKETS STEPS BATCH LR WARMUP
    ltxv train vae --init "$2" --data "$3" --buckets "$4" --out "$1" --steps "$5" --batch-size "$6" --lr "$7" \
        --log-every 100 --save-every 500 --val-every 100000 --set optim.warmup_steps="$8" \
        --set optim.decay=cosine --set vae.foreground=30
}
vae_stage runs/img1 runs/dec4/model.safetensors data/img 1x128x128 "$IMG1_STEPS" 16 2e-4 50
vae_stage runs/img2 runs/img1/model.safetensors data/img 1x128x128 "$IMG2_STEPS" 16 2e-4 50
vae_stage runs/clip runs/img2/model.safetensors data/dit4k 25x128x128 "$CLIP_STEPS" 2 1.5e-4 100
# a new encoder makes new latents: cache them again, and move DiT W6's transformer onto them
cache_stage cache5 runs/clip/model.safetensors
dit_stage runs/ditv runs/clip/model.safetensors "$DITV_STEPS" 2e-4 2.0 cache5 \
    --init-dit runs/ditw6/model.safetensors
# and as many steps more from its EMA weights at a lower learning rate
dit_stage runs/ditv2 runs/ditv/model.safetensors "$DITV_STEPS" 1.5e-4 2.0 cache5
# a second cosine on the clips from a lower learning rate (the moving shapes came back in the low rates of the
# first), then cache and transformer again
vae_stage runs/clip2 runs/clip/model.safetensors data/dit4k 25x128x128 "$CLIP2_STEPS" 2 7.5e-5 100
cache_stage cache6 runs/clip2/model.safetensors
dit_stage runs/ditv3 runs/clip2/model.safetensors "$DITV3_STEPS" 1.5e-4 2.0 cache6 \
    --init-dit runs/ditv2/model.safetensors
# then at lower noise (t_shift 1.0: median t 0.73), where the shape is settled once the direction is
dit_stage runs/ditv4 runs/ditv3/model.safetensors "$DITV4_STEPS" 1e-4 1.0 cache6
# a third clip cosine from a lower learning rate still (squares keep their corners more often), cache, and the
# transformer moved onto the new latents at high noise, then at low noise again
vae_stage runs/clip3 runs/clip2/model.safetensors data/dit4k 25x128x128 "$CLIP3_STEPS" 2 5e-5 100
cache_stage cache7 runs/clip3/model.safetensors
dit_stage runs/ditv6 runs/clip3/model.safetensors "$DITV6_STEPS" 1.5e-4 2.0 cache7 \
    --init-dit runs/ditv4/model.safetensors
dit_stage runs/ditv7 runs/ditv6/model.safetensors "$DITV7_STEPS" 1e-4 1.0 cache7
dit_stage runs/ditv8 runs/ditv7/model.safetensors "$DITV8_STEPS" 1e-4 1.0 cache7  # 2,500 more steps the same way
# a fourth clip cosine, the same as the third (the VAE stage leaves the transformer as it was: DiT V8's
# transformer stays on clip 3's latents without moving it, chosen on the train split; MODELS.md)
vae_stage runs/clip4 runs/ditv8/model.safetensors data/dit4k 25x128x128 "$CLIP4_STEPS" 2 5e-5 100
# and a fifth, the same: clip 5's VAE with DiT V8's transformer was the shipped file until 2026-12-07 (moving the
# transformer onto clip 5's latents, DiT V10, was not better on the train split)
vae_stage runs/clip5 runs/clip4/model.safetensors data/dit4k 25x128x128 "$CLIP5_STEPS" 2 5e-5 100

# shapes at 192x192 (MODELS.md, "At 192x192 the VAE keeps the corners"): the world's objects are 1/8-1/4 of the
# frame, so at 128 px the smallest are under two thirds of a 32 px latent token, whose corners the VAE drops; at
# 192 px they are 24-48 px. New 2 s clips at 192 px, the whole VAE on their 25-frame starts, the latents cached,
# and the transformer moved onto them and trained there for ~17,000 steps (EMA 0.998)
once data/d192/captions.jsonl ltxv data synth data/d192 --clips 3072 --size 192 --frames 49 --seed 51 --holdout
# (the run started from clip 5's file rounded to bf16, the model shipped then)
vae_stage runs/vae192 runs/clip5/model.safetensors data/d192 25x192x192 "$VAE192_STEPS" 2 1e-4 100
once cache192/meta.json ltxv preprocess data/d192 --model runs/vae192/model.safetensors --text-encoder t5 \
    --out cache192 --buckets 49x192x192 --max-tokens 32 --batch-size 8
dit192_stage() {  # OUT INIT STEPS LR WARMUP EMA T_SHIFT [more ltxv flags]: dit_stage on cache 192 with its own
    dit_stage "$1" "$2" "$3" "$4" "$7" cache192 --ema "$6" --set optim.warmup_steps="$5" "${@:8}"  # EMA, warm-up
}  # (the later --ema and --set win)
dit192_stage runs/dit192 runs/vae192/model.safetensors "$DIT192_STEPS" 2e-4 100 0.998 1.5
dit192_stage runs/dit192b runs/dit192/model.safetensors "$DIT192B_STEPS" 1e-4 50 0.995 1.0     # at low noise
# the object's tokens weigh 4x in the flow loss (at 192 px 56 of a clip's 252 tokens are object)
dit192_stage runs/dit192c runs/dit192b/model.safetensors "$DIT192C_STEPS" 2e-4 100 0.998 1.5 --set flow.foreground=3
dit192_stage runs/dit192d runs/dit192c/model.safetensors "$DIT192D_STEPS" 1.5e-4 100 0.998 1.5 --set flow.foreground=3
dit192_stage runs/dit192e runs/dit192d/model.safetensors "$DIT192E_STEPS" 1.5e-4 100 0.998 1.5 --set flow.foreground=3
# then three cosines at low noise (t_shift 1.0), where the squares' corners are settled (MODELS.md, "Low noise,
# longer"): the squares' fill rose over the first two and held in the third, which passed the train split
dit192_stage runs/dit192f runs/dit192e/model.safetensors "$DIT192F_STEPS" 1e-4 50 0.998 1.0 --set flow.foreground=3
dit192_stage runs/dit192g runs/dit192f/model.safetensors "$DIT192G_STEPS" 1e-4 50 0.998 1.0 --set flow.foreground=3
dit192_stage runs/dit192h runs/dit192g/model.safetensors "$DIT192H_STEPS" 1e-4 50 0.998 1.0 --set flow.foreground=3

mkdir -p "$OUT"
once "$OUT/model.safetensors" ltxv convert runs/dit192h/model.safetensors "$OUT/model.safetensors" --to ltxv --dtype bf16
once "$OUT/text_encoder" cp -r t5 "$OUT/text_encoder"
# the decoder decodes at t = 0 (where the VAE stages trained it), without decode noise; CFG only at the steps
# with t >= 0.5 (MODELS.md, "Guidance only above t = 0.5")
cat > "$OUT/generation.json" <<'JSON'
{"width": 192, "height": 192, "num_frames": 49, "frame_rate": 24.0, "steps": 10, "guidance": 3.0, "guidance_until": 0.5,
 "stg": 0.0, "negative_prompt": "", "max_tokens": 32, "decode_timestep": 0.0, "decode_noise_scale": 0.0,
 "keyframe_guidance": true}
JSON
