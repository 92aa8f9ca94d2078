"""The label formats (cpc_speech.corpora.labels): one acceptance rule per format, exact round trips,
errors naming the file and line, and the same file accepted alike by the probes and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from cpc_speech.corpora.labels import (
    IdList,
    LabelFileError,
    PhoneSet,
    collapse_runs,
    read_frame_labels,
    read_id_list,
    read_phone_transcripts,
    write_frame_labels,
    write_id_list,
)
from cpc_speech.finetune.targets import load_targets
from cpc_speech.probes.splits import as_split, check_disjoint

# ------------------------------------------------------------------------------------ phone sets


def test_phone_set_either_order_gaps_and_round_trip(tmp_path):
    p = tmp_path / "phones.txt"
    p.write_text("# a comment\n0 sil\n\n 2 b\n1 a\n7 zh\n")
    ps = PhoneSet.read(p)
    assert ps.ids == (0, 1, 2, 7) and ps.names == ("sil", "a", "b", "zh") and ps.source == str(p)
    assert ps.name_of() == {0: "sil", 1: "a", 2: "b", 7: "zh"} and ps.id_of()["zh"] == 7
    assert ps.names_for(9) == ["sil", "a", "b", "3", "4", "5", "6", "zh", "8"]
    kaldi = tmp_path / "kaldi.txt"
    kaldi.write_text("sil 0\na 1\nb 2\nzh 7\n")  # Kaldi's <name> <id> order: the same set
    assert PhoneSet.read(kaldi).name_of() == ps.name_of()
    out = ps.write(tmp_path / "sub" / "written.txt")
    assert out.read_text() == "0 sil\n1 a\n2 b\n7 zh\n"
    assert PhoneSet.read(out).name_of() == ps.name_of()
    with pytest.raises(LabelFileError, match=r"phone ids must be 0\.\.3 without gaps \(id 3 is missing\)"):
        ps.indexed_names()
    assert PhoneSet.from_names(["SIL", "AA"]).indexed_names() == ["SIL", "AA"]


READ_PHONES, READ_FRAMES = PhoneSet.read, read_frame_labels


@pytest.mark.parametrize("reader, text, message", [
    (READ_PHONES, "0 sil\na 1\n", r"line 2: expected '<id> <name>', got 'a 1'"),
    (READ_PHONES, "sil 0\n1 a\n", r"line 2: expected '<name> <id>' \(the order of its first line\), got '1 a'"),
    (READ_PHONES, "0 sil\n1 a b\n", r"line 2: expected '<id> <name>', got '1 a b'"),
    (READ_PHONES, "0 sil\n-1 a\n", r"line 2: phone id must be >= 0, got -1"),
    (READ_PHONES, "0 sil\n1 a\n1 b\n", r"line 3: phone id 1 already defined on line 2"),
    (READ_PHONES, "0 sil\n1 a\n2 a\n", r"line 3: phone name 'a' already defined on line 2"),
    (READ_PHONES, "# only a comment\n\n", r"phone set is empty"),
    (READ_FRAMES, "a 0 1\nb 1 -2\n", r"line 2: negative label -2 in utterance 'b'"),
    (READ_FRAMES, "a 0 1\nb\n", r"line 2: utterance 'b' has no labels"),
    (READ_FRAMES, "a 0 1.5\n", r"line 1: label '1.5' of utterance 'a' is not an integer"),
    (READ_FRAMES, "a 0\n\na 1\n", r"line 3: duplicate utterance 'a' \(first on line 1\)"),
    (READ_FRAMES, "# nothing\n", r"alignment file has no utterances"),
])
def test_errors_name_file_and_line(tmp_path, reader, text, message):
    p = tmp_path / "labels.txt"
    p.write_text(text)
    with pytest.raises(LabelFileError, match=r"labels\.txt: " + message):
        reader(p)


def test_missing_and_binary_files_are_one_line_errors(tmp_path):
    with pytest.raises(LabelFileError, match=r"phone set not found: .*nope\.txt"):
        PhoneSet.read(tmp_path / "nope.txt")
    with pytest.raises(LabelFileError, match=r"train split file is a folder, not a file"):
        read_id_list(tmp_path, "train split")
    (tmp_path / "bin.txt").write_bytes(b"u1 0 1\n\xff\xfe 2\n")
    with pytest.raises(LabelFileError, match=r"bin\.txt: alignment file is not UTF-8 text"):
        read_frame_labels(tmp_path / "bin.txt")


def test_probe_and_finetune_accept_the_same_phone_file(tmp_path):
    """A Kaldi-order file the probe accepted used to be refused by fine-tuning: one rule now."""
    (tmp_path / "phones.txt").write_text("sil 0\na 1\nb 2\n")
    (tmp_path / "t.txt").write_text("u1 sil a b b sil\nu2 b 1\nu3\n")
    targets, classes = load_targets(tmp_path / "phones.txt", tmp_path / "t.txt")
    assert classes.class_names == ["a", "b"] and classes.blank == 2 and classes.num_classes == 3
    assert {u: t.labels for u, t in targets.items()} == {"u1": (0, 1, 1), "u2": (1, 0), "u3": ()}
    assert targets["u2"].where == f"{tmp_path / 't.txt'}: line 2"
    (tmp_path / "only_sil.txt").write_text("0 sil\n")
    with pytest.raises(LabelFileError, match=r"only_sil\.txt: phone set holds only silence"):
        load_targets(tmp_path / "only_sil.txt", tmp_path / "t.txt")
    with pytest.raises(LabelFileError, match=r"t\.txt: line 1: phone 'sil' is a name; pass the phone set"):
        load_targets(None, tmp_path / "t.txt")


# ---------------------------------------------------------------------------------- frame labels


def test_frame_labels_round_trip_and_phone_sequences(tmp_path):
    labels = {"b": [0, 0, 3, 3, 3, 0, 3, 5, 5, 0], "a": [1, 1, 1], "c": [0, 0]}
    path = write_frame_labels(tmp_path / "ali.txt", labels)
    assert path.read_text() == "b 0 0 3 3 3 0 3 5 5 0\na 1 1 1\nc 0 0\n"
    ali = read_frame_labels(path)
    assert {u: v.tolist() for u, v in ali.labels.items()} == labels and ali.lines == {"b": 1, "a": 2, "c": 3}
    assert ali.labels["a"].dtype == np.int64 and ali.num_classes == 6
    seqs = ali.phone_sequences()
    assert seqs["b"].phones == (3, 3, 5) and seqs["a"].phones == (1,) and seqs["c"].phones == ()
    assert seqs["a"].where == f"{path}: line 2"
    # the CTC targets of the same file: phone set 0..5 named by the ids, silence removed
    targets, classes = load_targets(alignments=path)
    cls = classes.class_of_id()
    assert classes.class_names == ["1", "2", "3", "4", "5"] and targets["b"].labels == (cls[3], cls[3], cls[5])


def test_collapse_runs():
    assert collapse_runs([3, 3, 0, 3, 5, 5, 0], drop=0) == [3, 3, 5]
    assert collapse_runs([2, 2, 1, 1, 2]) == [2, 1, 2]  # nothing dropped
    assert collapse_runs(np.array([4, 4, 4]), drop=4) == []
    assert all(type(v) is int for v in collapse_runs(np.array([1, 2], dtype=np.int64)))


# ----------------------------------------------------------------------------- phone transcripts


def test_phone_transcripts_keep_silence_and_name_unknown_phones(tmp_path):
    ps = PhoneSet.from_mapping({0: "sil", 1: "a", 5: "c"}, source="inv")
    (tmp_path / "t.txt").write_text("u1 sil a 5 c\n#\nu2 1\n")
    got = read_phone_transcripts(tmp_path / "t.txt", ps)
    assert got["u1"].phones == (0, 1, 5, 5) and got["u2"].phones == (1,)
    (tmp_path / "bad.txt").write_text("u1 a\nu2 a 2\n")  # 2 is an integer but not in the set
    with pytest.raises(LabelFileError, match=r"bad\.txt: line 2: utterance 'u2': unknown phone '2' \(not in the phone set inv, which has 3"):
        read_phone_transcripts(tmp_path / "bad.txt", ps)


# -------------------------------------------------------------------------------------- id lists


def test_id_lists_round_trip_and_duplicates(tmp_path):
    path = write_id_list(tmp_path / "ids" / "train_split.txt", ["u3", "u1", "u2"])
    assert path.read_text() == "u3\nu1\nu2\n"
    ids = read_id_list(path)
    assert ids.ids == ["u3", "u1", "u2"] and list(ids) == ids.ids and "u1" in ids and len(ids) == 3
    assert ids.entries() == [("u3", 1), ("u1", 2), ("u2", 3)]
    path.write_text("u1 extra fields are ignored\n  # indented comment\n\nu2\nu1\n")
    with pytest.raises(LabelFileError, match=r"train_split\.txt: line 5: duplicate id 'u1' \(first on line 1\)"):
        read_id_list(path)
    with pytest.raises(LabelFileError, match=r"<test split>: line 3: duplicate id 'a'"):
        IdList.from_ids(["a", "b", "a"], "test split")
    with pytest.raises(LabelFileError, match="test split is empty"):
        as_split([], "test split")


def test_split_overlap_names_the_test_line(tmp_path):
    (tmp_path / "train.txt").write_text("a\nb\n")
    (tmp_path / "test.txt").write_text("c\nb\n")
    train, test = as_split(tmp_path / "train.txt", "train split"), as_split(tmp_path / "test.txt", "test split")
    with pytest.raises(LabelFileError, match=r"test\.txt: 1 test utterance\(s\) are also in the train split .*'b' \(line 2\)"):
        check_disjoint(train, test)
