"""Images as tokens (docs/images.md): the DUO cosine schedule, the UNet and its discretised-logistic output, class
conditioning with classifier-free guidance on the existing methods and samplers, the image data (digits, a
CIFAR-10 stand-in archive), random flips, FID / IS (the classifier's, and Inception's loading offline), the table,
the figure and the config checks."""

import io
import json
import math
import pickle
import sys
import tarfile

import numpy as np
import pytest
import torch

from dlm.diffusion.schedules import get_schedule
from dlm.models.unet import UNet, UNetConfig, discretized_logistic_logits

DIGITS_MODEL = {"backbone": "unet", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_scale": 1,
                "dropout": 0.0, "class_conditional": True, "class_dropout": 0.1}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from dlm.data.images import write_image_data

    out = tmp_path_factory.mktemp("digits") / "data"
    write_image_data({"kind": "digits", "valid_fraction": 0.2, "split_seed": 0, "hflip": True}, out)
    return str(out)


def image_method(digits, algo, **model):
    from dlm.train import build_module

    torch.manual_seed(0)
    return build_module(digits, {"algo": algo, "model": {**DIGITS_MODEL, **model},
                                 "noise": {"schedule": "duo_cosine"}}).method.eval()


# --- schedule --------------------------------------------------------------------------------------------------

def test_duo_cosine_schedule_is_the_originals_formula():
    eps = 1e-3
    s = get_schedule("duo_cosine", eps)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    u = math.pi * (1 - eps) * t / 2
    assert torch.allclose(s.alpha(t), 1 - torch.sin(u), atol=1e-12)  # trainer_base.Cosine: 1 - cos(pi/2 (1 - t'))
    assert float(s.alpha(torch.tensor(0.0, dtype=torch.float64))) == 1.0
    assert math.isclose(float(s.alpha(torch.tensor(1.0, dtype=torch.float64))), 1 - math.cos(math.pi * eps / 2),
                        rel_tol=1e-9)
    # exact derivative (finite differences) and the NELBO weight (1 - eps)(pi/2) cot(u)
    h = 1e-6
    tt = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    fd = (s.alpha(tt + h) - s.alpha(tt - h)) / (2 * h)
    assert torch.allclose(s.dalpha(tt), fd, rtol=1e-6)
    uu = math.pi * (1 - eps) * tt / 2
    assert torch.allclose(-s.dalpha(tt) / (1 - s.alpha(tt)), (1 - eps) * math.pi / 2 / torch.tan(uu), rtol=1e-9)
    # not MDLM's cosine (eps + (1 - eps) cos(pi t / 2))
    half = torch.tensor(0.5, dtype=torch.float64)
    assert abs(float(s.alpha(half)) - 0.2934) < 1e-3 and abs(float(get_schedule("cosine", eps).alpha(half)) - 0.7072) < 1e-3
    # float32 near t = 1: no cancellation (alpha_1 ~ 1.2e-6 to 1e-3 relative)
    a1 = float(s.alpha(torch.tensor(1.0)))
    assert abs(a1 - (1 - math.cos(math.pi * eps / 2))) < 1e-3 * a1


# --- UNet ------------------------------------------------------------------------------------------------------

def test_unet_cifar_config_has_the_originals_size_and_shapes():
    """ch 128, ch_mult [1, 2, 2, 2], 2 res blocks, attention at 16x16: 35,755,398 parameters, the count of
    s-sahoo/duo models/unet.py with configs/model/unet.yaml (checked against the original module, its weights
    copied, probabilities equal to 1e-7)."""
    net = UNet(UNetConfig(vocab_size=256, num_classes=10))
    assert net.num_params() == 35_755_398
    attn = [m for m in net.modules() if type(m).__name__ == "AttnBlock"]
    assert len(attn) == 2 + 3 + 1  # 2 down and 3 up blocks at level 1 (16 x 16), 1 in the middle
    small = UNet(UNetConfig(vocab_size=257, ch=32, ch_mult=(1, 2)))  # CIFAR-sized input, MDLM's K, a small body
    out = small(torch.randint(0, 257, (1, 3072)), torch.rand(1))
    assert out.shape == (1, 3072, 257) and torch.isfinite(out).all()


def test_unet_output_keeps_the_c_h_w_order_of_the_input():
    """With the body's output zeroed, mu = tanh(centred input) and the scale is fixed: the most likely bin at
    sequence position i follows the input token at position i (no transposition between input and output)."""
    torch.manual_seed(0)
    K = 17
    net = UNet(UNetConfig(vocab_size=K, channels=3, height=8, width=8, ch=32, ch_mult=(1, 2)))
    with torch.no_grad():
        net.out_conv.weight.zero_()
        net.out_conv.bias.zero_()
    x = torch.randint(0, K, (2, 3 * 64))
    logits = net(x, torch.zeros(2))  # (2, 192, K)
    mu = torch.tanh(x.float() / K * 2 - 1)
    expected = ((mu + 1) / (2 / K)).floor().clamp(0, K - 1).long()
    assert torch.equal(logits.argmax(-1), expected)


