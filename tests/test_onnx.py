"""ONNX model folders: export round trips, the README's recipe for a foreign VAE, and hostile folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from tests.conftest import synthetic_images
from vae_core import CheckpointError, VAEConfig, eval_inputs, iwae_bound, list_checkpoints, load_checkpoint
from vae_core import onnx_model as om
from vae_core.checkpoint import save_checkpoint
from vae_core.cli import main
from vae_core.evaluation import score, summarize
from vae_core.model import VAE
from vae_core.spec import DataSpec, RunSpec

CONFIGS = {
    "mlp": VAEConfig(arch="mlp", latent_dim=3, hidden=(32,)),
    "conv": VAEConfig(arch="conv", latent_dim=2, hidden=(4, 8)),
    "colour-logistic": VAEConfig(
        arch="conv", latent_dim=4, hidden=(4, 8), image_shape=(3, 16, 16), likelihood="logistic"
    ),
}


def _inputs(config: VAEConfig, n: int = 64):
    """Test inputs of the config's shape: synthetic digits for 1 x 28 x 28, else random 8-bit pixels."""
    if config.image_shape == (1, 28, 28):
        return eval_inputs(synthetic_images(n, seed=3), "none")
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, *config.image_shape), generator=generator).float() / 255


def _checkpoint(folder: Path, config: VAEConfig) -> Path:
    torch.manual_seed(0)
    model = VAE(config).eval()
    spec = RunSpec(data=DataSpec(binarize="none"), model=config)
    save_checkpoint(folder, model, spec=spec, metrics={}, epoch=1, step=1)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """{arch: (our checkpoint folder, its ONNX export)}, exported once through the CLI."""
    out = {}
    for arch, config in CONFIGS.items():
        root = tmp_path_factory.mktemp(arch)
        ckpt = _checkpoint(root / "ckpt", config)
        assert main(["export", str(ckpt), "--onnx", str(root / "onnx"), "--description", "a test"]) == 0
        out[arch] = ckpt, root / "onnx"
    return out


