"""ABX: item files, the batched DTW, the scorer (hand-computed cases, a brute-force twin of the
reference algorithm, invariances) and ``cpc-speech abx``."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_speech.cli import main
from cpc_speech.evaluation.abx import AbxConfig, AbxError, abx_error, unit_norm_with_sentinel
from cpc_speech.evaluation.dtw import dtw_normalised, dtw_reference
from cpc_speech.evaluation.items import (
    HEADER,
    ItemError,
    format_item_file,
    frame_ranges,
    items_from_alignments,
    read_item_file,
)


def write_items(path: Path, rows) -> Path:
    """rows: (file, onset, offset, phone, prev, next, speaker)."""
    path.write_text(format_item_file(*zip(*rows)))
    return path


def at_angle(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), math.sin(r)]], dtype=np.float32)


# ------------------------------------------------------------------------------------ DTW


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (4, 1), (3, 5), (6, 6), (9, 4)])
def test_dtw_matches_the_plain_algorithm_exactly(n, m):
    rng = np.random.default_rng(n * 10 + m)
    smooth = rng.random((40, n, m)).astype(np.float32)
    ties = (rng.integers(0, 3, (40, n, m)) * 0.5).astype(np.float32)  # many equal costs: the tie rule matters
    for d in (smooth, ties):
        got = dtw_normalised(torch.from_numpy(d)).numpy()
        want = np.array([dtw_reference(x) for x in d], dtype=np.float32)
        assert np.array_equal(got, want)


def test_dtw_known_values():
    # Libri-light's own unit case: Euclidean frame distances, expected sqrt(2)/2, 3/4, (2 + sqrt(2))/3
    xs = [np.array([[0, 1], [0, 0], [1, 1]]), np.array([[0, 2], [0, 1], [1, 1], [-1, 0]]), np.array([[0, 0], [0, 1]])]
    y = np.array([[0, 1], [1, 2], [0, 0]])
    want = [math.sqrt(2) / 2, 3 / 4, (2 + math.sqrt(2)) / 3]
    for x, w in zip(xs, want):
        d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)).astype(np.float32)
        assert dtw_normalised(torch.from_numpy(d)[None])[0].item() == pytest.approx(w, abs=1e-6)
    # a 2 x 2 case by hand: path (0,0) -> (1,1), cost 0 + 0 over 2 cells
    assert dtw_normalised(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))[0].item() == 0.0
    # 1 x 3: every cell is on the path: (1 + 2 + 3) / 3
    assert dtw_normalised(torch.tensor([[[1.0, 2.0, 3.0]]]))[0].item() == 2.0


def test_kl_distance():
    from cpc_speech.evaluation.dtw import kl_distance, kl_symmetric_distance

    p = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]])
    q = torch.tensor([[[0.5, 0.5]]])
    want = sum(a * math.log((a + 1e-6) / (0.5 + 1e-6)) for a in (0.9, 0.1))
    np.testing.assert_allclose(kl_distance(p, q)[0, :, 0].numpy(), [0.0, want], atol=1e-6)
    sym = kl_symmetric_distance(p, q)[0, 1, 0].item()
    back = sum(0.5 * math.log((0.5 + 1e-6) / (a + 1e-6)) for a in (0.9, 0.1))
    assert sym == pytest.approx(0.5 * (want + back), abs=1e-6)


def test_zero_frames_follow_the_reference_convention():
    x = unit_norm_with_sentinel(np.array([[3.0, 4.0], [0.0, 0.0]]))
    cos = np.clip(x @ x.T, -1, 1)
    assert cos[0, 0] == pytest.approx(1.0) and cos[1, 1] == 1.0 and cos[0, 1] == -1.0
    np.testing.assert_allclose(x[0, :2], [0.6, 0.8])


# ------------------------------------------------------------------------------------ item files


def test_item_file_round_trip_and_errors(tmp_path):
    rows = [("u1", 0.1, 0.15, "AH", "SIL", "T", "spk1"), ("u2", 0.32, 0.41, "T", "AH", "S", "spk2")]
    items = read_item_file(write_items(tmp_path / "a.item", rows))
    assert (tmp_path / "a.item").read_text().splitlines()[0] == HEADER
    assert items.files == ["u1", "u2"] and items.phones == ["AH", "T"] and items.speakers == ["spk1", "spk2"]
    assert items.contexts == ["SIL+T", "AH+S"] and items.lines == [2, 3]
    np.testing.assert_array_equal(items.onsets, [0.1, 0.32])
    bad = tmp_path / "bad.item"
    bad.write_text(HEADER + "\nu1 0.1 0.2 AH SIL T\n")
    with pytest.raises(ItemError, match=r"bad.item: line 2: expected 7 fields"):
        read_item_file(bad)
    bad.write_text(HEADER + "\nu1 0.3 0.2 AH SIL T s\n")
    with pytest.raises(ItemError, match=r"line 2: need 0 <= onset < offset"):
        read_item_file(bad)


def test_frame_rules():
    on, off = np.array([0.10, 0.32, 0.0]), np.array([0.15, 0.41, 0.014])
    centre = frame_ranges(on, off, np.array([100, 100, 100]), "centre")
    ref = frame_ranges(on, off, np.array([100, 100, 100]), "libri-light")
    assert centre.tolist() == [[10, 15], [32, 41], [0, 1]]
    assert ref.tolist() == [[10, 14], [32, 40], [0, 0]]  # the reference drops the last frame
    assert frame_ranges(on, off, np.array([12, 12, 12])).tolist()[:2] == [[10, 12], [32, 12]]


def test_items_from_alignments():
    labels = {"u1": np.array([0, 0, 1, 1, 1, 2, 0, 0]), "u2": np.array([3, 3])}
    text = items_from_alignments(labels, {"u1": "s1", "u2": "s2"}, {0: "SIL", 1: "AH", 2: "T", 3: "S"})
    assert text.splitlines() == [HEADER, "u1 0.0200 0.0500 AH SIL T s1", "u1 0.0500 0.0600 T AH SIL s1"]


# ------------------------------------------------------------------------------------ hand cases


def test_three_items_within(tmp_path):
    # one speaker, one context; phone a: A1 (0 deg), A2 (90 deg); phone b: B (-11.31 deg)
    items = read_item_file(write_items(tmp_path / "w.item", [
        ("A1", 0.0, 0.01, "a", "x", "y", "s"), ("A2", 0.0, 0.01, "a", "x", "y", "s"), ("B", 0.0, 0.01, "b", "x", "y", "s")]))
    feats = {"A1": at_angle(0), "A2": at_angle(90), "B": np.array([[1.0, -0.2]], np.float32)}
    res = abx_error(items, feats, AbxConfig(modes=("within",), frame_rule="centre"))
    with pytest.raises(AbxError, match="no item has a frame"):  # the reference's cut leaves no frame of a 10 ms item
        abx_error(items, feats, AbxConfig(modes=("within",)))
    # x = A1: d(A1, A2) = 0.5 > d(A1, B) = 0.063: error; x = A2: 0.5 < d(A2, B) = 0.563: right.
    # The cell (b, a) needs two b items: skipped. Error = 1/2.
    assert res["within"] == 0.5
    assert res["details"]["within"]["cells"] == 1


def test_four_items_across(tmp_path):
    # speaker 1: a at 0 deg, b at 90; speaker 2: a at 60, b at 80 (1-frame items, distance = angle / 180)
    items = read_item_file(write_items(tmp_path / "x.item", [
        ("u1", 0.00, 0.01, "a", "p", "n", "s1"), ("u1", 0.01, 0.02, "b", "p", "n", "s1"),
        ("u2", 0.00, 0.01, "a", "p", "n", "s2"), ("u2", 0.01, 0.02, "b", "p", "n", "s2")]))
    feats = {"u1": np.concatenate([at_angle(0), at_angle(90)]), "u2": np.concatenate([at_angle(60), at_angle(80)])}
    res = abx_error(items, feats, AbxConfig(frame_rule="centre"))
    # s1 (a,b) X=60: 60 vs 30 -> error; s1 (b,a) X=80: 10 vs 80 ok; s2 (a,b) X=0: 60 vs 80 ok;
    # s2 (b,a) X=90: 10 vs 30 ok. Means: (a,b) over speakers 0.5, (b,a) 0 -> 0.25.
    assert res["across"] == pytest.approx(0.25)
    assert res["within"] is None  # no group with two items


def test_ties_count_half_and_perfect_features_score_zero(tmp_path):
    rows, feats = [], {}
    for s in ("s1", "s2"):
        for k in range(3):
            for ph in ("a", "b", "c"):
                uid = f"{s}-{ph}{k}"
                rows.append((uid, 0.0, 0.03, ph, "p", "n", s))
                feats[uid] = np.tile(np.eye(3, dtype=np.float32)["abc".index(ph)], (3, 1))
    items = read_item_file(write_items(tmp_path / "t.item", rows))
    perfect = abx_error(items, feats)
    assert perfect["within"] == 0.0 and perfect["across"] == 0.0
    same = {u: np.ones((3, 4), np.float32) for u in feats}
    res = abx_error(items, same)
    assert res["within"] == 0.5 and res["across"] == 0.5


# ------------------------------------------------------------------------------------ brute force


def brute_force_abx(items, feats, rule="centre"):
    """The reference scorer's loops without sampling, one triplet at a time."""
    ranges = frame_ranges(items.onsets, items.offsets, np.array([feats[f].shape[0] for f in items.files]), rule)
    data = []
    for i in range(len(items)):
        s, e = ranges[i]
        if e > s:
            data.append((items.contexts[i], items.speakers[i], items.phones[i], unit_norm_with_sentinel(feats[items.files[i]][s:e])))

    def dist(u, v):
        return dtw_reference(np.arccos(np.clip(u @ v.T, -1, 1)) / np.pi)

    def group(c, s, p):
        return [d[3] for d in data if d[:3] == (c, s, p)]

    keys = sorted({d[:2] for d in data})
    scores = {"within": {}, "across": {}}
    for c, s in keys:
        phones = sorted({d[2] for d in data if d[:2] == (c, s)})
        for pa in phones:
            for pb in phones:
                if pa == pb:
                    continue
                A, B = group(c, s, pa), group(c, s, pb)
                if len(A) > 1:
                    ok = n = 0
                    for i, x in enumerate(A):
                        for j, a in enumerate(A):
                            if i == j:
                                continue
                            dxa = dist(x, a) if i < j else dist(a, x)
                            for b in B:
                                dxb = dist(x, b)
                                ok += 1.0 if dxa < dxb else 0.5 if dxa == dxb else 0.0
                                n += 1
                    scores["within"].setdefault((s, pa, pb), []).append(1 - ok / n)
                for sx in sorted({d[1] for d in data if d[0] == c and d[2] == pa and d[1] != s}):
                    ok = n = 0
                    for x in group(c, sx, pa):
                        for a in A:
                            for b in B:
                                dxa, dxb = dist(x, a), dist(x, b)
                                ok += 1.0 if dxa < dxb else 0.5 if dxa == dxb else 0.0
                                n += 1
                    scores["across"].setdefault((s, pa, pb), []).append(1 - ok / n)
    out = {}
    for mode, cells in scores.items():
        by_pair = {}
        for (s, pa, pb), errs in cells.items():
            by_pair.setdefault((pa, pb), []).append(np.mean(errs))
        out[mode] = float(np.mean([np.mean(v) for v in by_pair.values()]))
    return out


