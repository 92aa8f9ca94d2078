"""Discrete units: quality measures on hand cases, centroid files (round trip, strict refusal),
assignment, k-means on separable data, unit files, ``cpc-speech quantize``."""

import json

import numpy as np
import pytest

from cpc_speech.cli import main
from cpc_speech.evaluation.units import (
    UnitsError,
    assign_units,
    load_centroids,
    quantize,
    run_length,
    save_centroids,
    unit_quality,
    write_units,
)


def test_quality_hand_cases():
    lab = {"u": np.array([0, 0, 1, 1])}
    same = unit_quality({"u": np.array([3, 3, 1, 1])}, lab, 4)
    assert same["pnmi"] == pytest.approx(1.0) and same["purity"] == 1.0 and same["unit_purity"] == 1.0
    assert same["used_units"] == 2 and same["entropy_bits"] == pytest.approx(1.0) and same["perplexity"] == pytest.approx(2.0)
    collapsed = unit_quality({"u": np.array([2, 2, 2, 2])}, lab, 4)
    assert collapsed["pnmi"] == 0.0 and collapsed["max_unit_share"] == 1.0 and collapsed["used_units"] == 1
    assert collapsed["entropy_bits"] == 0.0 and collapsed["purity"] == 0.5
    independent = unit_quality({"u": np.array([0, 1, 0, 1])}, lab, 2)
    assert abs(independent["pnmi"]) < 1e-12 and independent["purity"] == 0.5
    # 3 phones, 2 units: I = H(phone) - H(phone | unit) = 1.5 - 0.5 = 1 bit; PNMI = 1 / 1.5
    part = unit_quality({"u": np.array([0, 0, 1, 1])}, {"u": np.array([0, 0, 1, 2])}, 2)
    assert part["pnmi"] == pytest.approx(1 / 1.5) and part["purity"] == pytest.approx(0.75)


def test_centroid_files_round_trip_and_refusal(tmp_path):
    c = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    save_centroids(tmp_path / "k", c, {"seed": 1})
    got, meta = load_centroids(tmp_path / "k", dim=3)
    assert np.array_equal(got, c) and meta["units"] == 5 and meta["dim"] == 3 and meta["seed"] == 1
    with pytest.raises(UnitsError, match="dimension 3 cannot quantise features of dimension 4"):
        load_centroids(tmp_path / "k", dim=4)
    meta["format_version"] = 99
    (tmp_path / "k" / "kmeans.json").write_text(json.dumps(meta))
    with pytest.raises(UnitsError, match="format_version 99"):
        load_centroids(tmp_path / "k")
    meta["format_version"], meta["units"] = 1, 6
    (tmp_path / "k" / "kmeans.json").write_text(json.dumps(meta))
    with pytest.raises(UnitsError, match=r"shape \(5, 3\)"):
        load_centroids(tmp_path / "k")
    np.save(tmp_path / "k" / "centroids.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnitsError, match="cannot read"):
        load_centroids(tmp_path / "k")


def test_assignment_and_unit_files(tmp_path):
    rng = np.random.default_rng(1)
    c, x = rng.standard_normal((7, 4)).astype(np.float32), rng.standard_normal((300, 4)).astype(np.float32)
    want = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(assign_units(x, c, chunk=64), want)
    u = np.array([4, 4, 4, 1, 2, 2])
    assert run_length(u).tolist() == [[4, 3], [1, 1], [2, 2]]
    assert write_units(tmp_path, {"a": u}, "text", runs=True).read_text() == "a 4:3 1:1 2:2\n"
    assert write_units(tmp_path, {"a": u}, "text").read_text() == "a 4 4 4 1 2 2\n"
    folder = write_units(tmp_path, {"a": u}, "npy")
    assert np.load(folder / "a.npy", allow_pickle=False).tolist() == u.tolist()


def clustered(n_utts=12, frames=40, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((3, dim)) * 6
    feats, labels = {}, {}
    for i in range(n_utts):
        lab = np.repeat(rng.integers(0, 3, frames // 5), 5)
        feats[f"u{i}"] = (means[lab] + rng.standard_normal((lab.size, dim))).astype(np.float32)
        labels[f"u{i}"] = lab
    return feats, labels


def test_quantize_separable_clusters_is_seeded(tmp_path):
    feats, labels = clustered()
    a = quantize(feats, 3, tmp_path / "a", seed=5, labels=labels, log=lambda m: None)
    quantize(feats, 3, tmp_path / "b", seed=5, labels=labels, log=lambda m: None)
    assert np.array_equal(np.load(tmp_path / "a" / "centroids.npy"), np.load(tmp_path / "b" / "centroids.npy"))
    assert a["quality"]["pnmi"] > 0.99 and a["quality"]["purity"] == 1.0 and a["quality"]["used_units"] == 3
    # reusing the centroids assigns the same units
    c = quantize(feats, 3, tmp_path / "c", centroids_from=tmp_path / "a", labels=labels, log=lambda m: None)
    assert c["quality"]["pnmi"] == a["quality"]["pnmi"]
    for u in feats:
        assert np.array_equal(np.load(tmp_path / "a" / "units" / f"{u}.npy"), np.load(tmp_path / "c" / "units" / f"{u}.npy"))


def test_cli_quantize_with_labels_and_abx(tmp_path, capsys):
    feats, labels = clustered(seed=2)
    (tmp_path / "f").mkdir()
    for u, f in feats.items():
        np.save(tmp_path / "f" / f"{u}.npy", f)
    ali = tmp_path / "ali.txt"
    ali.write_text("".join(f"{u} " + " ".join(map(str, l.tolist())) + "\n" for u, l in labels.items()))
    from cpc_speech.evaluation.items import items_from_alignments

    item = tmp_path / "a.item"
    item.write_text(items_from_alignments(labels, {u: f"s{i % 3}" for i, u in enumerate(labels)}, {0: "a", 1: "b", 2: "c"}))
    res = tmp_path / "res" / "units_model.json"
    assert main(["quantize", "--features", str(tmp_path / "f"), "--units", "3", "--out", str(tmp_path / "u"),
                 "--alignments", str(ali), "--item", str(item), "--results", str(res)]) == 0
    data = json.loads(res.read_text())
    assert data == json.loads((tmp_path / "u" / "quality.json").read_text())
    assert data["quality"]["pnmi"] > 0.99 and data["abx"]["within"] == 0.0 and data["abx"]["across"] == 0.0
    assert "PNMI" in capsys.readouterr().out
    assert main(["quantize", "--features", str(tmp_path / "f"), "--units", "1", "--out", str(tmp_path / "v")]) == 2
    assert "--units must be at least 2" in capsys.readouterr().err
