"""progress_bar: silenced by progress=False, tqdm on a terminal or in a notebook, plain lines in logs."""

from __future__ import annotations

import io
import sys

import nbformat
import pytest
from _notebooks import execute
from tqdm.auto import tqdm as auto_tqdm

from interp.progress import PlainProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_false_writes_nothing_and_still_iterates():
    for stream in (io.StringIO(), _Terminal()):
        assert list(progress_bar(range(5), desc="quiet", progress=False, file=stream)) == [0, 1, 2, 3, 4]
        with progress_bar(total=3, desc="quiet", progress=False, file=stream) as bar:
            bar.update(3)
        assert stream.getvalue() == ""


def test_terminal_gets_tqdm_redrawn_in_place():
    stream = _Terminal()
    bar = progress_bar(range(5), desc="tty", unit="batch", file=stream)
    assert isinstance(bar, auto_tqdm)
    assert list(bar) == [0, 1, 2, 3, 4]
    out = stream.getvalue()
    assert "\r" in out and "tty: 100%" in out and "5/5" in out


def test_log_output_is_a_few_plain_lines():
    stream = io.StringIO()
    bar = progress_bar(range(1000), desc="sweep", unit="direction", file=stream)
    assert isinstance(bar, PlainProgress)
    assert sum(bar) == sum(range(1000))
    out = stream.getvalue()
    assert "\r" not in out and "\x1b" not in out, repr(out[:200])
    lines = out.splitlines()
    # the start, each tenth from 10% to 90%, the end
    assert len(lines) == 11, lines
    assert lines[0] == "sweep: 0/1000 direction (0%) [00:00]"
    assert lines[1].startswith("sweep: 100/1000 direction (10%) [")
    assert lines[-1].startswith("sweep: 1000/1000 direction (100%) done in ")


def test_manual_updates_descriptions_and_unknown_totals():
    stream = io.StringIO()
    with progress_bar(total=3, desc="report", unit="stage", file=stream) as bar:
        bar.set_description("report: loading the pair")
        bar.update(1)
        bar.set_postfix_str("smollm2")
        bar.update(2)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "report: 0/3 stage (0%) [00:00]"
    assert lines[1].startswith("report: loading the pair: 1/3 stage (33%) [")
    assert lines[-1].startswith("report: loading the pair: 3/3 stage (100%) done in ") and lines[-1].endswith(", smollm2")
    assert len(lines) == 3

    stream = io.StringIO()
    unknown = PlainProgress(iter("abc"), desc="stream", unit="token", file=stream, interval=0.0)
    assert "".join(unknown) == "abc"
    lines = stream.getvalue().splitlines()
    assert lines[0] == "stream: 0 token [00:00]" and lines[-1].startswith("stream: 3 token done in ")
    assert len(lines) == 5  # start, one per step (interval 0), end


def test_progress_none_shows_a_bar_only_for_more_than_one_step():
    stream = io.StringIO()
    assert list(progress_bar([7], desc="one", progress=None, file=stream)) == [7]
    assert stream.getvalue() == ""
    assert list(progress_bar([1, 2], desc="two", progress=None, file=stream)) == [1, 2]
    assert stream.getvalue().splitlines()[-1].startswith("two: 2/2 it (100%) done in ")


def test_bad_progress_argument_is_named():
    with pytest.raises(TypeError, match="progress: expected True, False or None, got 'yes'"):
        progress_bar(range(2), progress="yes")


def test_jupyter_kernel_gets_the_notebook_bar():
    """In a real kernel (nbclient), the bar is tqdm's notebook widget, displayed as a widget view."""

    code = ("from interp.progress import progress_bar\n"
            "bar = progress_bar(range(3), desc='kernel')\n"
            "import tqdm.notebook\n"
            "print(sum(bar), isinstance(bar, tqdm.notebook.tqdm_notebook))")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    execute(notebook, timeout=120)
    outputs = notebook.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert text.strip() == "3 True", outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert sys.modules.get("ipykernel.zmqshell") is None  # this process is not a kernel: tests above saw no notebook


# ------------------------------------------------------------- the analyses a user waits on
def _waits(model, pair):  # noqa: ANN001
    """Each long call with the ``progress`` argument it takes, and the label its plain lines start with."""
    from interp.activations.head_types import head_type_scores
    from interp.personas import persona_directions
    from interp.prompts import run_batched, tokenize
    from interp.subspace import CLAIMS, subspace_sweep

    batch = tokenize(model, ["one prompt", "and another", "and a third"])
    return {
        "persona activations": lambda progress: persona_directions(
            model, layer=1, n_components=1, roles=["pirate", "poet"], questions=["Who are you?"], batch_size=1,
            progress=progress),
        "subspace sweep": lambda progress: subspace_sweep(pair, k=2, layers=[10], claims=CLAIMS[:4],
                                                          include=["mlp_write"], progress=progress),
        "head types": lambda progress: head_type_scores(model, length=4, n_sequences=2, layers=[0], batch_size=1,
                                                     progress=progress),
        "capture": lambda progress: run_batched(model, batch, lambda chunk: [], batch_size=1, stop_at_layer=1,
                                                progress=progress, desc="capture"),
    }


@pytest.mark.parametrize("label", ["persona activations", "subspace sweep", "head types", "capture"])
def test_analyses_print_plain_lines_to_a_log_and_nothing_when_silenced(label, default_pair, capfd):
    call = _waits(default_pair.base, default_pair)[label]
    call(False)
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"progress=False still wrote {out!r} {err!r}"
    call(True)  # pytest's stderr is not a terminal: plain lines
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) >= 2 and all(line.startswith(label) for line in lines), err
    assert "\r" not in err and "\x1b" not in err
    assert "done in" in lines[-1]
