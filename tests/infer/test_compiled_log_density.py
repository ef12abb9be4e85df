"""The compiled log-density against eager, across processes that run torch's
kernels for different vector instruction sets and share Inductor's cache.

A user (or CI) may run pyrovae under the default kernels and later under
``ATEN_CPU_CAPABILITY=avx2`` on the same machine. Inductor's FX graph cache
does not key on that choice, so a graph compiled in the first process and
served to the second gives wrong log-likelihoods (or corrupts the heap);
``LogDensity`` compiles with that cache off (``weights.COMPILE_OPTIONS``).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

#: the script each process runs: IS log-likelihoods of a small VAE, compiled and eager, same seed
SCRIPT = r"""
import json, torch, pyro
torch.set_num_threads(1)
pyro.enable_validation(True)
from pyrovae import VAE, log_likelihood
torch.manual_seed(0)
vae = VAE.from_config({"latent_dim": 4, "encoder": {"name": "mlp", "hidden": [16]},
                       "decoder": {"name": "mlp", "hidden": [16]}}, data_shape=(16,))
x = (torch.rand(10, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
eager = log_likelihood(vae, x, 8, seed=0, compile=False)
compiled = log_likelihood(vae, x, 8, seed=0, compile=True)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "eager": eager.tolist(), "compiled": compiled.tolist()}))
"""


def run_in_process(capability, cache_dir):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the process under {capability or 'default'} kernels failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    "AVX512" not in torch.backends.cpu.get_cpu_capability(),
    reason="one vector instruction set only on this CPU (no AVX-512): nothing to mix in the cache",
)
def test_compiled_log_likelihood_is_right_after_another_instruction_set_filled_the_cache(tmp_path):
    first = run_in_process(None, tmp_path)
    second = run_in_process("avx2", tmp_path)
    assert first["capability"] != second["capability"]
    for result in (first, second):
        eager, compiled = torch.tensor(result["eager"]), torch.tensor(result["compiled"])
        assert bool((eager < 0).all()), "a log-likelihood of binary data is negative"
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-4,
                                   msg=lambda m: f"under {result['capability']}: {m}")