@pytest.fixture
def hostile(exported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the exported mlp folder to tamper with; creating a session then fails the test."""
    folder = tmp_path / "hostile"
    shutil.copytree(exported["mlp"][1], folder)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a session was created for a folder that should be refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    return folder


def _edit_graph(file: Path, edit) -> None:
    proto = onnx.load(file, load_external_data=False)
    edit(proto)
    file.write_bytes(proto.SerializeToString())


def _edit_manifest(folder: Path, **changes: object) -> None:
    file = folder / om.MANIFEST_FILE
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("arch", CONFIGS)
def test_export_matches_pytorch(exported: dict, arch: str) -> None:
    """The exported graphs give PyTorch's mu, logvar and logits within 1e-4, at any batch size."""
    ours, theirs = load_checkpoint(exported[arch][0]), load_checkpoint(exported[arch][1])
    assert isinstance(theirs, om.OnnxVAE)
    for n in (1, 7):
        x = torch.rand(n, *CONFIGS[arch].image_shape)
        z = torch.randn(n, CONFIGS[arch].latent_dim)
        with torch.no_grad():
            for a, b in zip(ours.encode(x), theirs.encode(x), strict=True):
                torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
            torch.testing.assert_close(theirs.decode(z), ours.decode(z), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", CONFIGS)
def test_export_gives_the_same_elbo(exported: dict, arch: str) -> None:
    """summarize on the ONNX model gives our model's ELBO within 0.05 nats (same images, same seed)."""
    ours, theirs = load_checkpoint(exported[arch][0]), load_checkpoint(exported[arch][1])
    x = _inputs(CONFIGS[arch])
    with torch.no_grad():
        a, b = summarize(ours, x, check=False), summarize(theirs, x, check=False)
    assert abs(a["elbo"] - b["elbo"]) < 0.05
    assert a["active_units"] == b["active_units"]


def test_manifest_and_card(exported: dict) -> None:
    """The manifest names the checkpoint's sizes and data; the spec built from it says the same."""
    model = load_checkpoint(exported["mlp"][1])
    manifest = json.loads((exported["mlp"][1] / om.MANIFEST_FILE).read_text())
    assert manifest["format"] == "vae-onnx" and manifest["version"] == 1
    assert manifest["image_shape"] == [1, 28, 28] and manifest["latent_dim"] == 3
    assert manifest["likelihood"] == "bernoulli" and manifest["dataset"] == "mnist"
    assert manifest["name"] == "ckpt" and manifest["description"] == "a test"
    assert len(manifest["classes"]) == 10
    assert model.meta.spec.data.name == "mnist" and model.meta.spec.data.binarize == "none"
    assert model.likelihood.name == "bernoulli"

    from explorer import meta

    card = meta.card(model)
    assert card["name"] == "ckpt" and card["description"] == "a test" and card["latent dim"] == "3"
    assert card["likelihood"] == "bernoulli"


def test_evaluate_write_beside_onnx(exported: dict, tmp_path: Path, monkeypatch) -> None:
    """evaluate --write on an ONNX folder writes evaluation.json, which the model's card then shows."""
    folder = tmp_path / "m"
    shutil.copytree(exported["mlp"][1], folder)
    graphs = {name: (folder / name).read_bytes() for name in (om.ENCODER_FILE, om.DECODER_FILE)}
    monkeypatch.setattr("vae_core.cli.load_test", lambda *a, **k: synthetic_images(32, split="test"))
    assert main(["evaluate", str(folder), "--k", "2", "--n", "16", "--write", "--json"]) == 0
    stored = json.loads((folder / om.EVALUATION_FILE).read_text())
    assert stored["n_images"] == 16 and stored["nll_k"] == 2
    assert {name: (folder / name).read_bytes() for name in graphs} == graphs
    assert load_checkpoint(folder).meta.metrics["elbo"] == stored["elbo"]


def test_list_checkpoints_lists_onnx_folders(exported: dict) -> None:
    """list_checkpoints finds ONNX folders beside our checkpoints."""
    root = exported["mlp"][1].parent
    assert list_checkpoints(root) == [root / "ckpt", root / "onnx"]


def test_folder_mtime_follows_every_file(hostile: Path) -> None:
    """The cache key of an ONNX folder changes when any of its three files does."""
    import os

    before = om.folder_mtime(hostile)
    os.utime(hostile / om.DECODER_FILE, (before + 10, before + 10))
    assert om.folder_mtime(hostile) == before + 10


# ---------------------------------------------------------------- the README's recipe, for a VAE not ours


class ExamplesVAE(nn.Module):
    """The pytorch/examples VAE: fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = torch.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))


def export_by_readme_recipe(vae: ExamplesVAE, out: Path) -> Path:
    """Write `vae` to the folder `out` exactly as the README's recipe does; the folder."""
    out.mkdir(parents=True)

    # ---- the README's recipe, verbatim
    class Encoder(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, x):  # (N, 1, 28, 28) in [0, 1] -> mu, logvar (N, 20)
            return self.vae.encode(x.flatten(1))

    class Decoder(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, z):  # (N, 20) -> Bernoulli logits (N, 1, 28, 28)
            return torch.logit(self.vae.decode(z), eps=1e-6).view(-1, 1, 28, 28)

    batch = {0: torch.export.Dim("N", min=1, max=1_000_000)}  # any batch size
    for module, example, names, outputs, file in [
        (Encoder(vae), torch.rand(2, 1, 28, 28), ["x"], ["mu", "logvar"], "encoder.onnx"),
        (Decoder(vae), torch.randn(2, 20), ["z"], ["logits"], "decoder.onnx"),
    ]:
        torch.onnx.export(module.eval(), (example,), input_names=names, output_names=outputs,
                          dynamic_shapes=(batch,), dynamo=True).save(f"{out}/{file}")  # fmt: skip
    Path(f"{out}/vae.json").write_text(
        json.dumps(
            {
                "format": "vae-onnx",
                "version": 1,
                "latent_dim": 20,
                "image_shape": [1, 28, 28],
                "likelihood": "bernoulli",
                "dataset": "mnist",
                "name": "my VAE",
            }
        )
    )
    # ---- end of the recipe
    return out


def test_readme_recipe_for_a_foreign_vae(tmp_path: Path) -> None:
    """A VAE not ours, exported exactly as the README shows, loads and is scored like ours."""
    torch.manual_seed(0)
    vae = ExamplesVAE().eval()
    out = export_by_readme_recipe(vae, tmp_path / "my-vae")

    model = load_checkpoint(out)
    x = eval_inputs(synthetic_images(8, seed=5), "none")
    with torch.no_grad():
        mu, logvar = model.encode(x)
        ref_mu, ref_logvar = vae.encode(x.flatten(1))
        torch.testing.assert_close(mu, ref_mu, atol=1e-4, rtol=0)
        torch.testing.assert_close(logvar, ref_logvar, atol=1e-4, rtol=0)
        probs = model.likelihood.mean(model.decode(mu)).flatten(1)
        torch.testing.assert_close(probs, vae.decode(ref_mu), atol=1e-4, rtol=0)
        bound = iwae_bound(model, x, k=4)
        scores = score(model, x)
    assert bound.shape == (8,) and torch.isfinite(bound).all()
    assert torch.isfinite(scores.elbo).all() and (scores.kl >= 0).all()
    assert model.config.latent_dim == 20 and model.meta.spec.data.name == "mnist"


def test_unknown_dataset_is_named_unknown(exported: dict, tmp_path: Path) -> None:
    """A manifest without a dataset gives a spec whose data is 'unknown', not binarised."""
    folder = tmp_path / "m"
    shutil.copytree(exported["mlp"][1], folder)
    manifest = json.loads((folder / om.MANIFEST_FILE).read_text())
    del manifest["dataset"]
    (folder / om.MANIFEST_FILE).write_text(json.dumps(manifest))
    spec = load_checkpoint(folder).meta.spec
    assert (spec.data.name, spec.data.binarize) == ("unknown", "none")


# ---------------------------------------------------------------- hostile folders: refused, nothing runs


def _refused(folder: Path, *words: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(folder)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    assert caught.value.path is not None
    return caught.value


def test_external_data_refused(hostile: Path) -> None:
    """A weight whose data lives in an external file (here outside the folder) is refused unread."""

    def point_outside(proto) -> None:
        tensor = proto.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../../../etc/passwd"

    _edit_graph(hostile / om.ENCODER_FILE, point_outside)
    _refused(hostile, "external", "../../../../etc/passwd")


def test_custom_operator_refused(hostile: Path) -> None:
    """A node of a non-standard domain (a custom operator) is refused."""

    def add_custom(proto) -> None:
        proto.graph.node[0].domain = "com.evil"
        proto.opset_import.add(domain="com.evil", version=1)

    _edit_graph(hostile / om.DECODER_FILE, add_custom)
    _refused(hostile, "com.evil", "custom operators are refused")


def test_custom_domain_import_refused(hostile: Path) -> None:
    """Importing a non-standard operator domain is refused even if no node uses it."""
    _edit_graph(hostile / om.DECODER_FILE, lambda proto: proto.opset_import.add(domain="com.evil", version=1))
    _refused(hostile, "com.evil")


def test_large_file_refused(hostile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph file above the size limit is refused before it is read."""
    monkeypatch.setattr(om, "MAX_ONNX_BYTES", 1000)
    _refused(hostile, "encoder.onnx", "more than")


def test_truncated_protobuf_refused(hostile: Path) -> None:
    """A graph file cut short is refused with a message saying it is damaged or truncated."""
    file = hostile / om.DECODER_FILE
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    _refused(hostile, "decoder.onnx", "truncated")


def test_wrong_latent_size_refused(hostile: Path) -> None:
    """A manifest whose latent size is not the graphs' is refused, naming the output and shapes."""
    _edit_manifest(hostile, latent_dim=4)
    _refused(hostile, "mu", "(N, 3)", "(N, 4)")


def test_wrong_image_shape_refused(hostile: Path) -> None:
    """A manifest whose image shape is not the graphs' is refused, naming the input."""
    _edit_manifest(hostile, image_shape=[1, 32, 32])
    _refused(hostile, "input x", "(N, 1, 32, 32)")


def test_wrong_output_name_refused(hostile: Path) -> None:
    """A decoder output named other than the likelihood's ('logits') is refused, naming both."""

    def rename(proto) -> None:
        old = proto.graph.output[0].name
        proto.graph.output[0].name = "probs"
        for node in proto.graph.node:
            node.output[:] = ["probs" if o == old else o for o in node.output]

    _edit_graph(hostile / om.DECODER_FILE, rename)
    _refused(hostile, "['probs']", "['logits']")


def test_fixed_batch_refused(hostile: Path) -> None:
    """A graph with a fixed batch size is refused: the pages decode batches of any size."""

    def fix(proto) -> None:
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1

    _edit_graph(hostile / om.DECODER_FILE, fix)
    _refused(hostile, "fixed batch size 1")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", ("not valid JSON",)),
        ('["a list"]', ("JSON object",)),
        (json.dumps({"format": "vae-onnx", "version": 2}), ("version 2",)),
        (json.dumps({"format": "keras", "version": 1}), ("format must be 'vae-onnx'",)),
    ],
)
def test_bad_manifest_refused(hostile: Path, text: str, words: tuple[str, ...]) -> None:
    """A manifest that is not JSON, not an object, or of an unknown format or version is refused."""
    (hostile / om.MANIFEST_FILE).write_text(text)
    _refused(hostile, *words)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"image_shape": [1, 100_000, 100_000]}, ("out of range",)),
        ({"image_shape": [1, 28]}, ("[channels, height, width]",)),
        ({"latent_dim": 10**9}, ("latent_dim must be a whole number from 1 to 512",)),
        ({"likelihood": "laplace"}, ("likelihood must be one of",)),
        ({"extra": 1}, ("unknown keys ['extra']",)),
    ],
)
def test_absurd_manifest_refused(hostile: Path, changes: dict, words: tuple[str, ...]) -> None:
    """Sizes out of range, unknown likelihoods and unknown keys are refused, naming the value."""
    _edit_manifest(hostile, **changes)
    _refused(hostile, *words)


