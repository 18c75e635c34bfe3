# Sourced by the install scripts: the one test for "this machine has an NVIDIA GPU".
# TOOLTUNE_GPU=1 says yes, TOOLTUNE_GPU=0 says no, otherwise nvidia-smi must list a GPU.
has_nvidia_gpu() {
  [ "${TOOLTUNE_GPU:-}" = 1 ] || { [ "${TOOLTUNE_GPU:-}" != 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }
}
