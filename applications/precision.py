"""The mixed-precision policy of a run: which one, why, and float32 twins for evaluation.

`--mixed_precision_policy auto` (the default) trains in mixed_bfloat16 when all of these hold,
and in float32 otherwise:
- the recipe is `random_init` (the `flipreid` and `alignedreid` recipes keep their reference's
  float32, so that their numbers stay comparable with published tables);
- no GPU is in use (a GPU's half-precision units are a choice left to the user:
  mixed_float16 or mixed_bfloat16);
- the CPU computes bfloat16 natively (`avx512_bf16` or `amx_bf16` among the flags of
  /proc/cpuinfo). Elsewhere TensorFlow emulates bfloat16, which is slower than float32.

Under mixed_bfloat16 the layers compute in bfloat16 and keep float32 variables; the losses, GeM
pooling, clipping, the softmax, the embeddings and the distances stay float32 (their layers and
functions cast to float32 themselves).

Evaluation extracts features in float32 by default (`--evaluation_precision float32`), also
after bfloat16 training: `build_precision_twin` builds a second inference model under the
evaluation policy and copies the trained weights into it before each use (both keep float32
variables, so the copy is exact).
"""

import contextlib

from applications.core.backend import keras, tf

MIXED_PRECISION_POLICY_CHOICES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
EVALUATION_PRECISIONS = ("float32", "bfloat16")
# /proc/cpuinfo flags of x86 processors with bfloat16 arithmetic (AVX512-BF16; AMX tiles).
NATIVE_BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Per half-precision policy, the flags of CPUs that compute it natively (float16: AVX512-FP16,
# AMX-FP16 tiles).
NATIVE_CPU_FLAGS = {
    "mixed_bfloat16": NATIVE_BFLOAT16_CPU_FLAGS,
    "mixed_float16": ("avx512_fp16", "amx_fp16"),
}
# Training without native support, measured by benchmarks/bench_training.py on an AMD EPYC
# (Zen 3, 2 cores, no AVX-512; see benchmarks/README.md): how many times float32's step time.
EMULATED_TRAINING_SLOWDOWN = {"mixed_bfloat16": 8, "mixed_float16": 3.7}
CPUINFO_PATH = "/proc/cpuinfo"


def read_cpu_flags(cpuinfo_path=CPUINFO_PATH):
    """The CPU feature flags that Linux lists for the first processor.

    Args:
        cpuinfo_path: str, the cpuinfo file.

    Returns:
        frozenset of str (empty where the file is missing or unreadable, e.g. on macOS).
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as file:
            for line in file:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bfloat16_flags(cpu_flags):
    """The flags among cpu_flags that show native bfloat16 arithmetic (sorted list of str)."""
    return sorted(flag for flag in NATIVE_BFLOAT16_CPU_FLAGS if flag in cpu_flags)


def resolve_mixed_precision_policy(requested, recipe, *, cpu_flags, num_gpus):
    """The policy a run trains with, and the reason for it, in words.

    Args:
        requested: str, the --mixed_precision_policy value (MIXED_PRECISION_POLICY_CHOICES).
        recipe: str, the resolved recipe ("random_init", "flipreid", "alignedreid", ...).
        cpu_flags: collection of str, the CPU's feature flags (see read_cpu_flags).
        num_gpus: int, GPUs TensorFlow sees.

    Returns:
        (policy, reason): policy is "float32", "mixed_float16" or "mixed_bfloat16"; reason is
        a sentence ending without a full stop.

    Raises:
        ValueError: an unknown requested policy.
    """
    if requested not in MIXED_PRECISION_POLICY_CHOICES:
        raise ValueError(
            f"--mixed_precision_policy must be one of {', '.join(MIXED_PRECISION_POLICY_CHOICES)}"
            f", got {requested!r}."
        )
    if requested != "auto":
        return requested, f"--mixed_precision_policy {requested} was given" + emulation_note(
            requested, cpu_flags=cpu_flags, num_gpus=num_gpus
        )
    if recipe != "random_init":
        return "float32", (
            f"the {recipe} recipe keeps its reference's float32, so that its numbers compare "
            "with published ones"
        )
    if num_gpus > 0:
        return "float32", (
            f"a GPU is in use ({num_gpus} seen); pass --mixed_precision_policy mixed_float16 or "
            "mixed_bfloat16 to use its half-precision units"
        )
    flags = native_bfloat16_flags(cpu_flags)
    if flags:
        return "mixed_bfloat16", (
            f"this CPU computes bfloat16 natively ({', '.join(flags)} in /proc/cpuinfo) and "
            "trains faster in it; --mixed_precision_policy float32 turns it off"
        )
    return "float32", (
        "this CPU has no native bfloat16 (neither "
        f"{' nor '.join(NATIVE_BFLOAT16_CPU_FLAGS)} in /proc/cpuinfo), where bfloat16 would be "
        "emulated and slower"
    )


def emulation_note(policy, *, cpu_flags, num_gpus):
    """A warning clause where a half-precision policy would train emulated on the CPU, else "".

    Without a GPU and without the CPU's native 16-bit arithmetic, TensorFlow computes the
    bfloat16 (or float16) convolution gradients with slow generic kernels.

    Args:
        policy: str, a Keras policy name.
        cpu_flags: collection of str, the CPU's feature flags (see read_cpu_flags).
        num_gpus: int, GPUs TensorFlow sees.

    Returns:
        str, empty or starting with "; " and ending without a full stop.
    """
    native_flags = NATIVE_CPU_FLAGS.get(policy)
    if native_flags is None or num_gpus > 0 or any(flag in cpu_flags for flag in native_flags):
        return ""
    dtype = policy.removeprefix("mixed_")
    return (
        f"; this CPU has no native {dtype} (neither {' nor '.join(native_flags)} in "
        f"/proc/cpuinfo), so TensorFlow emulates it: training measured "
        f"{EMULATED_TRAINING_SLOWDOWN[policy]}x slower than in float32 on such a CPU "
        "(benchmarks/README.md); --mixed_precision_policy auto or float32 trains faster here"
    )


def evaluation_policy(evaluation_precision):
    """The Keras policy that extracts features at --evaluation_precision."""
    if evaluation_precision not in EVALUATION_PRECISIONS:
        raise ValueError(
            f"--evaluation_precision must be one of {', '.join(EVALUATION_PRECISIONS)}, got "
            f"{evaluation_precision!r}."
        )
    return "mixed_bfloat16" if evaluation_precision == "bfloat16" else "float32"


@contextlib.contextmanager
def global_policy(policy):
    """Sets Keras' global mixed-precision policy inside the block, and restores the previous one.

    Layers take the global policy when they are built, so models built inside the block keep
    it afterwards.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compute_dtype_of(model):
    """The compute dtype of a model's layers with weights, e.g. "float32" or "bfloat16"."""
    for layer in model.submodules:
        if layer.weights and getattr(layer, "compute_dtype", None) not in (None, "float32"):
            return layer.compute_dtype
    return "float32"


def build_precision_twin(inference_models, build_inference_model_fn, policy):
    """A function returning inference models that compute under `policy` with current weights.

    Args:
        inference_models: list of keras.Model, the trained model(s) (one, or one per model of
            mutual learning).
        build_inference_model_fn: callable () -> a new inference model of the same structure
            (e.g. `lambda: build_flipreid_models(**model_config)[1]`), called under `policy`.
        policy: str, the Keras policy to evaluate with.

    Returns:
        callable () -> list of the models to evaluate, in the order of inference_models: the
        models themselves when they already compute at that policy's dtype, else twins built
        once under `policy` into which every call copies the current weights.
    """
    models = list(inference_models)
    target_dtype = keras.mixed_precision.Policy(policy).compute_dtype
    if all(compute_dtype_of(model) == target_dtype for model in models):
        return lambda: models
    with global_policy(policy):
        twins = [build_inference_model_fn() for _ in models]

    def current():
        for model, twin in zip(models, twins, strict=True):
            twin.set_weights(model.get_weights())
        return twins

    return current


def num_visible_gpus():
    """GPUs TensorFlow sees (0 on a CPU-only machine)."""
    return len(tf.config.list_physical_devices("GPU"))


@contextlib.contextmanager
def restored_global_policy():
    """Restores Keras' global policy on leaving the block, whatever the block set."""
    previous = keras.mixed_precision.global_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