def test_discretized_logistic_is_the_truncated_logistic():
    mu = torch.tensor([-0.5, 0.0, 0.7], dtype=torch.float64)
    log_scale = torch.tensor([-1.0, 0.0, 1.5], dtype=torch.float64)
    logits = discretized_logistic_logits(mu, log_scale, 256)
    s = torch.exp(log_scale - 2)
    inside = torch.sigmoid((1 - mu) / s) - torch.sigmoid((-1 - mu) / s)  # mass on [-1, 1]
    # each bin: log(sigmoid(r) - sigmoid(l)) up to the original's 1e-6 guard inside log1p
    assert torch.allclose(torch.logsumexp(logits, -1), torch.log(inside), atol=1e-3)
    k = 100
    c = -1 + 2 / 256 * (k + 0.5)
    right = torch.sigmoid((c + 1 / 256 - mu) / s)
    exact = right - torch.sigmoid((c - 1 / 256 - mu) / s)
    assert torch.allclose(logits[:, k].exp(), exact + 1e-6 * right, rtol=1e-9)  # the guard adds 1e-6 cdf(right)
    fixed = discretized_logistic_logits(mu, log_scale, 256, fix=True)
    assert (fixed <= logits + 1e-12).all()


def test_unet_class_labels_and_no_class():
    torch.manual_seed(0)
    net = UNet(UNetConfig(vocab_size=17, channels=1, height=8, width=8, ch=32, ch_mult=(1, 2), num_classes=10)).eval()
    x, s = torch.randint(0, 17, (4, 64)), torch.rand(4)
    none = net(x, s)
    assert torch.equal(none, net(x, s, torch.full((4,), 10)))  # no label = the "no class" row
    assert not torch.allclose(none, net(x, s, torch.arange(4)))
    net.class_labels = torch.arange(4)  # set by Method.class_conditioned
    assert torch.equal(net(x, s), net(x, s, torch.arange(4)))
    with pytest.raises(ValueError, match="shape"):
        net(x, s, torch.arange(3))


def test_backbone_choice_errors_are_clear():
    from dlm.models.backbone import build_backbone

    with pytest.raises(ValueError, match="needs image data"):
        build_backbone({"backbone": "unet"}, 17, 64)
    with pytest.raises(ValueError, match="DiT takes no class labels"):
        build_backbone({"backbone": "dit", "class_conditional": True}, 17, 64)
    with pytest.raises(ValueError, match="GroupNorm"):
        UNetConfig(17, 1, 8, 8, ch=48, ch_mult=(1, 2))


# --- methods on the UNet: labels, dropout, guidance --------------------------------------------------------------

