"""Tasks, splits and verifiers."""

import json

import pytest

from npo.errors import UserError
from npo.tasks import build_task
from npo.tasks.prompting import extract_answer


@pytest.mark.parametrize("spec,options", [
    ("arith", {}),
    ("arith", {"terms": 3, "digits": 1, "ops": "+-*"}),
    ("rg:chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("rg:basic_arithmetic", {}),
])
def test_train_and_eval_never_share_a_prompt(spec, options):
    task = build_task(spec, options)
    train, evals = task.splits(3000, 200, seed=7)
    assert train and evals
    assert not {it.question for it in train} & {it.question for it in evals}
    # deterministic for a seed
    train2, evals2 = task.splits(3000, 200, seed=7)
    assert [i.question for i in evals] == [i.question for i in evals2]
    assert [i.question for i in train[:50]] == [i.question for i in train2[:50]]


def test_arith_items_and_verifier():
    task = build_task("arith", {"terms": 3, "digits": 2, "ops": "+-*"})
    train, evals = task.splits(100, 300, seed=1)
    assert len(train) == 100 and len(evals) == 300 and len({i.question for i in evals}) == 300
    for it in evals[:50]:
        assert it.question.endswith("=")
        assert task.score(it.answer, it) == 1.0
        assert task.score(str(int(it.answer) + 1), it) == 0.0
    # the reference is what Python makes of the expression (`*` first), which arith computes without eval
    longer = build_task("arith", {"terms": 6, "digits": 3, "ops": "+-*"}).splits(2000, 500, seed=2)
    for it in [*train, *evals, *longer[0], *longer[1]]:
        assert eval(it.question[:-1]) == int(it.answer), it.question


def test_reasoning_gym_scores_its_own_answers():
    task = build_task("rg:chain_sum", {})
    _, evals = task.splits(10, 20, seed=3)
    assert all(task.score(it.answer, it) == 1.0 for it in evals)
    assert task.score("not a number", evals[0]) == 0.0


@pytest.mark.parametrize("spec", ["nope", "rg:not_a_dataset", "rg:", "jsonl:", "arith:x"])
def test_unknown_task(spec):
    with pytest.raises(UserError, match="task.spec"):
        build_task(spec, {})


def test_arith_options_validated():
    with pytest.raises(UserError, match="task.options.digits"):
        build_task("arith", {"digits": 0})
    with pytest.raises(UserError, match="task.options.colour"):
        build_task("arith", {"colour": 1})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 40)]


def test_jsonl_task_with_math_verify(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", ROWS + [{"question": "Half of one?", "answer": "\\frac{1}{2}"},
                                                  {"question": "GSM", "answer": "steps...\n#### 72"}])
    task = build_task(f"jsonl:{p}", {})
    train, evals = task.splits(1000, 5, seed=0)
    assert len(train) == len(ROWS) + 2 - 5
    half = next(it for it in task.items if it.question == "Half of one?")
    gsm = next(it for it in task.items if it.question == "GSM")
    assert task.score("so the answer is \\boxed{0.5}", half) == 1.0
    assert task.score("\\boxed{\\frac{2}{4}}", half) == 1.0
    assert task.score("\\boxed{3}", half) == 0.0
    assert task.score("... #### 72", gsm) == 1.0


def test_parquet_task(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": r["question"], "a": r["answer"]} for r in ROWS]), p)
    task = build_task(f"parquet:{p}", {}, question_key="q", answer_key="a")
    train, evals = task.splits(1000, 10, seed=0)
    assert len(evals) == 10 and len(train) == len(ROWS) - 10


def test_dataset_errors_name_file_and_row(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], {"question": "x"}])
    with pytest.raises(UserError, match=r"a.jsonl: row 2: missing column 'answer'"):
        build_task(f"jsonl:{p}", {})
    p = write_jsonl(tmp_path / "b.jsonl", [ROWS[0], ROWS[1], {"question": "x", "answer": "  "}])
    with pytest.raises(UserError, match=r"b.jsonl: row 3: empty answer"):
        build_task(f"jsonl:{p}", {})
    with pytest.raises(UserError, match="no such dataset file"):
        build_task(f"jsonl:{tmp_path / 'missing.jsonl'}", {})
    (tmp_path / "c.jsonl").write_text('{"question": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(UserError, match=r"c.jsonl: row 2: not valid JSON"):
        build_task(f"jsonl:{tmp_path / 'c.jsonl'}", {})


@pytest.mark.parametrize("text,style,expected", [
    (" 46", "plain", "46"),
    ("so \\boxed{\\frac{1}{2}} done", "chat", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{2}", "chat", "2"),
    ("Reasoning...\nAnswer: 72", "chat", "72"),
    ("line one\n 19 ", "chat", "19"),
])
def test_extract_answer(text, style, expected):
    assert extract_answer(text, style) == expected


def test_parquet_cells_that_are_not_text_are_refused_naming_row_and_column(tmp_path):
    """A bytes column would reach the verifier as "b'18'", which no completion matches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"question": ["1+1=", "2+2="], "answer": [b"2", b"4"]}), p)
    with pytest.raises(UserError, match=r"bytes.parquet: row 1: column 'answer': expected a string or a number, got "
                                        r"bytes b'2'"):
        build_task(f"parquet:{p}", {})


def test_a_reward_function_that_gave_nan_or_none_logs_null():
    """TRL logs a reward function's mean as NaN when it returned None or NaN for a whole batch: the
    metrics line keeps null there (JSON has no NaN) instead of crashing the step."""
    from npo.trl_seam.callbacks import metrics_record

    rec = metrics_record(3, {"rewards/mine/mean": float("nan"), "rewards/other/mean": None, "npo/gated_groups": 2,
                             "signal/entropy": float("inf")})
    assert rec == {"step": 3, "rewards/mine/mean": None, "rewards/other/mean": None, "npo/gated_groups": 2.0,
                   "signal/entropy": None}