def random_corpus(tmp_path, seed, n_files=6, dim=3):
    rng = random.Random(seed)
    rows, feats = [], {}
    for f in range(n_files):
        uid, spk = f"f{f}", f"s{f % 3}"
        t = 0
        for _ in range(rng.randint(8, 14)):
            length = rng.randint(1, 5)
            rows.append((uid, t / 100, (t + length) / 100, rng.choice("abc"), rng.choice("xy"), rng.choice("xy"), spk))
            t += length
        feats[uid] = np.random.default_rng(seed * 100 + f).standard_normal((t, dim)).astype(np.float32)
    rng.shuffle(rows)
    return read_item_file(write_items(tmp_path / f"r{seed}.item", rows)), feats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_without_sampling(tmp_path, seed):
    items, feats = random_corpus(tmp_path, seed)
    for rule in ("centre", "libri-light"):
        got = abx_error(items, feats, AbxConfig(max_size_group=None, max_x_across=None, frame_rule=rule))
        want = brute_force_abx(items, feats, rule)
        assert got["within"] == pytest.approx(want["within"], abs=1e-12)
        assert got["across"] == pytest.approx(want["across"], abs=1e-12)
        assert 0.1 < got["across"] < 0.9  # random features: near chance, not degenerate


def test_invariances(tmp_path):
    items, feats = random_corpus(tmp_path, 5)
    cfg = AbxConfig(max_size_group=None, max_x_across=None)
    base = abx_error(items, feats, cfg)
    # scaling every frame by a power of two changes no rounding: identical
    scaled = abx_error(items, {u: f * 8.0 for u, f in feats.items()}, cfg)
    assert (scaled["within"], scaled["across"]) == (base["within"], base["across"])
    # a rotation of the feature space keeps every angle
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    rotated = abx_error(items, {u: (f @ q).astype(np.float32) for u, f in feats.items()}, cfg)
    assert rotated["within"] == pytest.approx(base["within"], abs=1e-9)
    assert rotated["across"] == pytest.approx(base["across"], abs=1e-9)
    # renaming phones, contexts and speakers changes nothing
    lines = (tmp_path / "r5.item").read_text().splitlines()
    ren = [lines[0]] + [" ".join(p[:3] + [p[3].upper(), "c" + p[4], "c" + p[5], "spk" + p[6]]) for p in (l.split() for l in lines[1:])]
    (tmp_path / "ren.item").write_text("\n".join(ren) + "\n")
    renamed = abx_error(read_item_file(tmp_path / "ren.item"), feats, cfg)
    assert renamed["within"] == pytest.approx(base["within"], abs=1e-12)
    assert renamed["across"] == pytest.approx(base["across"], abs=1e-12)


