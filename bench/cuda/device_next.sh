#!/bin/bash
# device_next.sh - one device call for the changes that session 8 could not run on a GPU (carry
# .whl/cudapack = .cudarun of bench/cuda/bundle.sh packed with tar cJf; optionally with a second CUDA module at
# .cudarun/lib/alt/libdisopt_cuda.so.0, e.g. built from branch s8-dw-grid-on-main):
#   1. test_cuda with the main module (and with the alt module);
#   2. test_cuda_grad with cuDNN's depthwise convs and with ours (DISOPT_CUDA_TR_DW=own), and
#      test_train_step on CUDA with ours (the whole trainer against the PyTorch fixtures);
#   3. bench_train (student B3 + frozen teacher B3, batch 8, 512^2, 10 steps): cuDNN's vs our depthwise
#      convs (forward and backward), alternating, two rounds each;
#   4. inference tiles/s: main vs alt module (device_variants.sh, FP16/BF16/FP32 b32, two rounds).
#   5. (session 9) the trainer's math modes and fused BN + activation pairs: test_train_step on CUDA includes
#      test_student_step_math (TF32, BF16 against the PyTorch fixtures) and test_fused_pairs (fused vs unfused,
#      bit for bit), test_cuda_grad test_conv_math and test_bn_act; bench_train -math fp32|tf32|bf16 [-unfused].
# PARTS (default "infer train"): infer = 1 and 4, train = 2, 3 and 5 (each part fits one 600 s call).
# Key lines to stdout, logs to $OUT/next.tgz.
set -u
PARTS=${PARTS:-infer train}
has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
REAL_OUT=$OUT; L=/tmp/dnext; rm -rf $L; mkdir -p $L
[ -d .cudarun ] || tar xJf .whl/cudapack/cudarun.tar.xz || { echo "no .cudarun"; exit 1; }
. bench/cuda/device_env.sh
ALT=$R/.cudarun/lib/alt/libdisopt_cuda.so.0
pack() { tar czf $REAL_OUT/next.tgz -C $L . 2>/dev/null; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
res() { grep -E "^\[ +(PASSED|FAILED|  ERROR) +\]" "$1" | tr '\n' ' '; echo; }
if has infer; then
echo "== 1. test_cuda"; $B/bin/test_cuda > $L/test_cuda.log 2>&1; echo "main rc $? $(res $L/test_cuda.log)"
[ -f $ALT ] && { DISOPT_CUDA_MODULE=$ALT $B/bin/test_cuda > $L/test_cuda_alt.log 2>&1; echo "alt rc $? $(res $L/test_cuda_alt.log)"; }
pack
fi
if has train; then
echo "== 2. training ops"
DISOPT_CUDA_TR_DW=cudnn $B/bin/test_cuda_grad > $L/grad_cudnn.log 2>&1; echo "test_cuda_grad (cuDNN dw) rc $? $(res $L/grad_cudnn.log)"
DISOPT_TEST_FILTER=${GRAD_OWN_FILTER:-*} DISOPT_CUDA_TR_DW=own $B/bin/test_cuda_grad > $L/grad_own.log 2>&1; echo "test_cuda_grad (own dw) rc $? $(res $L/grad_own.log)"
grep -iE "depthwise" $L/grad_own.log | head -8
# TTS_DW (own): the depthwise convs of test_train_step on CUDA, own or cudnn (the trainer's default)
TD=${TTS_DW:-own}
env DISOPT_CUDA_TR_DW=$TD DISOPT_TEST_BACKEND=cuda timeout 250 $B/bin/test_train_step > $L/tts_own.log 2>&1
echo "test_train_step CUDA ($TD dw) rc $? $(res $L/tts_own.log)"
pack
awk '/RUN.*test_conv_math/,/(OK|FAILED).*test_conv_math/' $L/grad_cudnn.log | grep -E ": (y|dx|dw)  |math mode|FAILED|ERROR" \
  | awk '{print $NF=="" ? $0 : $0}' | cut -c1-110 | head -48
grep -E "^  math|fused|FAILED|ERROR" $L/tts_own.log | head
grep -E "fused vs two ops.*DIFFERENT|FAILED" $L/grad_cudnn.log | head -5
echo "== 3. bench_train b8 512: math (fp32/tf32/bf16) x depthwise (cuDNN/own) x BN+act fused/unfused"
for r in $(seq 1 ${BT_ROUNDS:-2}); do for v in ${BT_VARIANTS:-fp32:cudnn:unfused fp32:cudnn fp32:own tf32:own bf16:own bf16:cudnn}; do
  # the third field: flags joined by +: unfused (BN + act as two ops), town / teng (the teacher's forward in the
  # trainer / in the inference engine; default: the engine with tf32 / bf16), res (the batch put on the device
  # before each timed step: dp_trainer_set_batch, bench_train -resident), tser (the engine's teacher not beside
  # the student's forward), noinpl (cfg.cuda_fuse_no_inplace; inpl, the default since session 12, is accepted),
  # cheads (the few-output-channel 3x3 convs by cuDNN: DISOPT_CUDA_TR_HEADS=cudnn)
  IFS=: read -r m d u <<< "$v"; E="DISOPT_CUDA_TR_DW=$d"; U=""
  for fl in ${u//+/ }; do case $fl in unfused) U="$U -unfused";; town) U="$U -teacher own";; teng) U="$U -teacher engine";; res) U="$U -resident";; tser) U="$U -teacher-serial";; noinpl) U="$U -no-inplace";; inpl) ;; cheads) E="$E DISOPT_CUDA_TR_HEADS=cudnn";; esac; done
  env $E timeout 100 $B/bin/bench_train -model student-b3 -batch 8 -size 512 -steps 10 -warmup 3 -device cuda \
    -math $m $U > $L/bt_${m}_${d}${u:+_$u}_$r.log 2>&1
  echo "round $r $v: $(grep -oE "ms_step_median=[0-9.]+ ms_step_min=[0-9.]+ planned_gib=[0-9.]+( \(set_batch median [0-9.]+)?" $L/bt_${m}_${d}${u:+_$u}_$r.log)"
done; done
pack
# PROF_DW, PROF_MATH, PROF_FLAGS (bench_train flags, e.g. "-resident"): the profiled run
PD=${PROF_DW:-own}; PM=${PROF_MATH:-bf16}; E="DISOPT_CUDA_TR_DW=$PD"
env $E timeout 100 $B/bin/bench_train -model student-b3 -batch 8 -size 512 -steps 3 -warmup 2 \
  -device cuda -math $PM ${PROF_FLAGS:-} -profile > $L/bt_prof_${PM}_$PD.log 2>&1
echo "profile: math $PM, depthwise $PD, flags ${PROF_FLAGS:-none}"; grep -E "ms +[0-9.]+%" $L/bt_prof_${PM}_$PD.log | head -24
pack
fi
if has infer && [ -f $ALT ]; then
  echo "== 4. inference, main vs alt module"
  OUT=$L VARIANTS="main: alt:DISOPT_CUDA_MODULE=$ALT" CASES="fp16:32 bf16:32 fp32:32" bash bench/cuda/device_variants.sh 2>&1 \
    | grep -E "^round" | tee $L/variants_stdout.log
fi
pack
