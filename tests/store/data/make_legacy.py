"""Write the fixture legacy_v1.zip with corrflow as of commit 73a9915 (the store and checkpoint format before
issue 17):

    git archive 73a9915 corrflow | tar -x -C /tmp/oldcf
    PYTHONPATH=/tmp/oldcf python make_legacy.py OUT && (cd OUT && zip -r -X legacy_v1.zip legacy.zarr legacy.zarr.locks legacy_flow)
"""
import sys
from pathlib import Path

import jax

import corrflow
from corrflow.flows import make_flow
from corrflow.flows.train import TrainConfig, save_checkpoint
from corrflow.pipeline import generate_to_store, measure_stored
from corrflow.store import open_store

out = Path(sys.argv[1])
THEORY = corrflow.make_theory("u1", (4, 4), beta=2.0)
CONFIG = corrflow.HMCConfig(0.2, 5, "omelyan", jitter=0.0)  # fixed lengths, as the legacy store was written
st = open_store(out / "legacy.zarr", "a")
generate_to_store(st, "base", THEORY, CONFIG, n_traj=4, n_chains=2, seed=7, n_therm=3, thin=3, block_size=3)
measure_stored(st, "base", ["wilson_1x1"])


class Stop(Exception):
    pass


def stop(done, total, stats):
    raise Stop


try:  # interrupted during thermalisation (one checkpoint committed)
    generate_to_store(st, "t1", THEORY, CONFIG, n_traj=7, n_chains=2, seed=11, n_therm=4, thin=1, block_size=3,
                      progress=stop)
except Stop:
    pass
st.write_analysis("continuum_limit", {"title": "Continuum limit", "summary": ["old"]},
                  figures={"fig.png": b"\x89PNG\r\n\x1a\nold"})
flow = make_flow("u1", (4, 4))
p = 0.01 * jax.random.normal(jax.random.PRNGKey(0), flow.param_shape)
save_checkpoint(out / "legacy_flow", flow, p, THEORY, THEORY.replace(beta=2.1), TrainConfig(epochs=3), 3,
                [{"epoch": 0, "loss": 1.0, "ess": 0.5}])
print(corrflow.store.__file__)