def test_manifest_over_budget_refused(hostile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images whose batch would not fit the operator's memory budget are refused."""
    monkeypatch.setenv("VAE_MEMORY_BUDGET_GB", "0.01")
    _edit_manifest(hostile, image_shape=[4, 1024, 1024])
    _refused(hostile, "memory budget")


# ---------------------------------------------------------------- the app, on an exported model

APP_PAGES = [None, *(f"pages/{p}" for p in ("1_Latent_grid.py", "2_Sliders.py", "3_Interpolate.py"))]
APP_PAGES += [f"pages/{p}" for p in ("4_Compare.py", "5_Atlas.py", "6_Encode.py")]
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "mnist-2d"


@pytest.fixture(scope="module")
def onnx_2d(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The shipped mnist-2d, exported as an ONNX folder outside the project."""
    if not (SHIPPED / "model.pt").is_file():
        pytest.skip("the shipped checkpoint mnist-2d is not there")
    out = tmp_path_factory.mktemp("app") / "mnist-2d-onnx"
    assert main(["export", str(SHIPPED), "--onnx", str(out)]) == 0
    return str(out)


@pytest.mark.parametrize("page", APP_PAGES)
def test_every_page_renders_an_onnx_model(onnx_2d: str, page: str | None, monkeypatch, tmp_path) -> None:
    """Every explorer page renders the exported mnist-2d without an exception or an error."""
    from streamlit.testing.v1 import AppTest

    from vae_core import projection as pj

    # the Atlas page starts UMAP's numba warm-up in a thread: not in this test (test_atlas_page does so)
    monkeypatch.setattr(pj, "warm_up_umap", lambda: type("Done", (), {"is_alive": lambda self: False})())
    monkeypatch.setenv("VAE_CHECKPOINT", onnx_2d)
    monkeypatch.setenv("VAE_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(str(SHIPPED.parent.parent / "app.py"), default_timeout=120)
    at.query_params["ckpt"] = onnx_2d
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.sidebar.selectbox(key="_ckpt_widget").value == onnx_2d