def test_methods_train_on_images_with_label_dropout(digits):
    from dlm.data.images import ImageDataset

    ds = ImageDataset(digits, "train")
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask", "labels")}
    for algo, K in (("mdlm", 18), ("udlm", 17)):
        m = image_method(digits, algo)
        assert m.hparams.vocab_size == K and m.num_classes == 10
        total, n = m.nelbo(batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(total) and int(n) == 8 * 64
        again, _ = m.nelbo(batch, torch.Generator().manual_seed(0))
        assert float(total.detach()) == float(again.detach())  # the label dropout is drawn from the generator too
    labels = torch.arange(10).repeat(2000)
    dropped = m.training_labels(labels, torch.Generator().manual_seed(1))
    rate = float((dropped == 10).double().mean())
    assert abs(rate - 0.1) < 0.01 and torch.equal(dropped[dropped != 10], labels[dropped != 10])


def test_guidance_mixes_conditional_and_unconditional_x_theta(digits):
    m = image_method(digits, "udlm")
    z, t = torch.randint(0, 17, (3, 64)), torch.rand(3)
    lab, none = torch.tensor([1, 2, 3]), torch.full((3,), 10)
    with m.class_conditioned(lab, 1.0):
        cond = m.denoise(z, t)
        assert m.calls_per_denoise == 1
    with m.class_conditioned(none, 1.0):
        unc = m.denoise(z, t)
    with m.class_conditioned(lab, 0.0):
        assert torch.allclose(m.denoise(z, t), unc)
    with m.class_conditioned(lab, 2.0):
        guided = m.denoise(z, t)
        assert m.calls_per_denoise == 2
    mix = 2 * cond - unc
    assert torch.allclose(guided, mix - torch.logsumexp(mix, -1, keepdim=True), atol=1e-5)
    assert torch.allclose(guided.exp().sum(-1), torch.ones(3, 64), atol=1e-5)
    assert m.backbone.class_labels is None and m.guidance == 1.0  # the context restores the state


PSI_PC = {"time_profile": "linear", "modes": ["pure-posterior", "constant", "pure-posterior"], "high_frac": 0.5,
          "middle_frac": 0.4}  # DUO's scripts/psi_samplers/cifar10/*_psi_pc.sh


@pytest.mark.parametrize("algo,ancestral,kappa", [("udlm", "duo_ancestral", 0.95), ("mdlm", "mdlm_ancestral", 0.99)])
def test_samplers_draw_labelled_images(digits, algo, ancestral, kappa):
    from dlm.sampling import run_sampler

    m = image_method(digits, algo)
    lab = torch.arange(6) % 10
    a = run_sampler(m, ancestral, 6, 4, torch.Generator().manual_seed(0), labels=lab)
    b = run_sampler(m, ancestral, 6, 4, torch.Generator().manual_seed(0), labels=lab)
    psi = run_sampler(m, "psi", 6, 4, torch.Generator().manual_seed(0), settings={**PSI_PC, "kappa": kappa}, labels=lab)
    for out in (a, psi):
        assert out["tokens"].shape == (6, 64) and out["tokens"].min() >= 0
        assert out["tokens"].max() < 17  # grey levels only, no [MASK] left
    assert torch.equal(a["tokens"], b["tokens"])  # seeded
    g = run_sampler(m, ancestral, 6, 4, torch.Generator().manual_seed(0), labels=lab, guidance=0.5)
    assert g["nfe"] == 2 * a["nfe"]  # two network calls per step under guidance


# --- data -------------------------------------------------------------------------------------------------------

def test_digits_data_is_stratified_and_in_c_h_w_order(digits):
    from sklearn.datasets import load_digits

    from dlm.data.dataset import read_meta, verify_packed
    from dlm.data.images import read_split

    meta = read_meta(digits)
    verify_packed(digits, ("train", "valid"))
    assert (meta["levels"], meta["channels"], meta["height"], meta["width"], meta["num_classes"]) == (17, 1, 8, 8, 10)
    assert meta["splits"]["train"]["num_images"] + meta["splits"]["valid"]["num_images"] == 1797
    assert meta["splits"]["valid"]["num_images"] == 360
    counts = np.array(meta["splits"]["valid"]["class_counts"])
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    images, labels = read_split(digits, "train")
    sk = load_digits()
    rows = {tuple(im.reshape(-1)) for im in sk.images.astype(np.uint8)}
    assert all(tuple(im.reshape(-1)) in rows for im in images[:50])
    ids = np.load(f"{digits}/train.npy")
    assert np.array_equal(ids[0], images[0].reshape(-1))


def test_cifar10_reader_on_a_stand_in_archive(tmp_path):
    from dlm.data.images import CIFAR10_URL, load_cifar10, write_image_data

    rng = np.random.default_rng(0)
    path = tmp_path / "cifar-10-python.tar.gz"
    raw = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
            raw[name] = data
            blob = pickle.dumps({b"data": data, b"labels": [1, 7]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    d = load_cifar10(path, md5=None)
    assert d["train"][0].shape == (10, 3, 32, 32) and d["valid"][0].shape == (2, 3, 32, 32)
    assert np.array_equal(d["train"][0][0, 0, 0], raw["data_batch_1"][0, :32])  # red plane, first row
    assert np.array_equal(d["train"][0][0, 1, 0], raw["data_batch_1"][0, 1024:1056])  # then green
    assert list(d["train"][1]) == [1, 7] * 5
    meta = write_image_data({"kind": "cifar10", "path": str(path), "md5": None, "hflip": True}, tmp_path / "data")
    assert (meta["levels"], meta["block_length"], meta["hflip"]) == (256, 3072, True)
    with pytest.raises(ValueError, match="md5"):
        load_cifar10(path)
    with pytest.raises(FileNotFoundError, match=CIFAR10_URL.replace(".", r"\.")):
        load_cifar10(tmp_path / "missing.tar.gz")


def test_random_flips_are_seeded_resumable_and_fair(digits):
    from dlm.data.dataset import TrainOrder
    from dlm.data.images import FlipOrder, ImageDataset

    ds = ImageDataset(digits, "train")
    n = len(ds)
    flipped = ds[n + 3]["input_ids"].view(8, 8)
    assert torch.equal(flipped, ds[3]["input_ids"].view(8, 8).flip(-1))

    def take(start, count):
        it = iter(FlipOrder(TrainOrder(n, 16, seed=5, start_batch=start), seed=5))
        return [next(it) for _ in range(count)]

    full = take(0, 16 * 40)
    assert take(10, 16 * 30) == full[16 * 10:]  # a resumed run flips what an uninterrupted one does
    share = np.mean([i >= n for i in full])
    assert 0.4 < share < 0.6 and full == take(0, 16 * 40)
    it = iter(TrainOrder(n, 16, seed=5))
    assert [i % n for i in full] == [next(it) for _ in full]  # flips change no image of the order


# --- metrics ----------------------------------------------------------------------------------------------------

def test_classifier_fid_floor_and_shuffled_pixels(digits):
    """The metric is checked: held-out digits against the training digits score near the floor, the same images
    with shuffled pixels far above; the classifier reads held-out digits well."""
    from dlm.data.images import read_split
    from dlm.evaluation.classifier import FeatureView, train_classifier
    from dlm.evaluation.fid import ImageScorer, shuffled_pixels

    train, valid = read_split(digits, "train"), read_split(digits, "valid")
    clf, report = train_classifier(train, valid, 17, {"epochs": 5})
    assert report["heldout_accuracy"] > 0.9
    sc = ImageScorer(FeatureView(clf), FeatureView(clf, "logits"))
    sc.add_reference(train[0])
    held = sc.score(valid[0])
    shuffled = sc.score(shuffled_pixels(valid[0]))
    assert held["fid"] < 20 and shuffled["fid"] > 10 * held["fid"], (held, shuffled)
    assert held["is_mean"] > shuffled["is_mean"] + 2
    assert sc.score(train[0])["fid"] < 1e-6  # the reference against itself
    # the reference statistics travel to another scorer (the score jobs load them) and give the same FID
    other = ImageScorer(FeatureView(clf), FeatureView(clf, "logits"))
    other.load_reference_state(sc.reference_state())
    assert other.score(valid[0]) == held  # IS too: its split shuffle is seeded


class StandIn(torch.nn.Module):
    """A tiny stand-in for Inception: uint8 RGB images -> 8 features (fixed random conv)."""

    def __init__(self, out=8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, out, 5, stride=4)
        self.num_features = out

    @torch.no_grad()
    def forward(self, x):
        return self.conv(x.float() / 255).mean((2, 3)).double()


def test_scorer_runs_duo_protocol_on_a_stand_in_extractor():
    from dlm.evaluation.fid import ImageScorer

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    sc = ImageScorer(StandIn(), StandIn(10), batch_size=10)
    sc.add_reference(real)
    assert int(sc.reference_state()["real_features_num_samples"]) == 64
    same, dark = sc.score(real), sc.score(real // 4)
    assert same["fid"] < 1e-6 < dark["fid"] and same["num_images"] == 64 and "is_mean" in same
    with pytest.raises(ValueError, match="uint8"):
        sc.score(real.astype(np.float32))


def test_inception_loading_offline_says_what_to_download(tmp_path, monkeypatch):
    from dlm.evaluation import fid

    missing = tmp_path / "hub" / "checkpoints" / fid.INCEPTION_FILE
    with pytest.raises(FileNotFoundError) as e:
        fid.inception_extractors(missing)
    msg = str(e.value)
    assert "\n" not in msg and fid.INCEPTION_URL in msg and str(missing) in msg
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert fid.default_inception_path() == missing
    missing.parent.mkdir(parents=True)  # where torch-fidelity looks before downloading
    missing.write_bytes(b"stand-in weights")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as where torch-fidelity (or torchvision) cannot load
    with pytest.raises(ImportError) as e:
        fid.inception_extractors()
    assert "\n" not in str(e.value) and ".[images]" in str(e.value)


# --- sample files, table, figure, config ------------------------------------------------------------------------

def test_image_samples_scores_table_and_grid(digits, tmp_path):
    from dlm.evaluation.classifier import save_classifier, train_classifier
    from dlm.evaluation.image_scores import write_reference, write_scores
    from dlm.data.images import read_split
    from dlm.report.images import images_grid, images_table
    from dlm.sample_images import generate_images, read_samples
    from dlm.train import build_module

    lit = build_module(digits, {"algo": "udlm", "model": DIGITS_MODEL, "noise": {"schedule": "duo_cosine"}})
    ckpt = tmp_path / "final.ckpt"
    torch.save({"hyper_parameters": {"method": dict(lit.hparams.method)},
                "state_dict": {f"method.{k}": v for k, v in lit.method.state_dict().items()}}, ckpt)
    files = {}
    for cond in ("class", "none"):
        files[cond] = str(tmp_path / f"duo_ancestral_{cond}.npz")
        rec = generate_images(str(ckpt), digits, "duo_ancestral", 4, 0, cond, files[cond], labels_from="valid",
                              num_samples=30, batch_size=16, run="duo", device="cpu")
        assert rec["num_images"] == 30 and rec["nfe"] == 5
    images, labels, rec = read_samples(files["class"])
    assert images.shape == (30, 1, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(labels, read_split(digits, "valid")[1][:30])
    assert (read_samples(files["none"])[1] == -1).all() and rec["guidance"] == 1.0
    clf, report = train_classifier(read_split(digits, "train"), read_split(digits, "valid"), 17, {"epochs": 2})
    report["input_hw"] = [8, 8]
    save_classifier(clf, report, tmp_path / "clf.pt")
    ref = write_reference(digits, "classifier", str(tmp_path / "ref.pt"), str(tmp_path / "ref.json"),
                          classifier_path=str(tmp_path / "clf.pt"), classifier_report=report, batch_size=100)
    assert ref["rows"]["shuffled"]["fid"] > ref["rows"]["heldout"]["fid"]
    scores = []
    for cond, path in files.items():
        out = str(tmp_path / f"{cond}.json")
        s = write_scores(path, str(tmp_path / "ref.pt"), "classifier", out, classifier_path=str(tmp_path / "clf.pt"),
                         classifier_report=report, batch_size=100)
        assert ("label_accuracy" in s) == (cond == "class") and math.isfinite(s["fid"])
        scores.append(out)
    df = images_table(str(tmp_path / "ref.json"), scores, tmp_path / "images")
    assert list(df["method"])[:2] == ["data", "data"] and len(df) == 4
    md, tex = (tmp_path / "images.md").read_text(), (tmp_path / "images.tex").read_text()
    assert "not Inception" in md and "NOT Inception" in tex and "\\toprule" in tex
    # paper values (a dataset and table of their own) appear beside ours when the file has them
    pv = tmp_path / "paper.yaml"
    pv.write_text(json.dumps({"tolerance": {"fid": {"relative": 0.1}, "is": {"relative": 0.1}},
                              "values": [{"dataset": "digits", "table": "images", "run": "duo", "metric": "fid",
                                          "value": 10.0, "source": "test", "sampler": "duo_ancestral"}]}))
    df = images_table(str(tmp_path / "ref.json"), scores, tmp_path / "images_p", dataset="digits",
                      paper_values_path=str(pv))
    assert (df["paper_fid"] == 10.0).sum() == 2
    images_grid(list(files.values()), read_split(digits, "valid"), tmp_path / "grid", levels=17)
    assert (tmp_path / "grid.png").stat().st_size > 1000 and (tmp_path / "grid.pdf").exists()


def test_image_config_checks():
    from dlm.config import _image_checks

    base = {"runs": {"duo": {"algo": "udlm"}},
            "sampling": {"plan": [{"run": "duo", "sampler": "duo_ancestral", "steps": [4]}]}}
    assert _image_checks(base) == []
    bad = {**base, "sampling": {"plan": [{"run": "nope", "sampler": "duo_ancestral", "steps": [4]},
                                         {"run": "duo", "sampler": "mdlm_ancestral", "steps": [4]}]}}
    problems = _image_checks(bad)
    assert len(problems) == 2 and "images.sampling.plan.0.run" in problems[0] and "does not apply" in problems[1]
    uncond = {**base, "train_defaults": {"model": {"class_conditional": False}}}
    assert "not class-conditional" in _image_checks(uncond)[0]
    assert "needs the path" in _image_checks({"dataset": {"kind": "cifar10"}})[0]


def test_cifar10_paper_config_plans_duos_experiment(tmp_path):
    """config/paper/cifar10.yaml layered on the default: the `images` target plans DUO's CIFAR-10 experiment (two
    UNet runs, 64-step ancestral and 256-step Psi samplers, Inception FID) and nothing of the text DAG."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "-n", "--cores", "2",
                          "--configfile", str(root / "config" / "config.yaml"), str(root / "config/paper/cifar10.yaml"),
                          "--directory", str(tmp_path), "images"], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stats = res.stdout.split("Job stats:")[-1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["images_train"] == 2 and counts["images_sample"] == 10 and counts["images_score"] == 10
    assert "images_classifier" not in counts and "train" not in counts  # Inception features; no text job
    assert "results/images/cifar10/samples/duo/duo_ancestral_class_T64_s1.npz" in res.stdout