def test_sampling_is_seeded(tmp_path):
    items, feats = random_corpus(tmp_path, 7, n_files=9)
    small = AbxConfig(max_size_group=2, max_x_across=1, seed=3)
    a, b = abx_error(items, feats, small), abx_error(items, feats, small)
    assert (a["within"], a["across"]) == (b["within"], b["across"])
    other = abx_error(items, feats, AbxConfig(max_size_group=2, max_x_across=1, seed=4))
    assert (other["within"], other["across"]) != (a["within"], a["across"])


def test_bad_inputs(tmp_path):
    items, feats = random_corpus(tmp_path, 1)
    with pytest.raises(AbxError, match="none of its 6 file"):
        abx_error(items, {"other": feats["f0"]})
    with pytest.raises(AbxError, match="dimension 4"):
        abx_error(items, {**feats, "f1": np.zeros((200, 4), np.float32)})
    with pytest.raises(AbxError, match="distance must be one of"):
        abx_error(items, feats, AbxConfig(distance="euclid"))


# ------------------------------------------------------------------------------------ command line


def test_cli_nested_folder(tmp_path, capsys):
    items, feats = random_corpus(tmp_path, 2)
    for i, (uid, f) in enumerate(feats.items()):
        d = tmp_path / "feats" / f"spk{i % 2}" / "chapter"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{uid}.npy", f)
    out = tmp_path / "r.json"
    assert main(["abx", "--features", str(tmp_path / "feats"), "--item", str(items.path), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    want = abx_error(items, feats, AbxConfig())
    assert res["within"] == want["within"] and res["across"] == want["across"]
    assert res["results"]["features"]["items"]["used"] == want["items"]["used"]
    assert "within" in capsys.readouterr().out
    assert main(["abx", "--features", str(tmp_path / "feats"), "--item", str(items.path), "--out", str(out),
                 "--mode", "across", "--max-size-group", "none"]) == 0
    assert set(json.loads(out.read_text())) >= {"across"} and "within" not in json.loads(out.read_text())
    assert main(["abx", "--features", str(tmp_path / "nope"), "--item", str(items.path), "--out", str(out)]) == 2
    assert "feature folder not found" in capsys.readouterr().err
