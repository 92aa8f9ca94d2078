"""The generator's package pieces that need no eSpeak NG: word lists (package data, strict reader)
and the one fresh-process worker protocol."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from cpc_speech.synth.inventory import all_languages
from cpc_speech.synth.text import make_sentence, parse_word_list, transcript_text, word_lists
from cpc_speech.synth.workers import WorkerError, encode, map_in_workers, receive, run_in_fresh_process, send

HEADER = "# cpc_speech synth word list, format 1: test\n"


def test_every_language_has_its_word_list_as_package_data():
    counts = {lang: tuple(len(w) for w in word_lists(lang)) for lang in all_languages()}
    # (function, content) words; the embedded lists had these many after removing duplicates
    assert counts == {"de": (51, 203), "en-us": (72, 281), "es": (54, 212), "fr": (56, 215), "it": (54, 209)}
    function, content = word_lists("en")  # alias of en-us
    assert function[:3] == ("the", "a", "an") and content[:2] == ("house", "garden") and content[-1] == "against"
    assert word_lists("de")[1][0] == "Haus"
    folder = Path(__file__).resolve().parents[1] / "cpc_speech" / "synth" / "words"
    assert sorted(p.stem for p in folder.glob("*.txt")) == sorted(all_languages())


def test_sentences_come_from_the_word_lists():
    function, content = word_lists("fr")
    sentence = make_sentence(np.random.default_rng(0), "fr", 12)
    words = [w.strip(",.").lower() for w in sentence.split()]
    assert sentence[0].isupper() and sentence.endswith(".") and len(words) >= 12
    assert set(words) <= {w.lower() for w in function + content}
    assert make_sentence(np.random.default_rng(0), "fr", 12) == sentence
    assert transcript_text("Le chat, dans la maison.") == "LE CHAT DANS LA MAISON"


def test_word_list_reader_round_trip_and_comments():
    text = HEADER + "# a comment\n[function]\nthe\n\n a \n[content]\n# another\nhouse\ngarden\n"
    assert parse_word_list(text, "x.txt") == (("the", "a"), ("house", "garden"))


@pytest.mark.parametrize("text, message", [
    ("[function]\nthe\n[content]\nhouse\n", "x.txt: not a word list"),
    ("# cpc_speech synth word list, format 2\n[function]\nthe\n[content]\nhouse\n", "x.txt: word list format 2"),
    (HEADER + "the\n[function]\na\n[content]\nhouse\n", "x.txt: line 2: expected one word per line under a section"),
    (HEADER + "[function]\nthe cat\n[content]\nhouse\n", "x.txt: line 3: expected one word per line"),
    (HEADER + "[function]\nthe\n[content]\nhouse\nhouse\n", "x.txt: line 6: 'house' is already listed on line 5"),
    (HEADER + "[function]\nthe\n[verbs]\nrun\n", "x.txt: line 4: expected [function] then [content], got '[verbs]'"),
    (HEADER + "[function]\nthe\n[function]\na\n", "x.txt: line 4: expected [function] then [content]"),
    (HEADER + "[function]\nthe\n[content]\n", "x.txt: no content words"),
])
def test_word_list_reader_refuses_what_does_not_fit(text, message):
    with pytest.raises(ValueError) as info:
        parse_word_list(text, "x.txt")
    assert str(info.value).startswith(message)


def test_messages_round_trip_and_a_cut_message_is_eof():
    buf = io.BytesIO()
    send(buf, ("ok", [1, "two"]))
    send(buf, {"x": np.arange(3)})
    buf.seek(0)
    assert receive(buf) == ("ok", [1, "two"])
    assert receive(buf)["x"].tolist() == [0, 1, 2]
    with pytest.raises(EOFError):
        receive(buf)
    data = encode("hello")
    assert int.from_bytes(data[:8], "little") == len(data) - 8
    with pytest.raises(EOFError):
        receive(io.BytesIO(data[:-1]))


needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self"), reason="needs fork and /proc")


@needs_fork
def test_run_in_fresh_process_runs_in_a_child_and_reports_failures():
    child = run_in_fresh_process(os.path.realpath, "/proc/self")
    assert child.startswith("/proc/") and child != f"/proc/{os.getpid()}"
    assert run_in_fresh_process(divmod, 17, 5) == (3, 2)
    with pytest.raises(WorkerError, match="ZeroDivisionError"):
        run_in_fresh_process(divmod, 1, 0)
    with pytest.raises(WorkerError, match="died without a result"):
        run_in_fresh_process(os._exit, 3)


@needs_fork
def test_map_in_workers_keeps_item_order_and_runs_in_other_processes(capfd):
    assert map_in_workers(divmod, [7, 8, 9, 10, 11], 2, extra_args=(4,)) == [(1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]
    pids = set(map_in_workers(os.path.realpath, ["/proc/self"] * 4, 2))
    assert 1 <= len(pids) <= 2 and f"/proc/{os.getpid()}" not in pids
    # a stray print in a worker goes to stderr, not into the protocol
    assert map_in_workers(print, ["stray output"], 1) == [None]
    assert "stray output" in capfd.readouterr().err


@needs_fork
def test_map_in_workers_names_the_item_that_failed():
    with pytest.raises(WorkerError, match=r"^dividing 1 failed: ZeroDivisionError"):
        map_in_workers(divmod, [1, 2, 3], 1, extra_args=(0,), describe=lambda x: f"dividing {x}")
    with pytest.raises(WorkerError, match=r"^a worker process died while exiting with 5"):
        map_in_workers(os._exit, [5], 1, describe=lambda x: f"exiting with {x}")
