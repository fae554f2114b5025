# device_env.sh - sourced by the device scripts (device_run/perf/prof/ab.sh): what the .cudarun bundle's
# binaries need on the lent GPU machine (see bundle.sh). Sets R (the repository), B (the bundle) and M
# (the demo model, assembled from the tracked golden), exports LD_LIBRARY_PATH, DISOPT_CUDA_MODULE,
# DISOPT_BENCH_BACKEND=cuda and CMOCKA_MESSAGE_OUTPUT.
R=$PWD; B=$R/.cudarun
# the binaries look for testdata and disopt_testmodel where they were built (/work/main/build*)
for d in /tmp/wt /tmp/lead; do ln -sfn "$R" $d; done
[ -e /work/main ] || { mkdir -p /work && ln -s "$R" /work/main; }
for d in /work/main/build /work/main/build-gdalrun /tmp/lead/build; do
  mkdir -p $d/tools 2>/dev/null && cp $B/bin/disopt_testmodel $d/tools/ 2>/dev/null
done
NV=$(python3 -c 'import nvidia.cudnn,nvidia.cublas,os;print(os.path.dirname(nvidia.cudnn.__file__)+"/lib:"+os.path.dirname(nvidia.cublas.__file__)+"/lib")' 2>/dev/null)
# NCCL for the data-parallel trainer (dlopened): the toolkit's, else PyTorch's wheel
NC=$(python3 -c 'import nvidia.nccl,os;print(os.path.dirname(nvidia.nccl.__file__)+"/lib")' 2>/dev/null)
[ -n "$NC" ] && NV=$NV:$NC
export LD_LIBRARY_PATH=$B/lib:/usr/local/cuda/lib64:$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export DISOPT_CUDA_MODULE=$B/lib/libdisopt_cuda.so.0 DISOPT_BENCH_BACKEND=cuda CMOCKA_MESSAGE_OUTPUT=stdout
chmod +x $B/bin/*
M=/tmp/m.safetensors
[ -f $M ] || $B/bin/disopt_testmodel testdata/golden/student_b3.safetensors $M > /dev/null ||
  { echo "device_env.sh: cannot assemble the demo model"; exit 1; }
