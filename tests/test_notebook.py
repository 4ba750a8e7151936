"""The Colab notebook runs top to bottom on a CPU in its small setting, as a user would run it."""
import os
from pathlib import Path

import pytest

from imdad_jax.data import DataNotFoundError, load_fashion_mnist
from imdad_jax.data.fashion_mnist import CLASS_NAMES, ENV_VAR

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' installs nbclient")
pytest.importorskip("ipykernel", reason="pip install -e '.[test]' installs ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "imdad_fmnist.ipynb"


def _have_fmnist() -> bool:
    # The notebook reads the real data (the same search as its own cell), not the fake fixture.
    try:
        load_fashion_mnist(None, os.environ.get(ENV_VAR))
    except DataNotFoundError:
        return False
    return True


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return data.get("text/markdown", "") + data.get("text/plain", "")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_small_setting_on_cpu(tmp_path, monkeypatch):
    if not _have_fmnist():
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist, or set "
                    f"${ENV_VAR}; CI installs it)")
    # The kernel inherits this process's environment: force the smoke setting and keep JAX off any accelerator
    # (conftest's eight fake devices are not passed on; the notebook runs on what a user's CPU has).
    monkeypatch.setenv("IMDAD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" resolves to ipykernel in this interpreter even without `ipykernel install`.
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(_text(o) for o in outputs)
    assert "smoke run" in text and "| **mean** |" in text
    for name in CLASS_NAMES:
        assert f"| {name} |" in text, name
    assert "strategy" in text and "wall" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
